"""The kernel's own listeners: the framework's default behaviour, state by state.

Each is an ordinary listener at priority 100 (rendering at -100, the route fallback at 1000), so
a user listener (default 0) runs first and can take over any step. A kernel listener only acts
when nothing is scheduled yet: once a listener has called ``send()`` or ``next()``, the kernel
leaves the request alone.

:func:`kernel_listeners` builds them when the app compiles its listener tables: the ones that
need the app's parts (its router, its middlewares, its debug flag) are closures over them, so
no listener reaches back into the app through ``event.app``. Errors are rendered by
:mod:`.error_responses`; the middleware runners live in :mod:`.middleware.runners`.

Imports the router's result types, the middleware runners, the error and response renderers;
never the app.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .error_responses import error_response, not_found_response
from .errors import AccessDenied, MethodNotAllowed, ParametersFailed
from .events import HttpEvent
from .middleware.runners import global_runner, run_outgoing, run_route_middlewares
from .responses import Response, copy_response, render
from .routing import Miss
from .workflow import (
    ACCESS_DENIED,
    AUTH,
    CONTROLLER,
    CONTROLLER_ERROR,
    METHOD_NOT_ALLOWED,
    PARAMETERS_FAILED,
    REQUEST,
    RESOLVE_PARAMETERS,
    RESPONSE,
    ROUTE,
    ROUTE_NOT_FOUND,
)

if TYPE_CHECKING:
    from .middleware import MiddlewareSet
    from .routing import Router

__all__ = ["KERNEL", "RENDER", "ROUTE_FALLBACK", "Kernel", "kernel_listeners"]

KERNEL = 100
RENDER = -100
ROUTE_FALLBACK = 1000

Kernel = tuple[tuple[str, int, Callable[[HttpEvent], None]], ...]


def kernel_listeners(router: Router, middlewares: MiddlewareSet, *, debug: bool) -> Kernel:
    """Return one app's kernel listeners as ``(state, priority, listener)``, in registration
    order.

    Equal priorities run in this order, so at 100 in ``request`` the global middlewares come
    before scheduling ``route``; likewise in ``auth`` the route's middlewares run just before
    ``resolve_parameters`` is scheduled. Without middlewares their runners are left out, and
    cost nothing. The request checks are not among them: they run before the walk (see
    :func:`workflowhttp.reading.request_checks`).
    """
    match = router.match
    request_path = router.request_path

    def match_route(event: HttpEvent) -> None:
        """Match the router; found → ``auth``; an unmatched ``OPTIONS`` is answered 204."""
        if event._next is not None:
            return
        environ = event.environ
        method = environ["REQUEST_METHOD"]
        found = match(method, request_path(environ))
        if isinstance(found, Miss):
            allowed = found.allowed
            event.allowed_methods = allowed
            if method == "OPTIONS" and allowed:
                event.send(Response(b"", 204, {"Allow": ", ".join(allowed)}, None))
            return
        event.route, event.path_params = found
        event._next = AUTH

    def send_controller_error(event: HttpEvent) -> None:
        """``HTTPError`` (ours or werkzeug's) → its status; anything else → a logged 500."""
        if event._next is None:
            event.send(error_response(event.error, event, debug=debug))

    # A kernel listener is named for its job in traces (not "kernel_listeners.<locals>...").
    match_route.__qualname__ = "match_route"
    send_controller_error.__qualname__ = "send_controller_error"

    with_middlewares = not middlewares.empty
    return (
        *(((REQUEST, KERNEL, global_runner(middlewares.unfiltered)),) if with_middlewares else ()),
        (REQUEST, KERNEL, schedule_route),
        (ROUTE, KERNEL, match_route),
        (ROUTE, ROUTE_FALLBACK, route_fallback),
        (ROUTE_NOT_FOUND, KERNEL, send_not_found),
        (METHOD_NOT_ALLOWED, KERNEL, send_method_not_allowed),
        *(((AUTH, KERNEL, run_route_middlewares),) if with_middlewares else ()),
        (AUTH, KERNEL, schedule_resolve_parameters),
        (RESOLVE_PARAMETERS, KERNEL, resolve_parameters),
        (CONTROLLER, KERNEL, call_controller),
        (ACCESS_DENIED, KERNEL, send_access_denied),
        (PARAMETERS_FAILED, KERNEL, send_parameters_failed),
        (CONTROLLER_ERROR, KERNEL, send_controller_error),
        (RESPONSE, RENDER, render_result),
        *(((RESPONSE, KERNEL, run_outgoing),) if with_middlewares else ()),
    )


def schedule_route(event: HttpEvent) -> None:
    if event._next is None:
        event._next = ROUTE


def route_fallback(event: HttpEvent) -> None:
    """Nothing matched and nothing scheduled: 405 when the path exists, else 404."""
    if event._next is None:
        event._next = METHOD_NOT_ALLOWED if event.allowed_methods else ROUTE_NOT_FOUND


def send_not_found(event: HttpEvent) -> None:
    if event._next is None:
        event.send(not_found_response())


def send_method_not_allowed(event: HttpEvent) -> None:
    if event._next is None:
        allow = ", ".join(event.allowed_methods)
        event.send(error_response(MethodNotAllowed(headers={"Allow": allow}), event))


def schedule_resolve_parameters(event: HttpEvent) -> None:
    if event._next is None:
        event._next = RESOLVE_PARAMETERS


def resolve_parameters(event: HttpEvent) -> None:
    """Resolve the controller's arguments by the route's plan; failure → ``parameters_failed``."""
    if event._next is not None:
        return
    plan = event.route.plan  # type: ignore[union-attr]
    if plan.resolvers:
        try:
            event.parameters = plan.resolve(event)
        except ParametersFailed as ex:
            event.error = ex
            event._next = PARAMETERS_FAILED
            return
    else:
        event.parameters = {}
    event._next = CONTROLLER


def call_controller(event: HttpEvent) -> None:
    """Call the controller; its return value becomes ``event.result``."""
    if event._next is not None:
        return
    event.result = event.route.invoke(event)  # type: ignore[union-attr]
    if event._next is None:  # the controller may have scheduled something itself
        event._next = RESPONSE


def send_access_denied(event: HttpEvent) -> None:
    """Answer the ``AccessDenied`` that brought the request here (``AccessDenied()`` when a
    listener scheduled ``access_denied`` itself)."""
    if event._next is None:
        error = event.error if isinstance(event.error, AccessDenied) else AccessDenied()
        event.send(error_response(error, event))


def send_parameters_failed(event: HttpEvent) -> None:
    """Answer the ``ParametersFailed`` that brought the request here (an empty one when a
    listener scheduled ``parameters_failed`` itself)."""
    if event._next is None:
        error = event.error
        if not isinstance(error, ParametersFailed):
            error = ParametersFailed([])
        event.send(error_response(error, event))


def render_result(event: HttpEvent) -> None:
    """Render ``event.result`` into ``event.response`` unless a listener already set one.

    When the request runs outgoing middleware steps, which may change ``event.response``, a
    response the controller made (perhaps one object shared by every request) is copied.
    """
    if event.response is None:
        result = event.result
        response = render(result, event.status)
        if response is result and event._middlewares:
            response = copy_response(response)
        event.response = response
