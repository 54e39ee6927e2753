"""The event that travels with a request through the workflow, and the order of listeners."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from werkzeug.wrappers import Response as WerkzeugResponse

from .errors import AccessDenied, ConfigurationError, IllegalTransition
from .responses import Response
from .routing.declarations import members_in_source_order, needs_no_instance
from .workflow import (
    ACCESS_DENIED,
    ALL_STATES,
    ALLOWED,
    AUTH,
    RESPONSE,
    ROUTE,
    ROUTE_NOT_FOUND,
    ListenerToken,
    state_name,
)

if TYPE_CHECKING:
    from .app import App
    from .request import Request
    from .routing import Route

__all__ = ["HttpEvent", "compile_listeners", "listener"]


class HttpEvent:
    """One request's journey through the workflow; its fields fill in as the request advances.

    Attributes:
        state: The current state's name.
        route: The matched :class:`~workflowhttp.routing.Route`, or ``None``.
        path_params: The raw matched path values, by name.
        parameters: The controller's resolved arguments, by name.
        result: The controller's return value (or what ``send()`` was given).
        status: The status given to ``send()``, overriding the rendered one.
        response: The rendered response (set in ``response``); listeners may assign it.
        error: The exception, in failure states.
        error_state: The state whose listener raised ``error`` (``None`` when a listener
            moved to a failure state itself).
        request_id: The request's id when the app has an event stream, else ``None``.
    """

    __slots__ = (
        "app",
        "environ",
        "state",
        "route",
        "path_params",
        "parameters",
        "result",
        "status",
        "response",
        "error",
        "error_state",
        "allowed_methods",
        "request_id",
        "_next",
        "_stopped",
        "_request",
        "_store",
        "_query",
        "_scoped",
        "_middlewares",
        "_middleware_failures",
        "_trail",
    )

    def __init__(self, app: App, environ: dict[str, Any]) -> None:
        self.app = app
        self.environ = environ
        self.state = "request"
        self.route: Route | None = None
        # Fresh dicts: a listener may write to them, and nothing is shared between requests.
        self.path_params: dict[str, str] = {}
        self.parameters: dict[str, Any] = {}
        self.result: Any = None
        self.status: int | None = None
        self.response: Any = None
        self.error: BaseException | None = None
        self.error_state: str | None = None
        self.allowed_methods: tuple[str, ...] = ()
        self.request_id: str | None = None
        self._next: str | None = None
        self._stopped = False
        self._request: Request | None = None
        self._store: dict[str, Any] | None = None
        self._query: dict[str, list[str]] | None = None
        self._scoped: dict[Any, Any] | None = None
        self._middlewares: list[Any] | None = None
        # (id(error), "Middleware.step") for each middleware step that raised (for the stream)
        self._middleware_failures: list[tuple[int, str]] | None = None
        self._trail: Any = None

    # -- what the request carries -------------------------------------------------------------

    @property
    def request(self) -> Request:
        """The :class:`~workflowhttp.Request`, built on first access (PERF: most requests never
        need werkzeug's request object)."""
        request = self._request
        if request is None:
            request = self._request = self.app.request_class(self.environ)
        return request

    @property
    def store(self) -> dict[str, Any]:
        """A dict for passing data between listeners, resolvers and the controller."""
        store = self._store
        if store is None:
            store = self._store = {}
        return store

    @property
    def method(self) -> str:
        """The request method, upper case."""
        return self.environ["REQUEST_METHOD"]  # type: ignore[no-any-return]

    @property
    def path(self) -> str:
        """The request path as the router saw it (decoded, trailing slash kept)."""
        return self.app.router.request_path(self.environ)

    @property
    def sent(self) -> bool:
        """Whether a response has been scheduled (``send()`` or ``next("response")``)."""
        return self._next == RESPONSE or self.state == RESPONSE

    # -- moving on -----------------------------------------------------------------------------

    def next(self, state: str) -> None:
        """Schedule ``state`` as the next state; the last valid call within a state wins.

        Raises:
            IllegalTransition: the graph has no edge from the current state to ``state``.
        """
        allowed = ALLOWED[self.state]
        if state not in allowed:
            raise IllegalTransition(self.state, state, allowed)
        if self._next == RESPONSE and state != RESPONSE:
            self.status = None  # the send() this replaces takes its status with it
        self._next = state

    def has_next(self) -> bool:
        """Return whether a next state is scheduled."""
        return self._next is not None

    def clear_next(self) -> None:
        """Forget the scheduled next state (and the status of a scheduled ``send()``)."""
        if self._next == RESPONSE:
            self.status = None
        self._next = None

    def send(self, result: Any, status: int | None = None) -> None:
        """Answer with ``result`` (rendered like a controller's return value); go to ``response``.

        Legal from every state but ``response`` itself, where ``event.response`` is assigned.
        """
        if self.state == RESPONSE:
            raise IllegalTransition(RESPONSE, RESPONSE, ALLOWED[RESPONSE])
        self.result = result
        self.status = status
        self.response = None
        self._next = RESPONSE

    def access_denied(self, message: str | None = None) -> None:
        """Move to ``access_denied``, which answers 403 with ``message``."""
        self.next(ACCESS_DENIED)
        self.error = AccessDenied(message)

    def not_found(self) -> None:
        """Move to ``route_not_found`` (legal in ``route`` only)."""
        self.next(ROUTE_NOT_FOUND)

    def call_on_close(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` once the response has been sent: when the server closes its body
        (after a streamed body too), as werkzeug's ``Response.call_on_close`` does.

        Callbacks run newest first, with the request's generator services' teardowns, and
        whether or not the request failed; an exception a callback raises is logged, never
        answered (the response is out already).
        """
        from .di import TEARDOWNS

        scoped = self._scoped
        if scoped is None:
            scoped = self._scoped = {}
        teardowns = scoped.get(TEARDOWNS)
        if teardowns is None:
            teardowns = scoped[TEARDOWNS] = []
        closing = _on_close(callback)
        next(closing)
        teardowns.append((getattr(callback, "__qualname__", repr(callback)), closing))

    def stop_propagation(self) -> None:
        """Skip the remaining listeners of the current state; a scheduled move still happens."""
        self._stopped = True

    def route_found(
        self, route: Route | Callable[..., Any], path_params: dict[str, str] | None = None
    ) -> None:
        """Claim the request in ``route`` for ``route`` (a Route or a plain callable).

        A plain callable is compiled into a route, so its parameters resolve like any
        controller's. The last compiled callables are kept (a bounded cache): claim with the
        same callable (a module-level function, a bound method) and it is compiled once; a
        fresh callable per request (a lambda) is compiled on each request.
        """
        if self.state != ROUTE:
            raise IllegalTransition(self.state, AUTH, ALLOWED[self.state])
        self.route = self.app.router.adopt(route)
        self.path_params = path_params or {}
        self.allowed_methods = ()
        self.next(AUTH)

    def returned(self, listener: Any, value: Any) -> None:
        """Handle what a listener returned: a response is sent, anything else is an error.

        Flask's error handlers return their response, so that habit works: a returned
        :class:`~workflowhttp.Response` (or werkzeug one) is sent as ``send()`` would (in
        ``response``, it replaces ``event.response``). Any other value was meant for someone:
        it is never silently dropped.

        Raises:
            ConfigurationError: ``value`` is not a response (a logged 500 naming the listener).
        """
        if isinstance(value, (Response, WerkzeugResponse)):
            if self.state == RESPONSE:
                self.response = value
            else:
                self.send(value)
            return
        raise ConfigurationError(returned_error(listener, value))

    def __repr__(self) -> str:
        method = self.environ.get("REQUEST_METHOD")
        return f"<HttpEvent {method} {self.environ.get('PATH_INFO')!r} in {self.state!r}>"


# -- listeners ---------------------------------------------------------------------------------

Listener = Callable[[HttpEvent], Any]
"""A listener: called with the event; it returns ``None``, or a response to send."""
F = TypeVar("F", bound=Callable[..., Any])
_LISTENS = "__workflowhttp_listens__"


class Registration(NamedTuple):
    """One listener subscribed to one state."""

    state: str
    priority: int
    sequence: int
    listener: Listener


def listener(token: ListenerToken | str, priority: int = 0) -> Callable[[F], F]:
    """Mark a method of a listener class as subscribed to ``token``'s state.

    The class is given to ``App(listeners=[...])``, built once with its constructor
    dependencies injected, and each marked method is registered with its priority.
    """
    state = state_name(token)

    def mark(function: F) -> F:
        marks = function.__dict__.setdefault(_LISTENS, [])
        marks.append((state, priority))
        return function

    return mark


def marked_listeners(instance: object) -> list[tuple[str, int, Listener]]:
    """Return ``(state, priority, bound method)`` for each ``@listener`` method of ``instance``,
    in the order the methods are declared."""
    found = []
    for name, member in members_in_source_order(type(instance)):
        for state, priority in getattr(member, _LISTENS, ()):
            found.append((state, priority, getattr(instance, name)))
    return found


def marked_class_listeners(
    cls: type, instance: Callable[[], Any]
) -> list[tuple[str, int, Listener]]:
    """Return ``(state, priority, listener)`` for each ``@listener`` method of class ``cls``.

    ``instance()`` builds the one instance on first call: each listener builds it when it
    first runs (in the worker, after the fork), not when the app is built. The signature of
    each method is checked now.
    """
    found = []
    for name, member in members_in_source_order(cls):
        marks = getattr(member, _LISTENS, ())
        if not marks:
            continue
        if needs_no_instance(cls, name):
            method: Listener = member
        else:
            check_signature(member, f"{cls.__qualname__}.{name}", (None, None))
            method = lazy_method(instance, name, f"{cls.__qualname__}.{name}")
        for state, priority in marks:
            found.append((state, priority, method))
    return found


def lazy_method(instance: Callable[[], Any], name: str, qualname: str) -> Listener:
    """Return a listener calling ``instance().<name>(event)``, building the instance once."""
    bound: list[Listener] = []

    def call(event: HttpEvent) -> Any:
        if bound:
            return bound[0](event)
        method = getattr(instance(), name)
        bound.append(method)  # a race appends the same instance's method twice: harmless
        return method(event)

    call.__name__ = name
    call.__qualname__ = qualname
    return call


def returned_error(listener: Any, value: Any) -> str:
    """The message for a listener that returned something other than ``None`` or a response."""
    name = getattr(listener, "__qualname__", None) or repr(listener)
    return (
        f"listener {name} returned a {type(value).__qualname__}: a listener answers with "
        f"event.send(...) or by returning a Response, and otherwise returns None"
    )


def check_listener(function: Any) -> Listener:
    """Return ``function`` if it can be called with the event alone, else raise."""
    if not callable(function):
        raise ConfigurationError(f"listener {function!r} is not callable")
    check_signature(function, getattr(function, "__qualname__", function), (None,))
    return function  # type: ignore[no-any-return]


def check_signature(function: Any, name: Any, arguments: tuple[Any, ...]) -> None:
    """Raise ``ConfigurationError`` unless ``function(*arguments)`` binds (the event last)."""
    try:
        inspect.signature(function).bind(*arguments)
    except TypeError as ex:
        raise ConfigurationError(
            f"listener {name!r} must accept exactly one argument, the event: {ex}"
        ) from None
    except ValueError:  # builtins without a signature: trust them
        pass


def compile_listeners(registrations: Iterable[Registration]) -> dict[str, tuple[Listener, ...]]:
    """Order listeners per state: lower priority first, ties in registration order."""
    table: dict[str, list[Listener]] = {state: [] for state in ALL_STATES}
    for registration in sorted(registrations, key=lambda r: (r.priority, r.sequence)):
        table[registration.state].append(registration.listener)
    return {state: tuple(listeners) for state, listeners in table.items()}


def _on_close(callback: Callable[[], Any]) -> Any:
    """A teardown (a started generator) that runs ``callback``, the request failed or not."""
    try:
        yield
    finally:
        callback()
