"""Running the middleware chains: the kernel's listeners that call the steps.

The chains are built at start-up by :class:`~workflowhttp.middleware.MiddlewareSet`; this
module runs them per request. :func:`kernel_listeners` gives the kernel its three runners
(global incoming steps in ``request``, the route's in ``auth``, every reached outgoing step in
``response``); :func:`middleware_step` tells the event stream which of them a listener is, so
a failure is named after the step that raised (``"Audit.incoming"``).

Imports the compiled middlewares' types and the responses; never the app or the kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Response as WerkzeugResponse

from ..errors import ConfigurationError
from ..responses import Response

if TYPE_CHECKING:
    from ..events import HttpEvent
    from . import CompiledMiddleware

__all__ = [
    "global_runner",
    "middleware_step",
    "run_incoming",
    "run_outgoing",
    "run_route_middlewares",
]


def global_runner(
    chain: tuple[CompiledMiddleware, ...],
) -> Callable[[HttpEvent], None]:
    """Return the ``request`` listener that runs the global, unfiltered ``chain``."""

    def run_global_middlewares(event: HttpEvent) -> None:
        if event._next is None:
            run_incoming(event, chain)

    run_global_middlewares.__qualname__ = "run_global_middlewares"
    return run_global_middlewares


def run_route_middlewares(event: HttpEvent) -> None:
    """The ``auth`` listener that runs the route's chain (filtered global, controller, route)."""
    if event._next is None:
        chain = event.route.middlewares  # type: ignore[union-attr]
        if chain:
            run_incoming(event, chain)


def run_incoming(event: HttpEvent, chain: tuple[CompiledMiddleware, ...]) -> None:
    """Run ``chain``'s incoming steps until one answers or schedules a state."""
    ran = event._middlewares
    if ran is None:
        ran = event._middlewares = []
    for middleware in chain:
        ran.append(middleware)
        incoming = middleware.incoming
        if incoming is None:
            continue
        try:
            result = incoming(event)
            if result is not None:
                event.send(_response(result, middleware, "incoming", "to answer"))
                return
        except Exception as ex:
            _record_failure(event, ex, middleware, "incoming")
            raise
        if event._next is not None:
            return


def run_outgoing(event: HttpEvent) -> None:
    """Run the outgoing steps of every middleware reached, in reverse order."""
    ran = event._middlewares
    if not ran:
        return
    for middleware in reversed(ran):
        outgoing = middleware.outgoing
        if outgoing is None:
            continue
        try:
            result = outgoing(event)
            if result is not None:
                event.response = _response(result, middleware, "outgoing", "to replace")
        except Exception as ex:
            _record_failure(event, ex, middleware, "outgoing")
            raise


def _record_failure(
    event: HttpEvent, error: Exception, middleware: CompiledMiddleware, step: str
) -> None:
    """Note on ``event`` which step raised ``error``: the walker sees the kernel listener that
    runs the chain raise, and the event stream names the step instead (``"Audit.incoming"``).

    The error is noted by its ``id()``, which keeps neither it nor its traceback alive; the
    stream looks it up while the walker's trace still holds it.
    """
    failures = event._middleware_failures
    if failures is None:
        failures = event._middleware_failures = []
    failures.append((id(error), f"{middleware.name}.{step}"))


def _response(
    result: Any, middleware: CompiledMiddleware, step: str, purpose: str
) -> Response | WerkzeugResponse:
    """Return ``result`` if it is a response; else raise the clear configuration error."""
    if not isinstance(result, (Response, WerkzeugResponse)):
        raise ConfigurationError(
            f"middleware {middleware.name}.{step} returned a {type(result).__qualname__}; "
            f"return a Response {purpose}, or None"
        )
    return result


_STEPS: dict[Any, str] = {
    global_runner(()).__code__: "incoming",  # every global runner shares this code object
    run_route_middlewares.__code__: "incoming",
    run_outgoing.__code__: "outgoing",
}


def middleware_step(listener: Any) -> str:
    """Return ``"incoming"`` or ``"outgoing"`` when ``listener`` runs middleware steps, else
    ``""`` (a kernel runner is known by its code, shared by the runners of every app)."""
    return _STEPS.get(getattr(listener, "__code__", None), "")
