"""The WSGI entry: an :class:`App` builds everything at start-up, then walks each request."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response as WerkzeugResponse

from .di import TEARDOWNS, Container
from .error_responses import error_response
from .errors import ConfigurationError
from .events import (
    HttpEvent,
    Listener,
    Registration,
    check_listener,
    compile_listeners,
    marked_class_listeners,
    marked_listeners,
)
from .extensions import Lifecycle, is_extension
from .kernel import kernel_listeners
from .limits import Limits
from .middleware import MiddlewareSet
from .openapi import OpenAPI, describe
from .reading import request_checks
from .request import Request
from .responses import Response, status_of
from .routing import Route, Router
from .routing.controllers import ControllerCompiler
from .settings import check_priority
from .stream import Stream
from .workflow import ListenerToken, state_name, walk
from .wsgi import ClosingBody, close_body, close_unsent, prepare

__all__ = ["App"]

StartResponse = Callable[..., Any]


class App:
    """A workflowhttp application: the WSGI callable.

    Args:
        controllers: Controller classes and route functions (decorated with ``http.*``), and
            mounts of them under a prefix (``http.mount("/v1", [...])``).
        listeners: Listener classes (built once, on first use in the worker, constructor
            injected) or objects with ``@listener`` methods, or functions marked with
            ``@listener``. Equal priorities run in the order the methods are declared.
        providers: Services for injection (see :mod:`workflowhttp.di`).
        limits: The :class:`Limits` on what a request may make the app read.
        trusted_hosts: The host names the app answers for (``"example.com"``, or
            ``".example.com"`` for it and its subdomains); any other ``Host`` is a 400.
            ``None`` (default) accepts any.
        proxy_hops: How many reverse proxies in front of the app to trust for
            ``X-Forwarded-For/-Proto/-Host/-Port`` (an int), or werkzeug ``ProxyFix``
            arguments (``{"x_for": 1, "x_proto": 1}``). ``0`` (default) trusts none: the
            headers are ignored, since any client can send them.
        middlewares: Global middlewares (classes, instances or ``Middleware(...)`` with a
            priority and route filters); see :mod:`workflowhttp.middleware`.
        stream: An event stream (:class:`workflowhttp.stream.Stream`) that receives typed
            events of every request; see :mod:`workflowhttp.stream`.
        extensions: Objects bringing controllers, listeners, providers and middlewares of
            their own, with ``start(app)``/``stop(app)`` run once per worker (see
            :mod:`workflowhttp.extensions`). An extension given in ``controllers`` (a
            :class:`~workflowhttp.proxy.Proxy`, say) is added as one.
        openapi: An :class:`~workflowhttp.openapi.OpenAPI`: serve the app's OpenAPI document
            and its docs page (an extension, added after the others).
        debug: Show tracebacks in 500 responses. Never in production.

    Raises:
        ConfigurationError: any configuration error, here and not at the first request.
    """

    def __init__(
        self,
        controllers: Iterable[Any] = (),
        listeners: Iterable[Any] = (),
        providers: Iterable[Any] = (),
        *,
        limits: Limits | None = None,
        trusted_hosts: Iterable[str] | None = None,
        proxy_hops: int | dict[str, int] = 0,
        middlewares: Iterable[Any] = (),
        stream: Stream | None = None,
        extensions: Iterable[Any] = (),
        openapi: OpenAPI | None = None,
        debug: bool = False,
    ) -> None:
        if limits is not None and not isinstance(limits, Limits):
            raise ConfigurationError(f"limits must be a Limits, not {type(limits).__name__}")
        if isinstance(trusted_hosts, str):
            raise ConfigurationError("trusted_hosts is a list of host names, not one string")
        self.trusted_hosts = _trusted_hosts(trusted_hosts)
        self._forwarded = _proxy_fix(proxy_hops)
        self._debug = debug
        self.limits = limits or Limits()
        self.request_class = Request.with_limits(self.limits)
        self._check_request = request_checks(self.limits, self.trusted_hosts)
        controllers = list(controllers)
        if openapi is not None and not isinstance(openapi, OpenAPI):
            raise ConfigurationError(f"openapi must be an OpenAPI, not {openapi!r}")
        self.extensions: tuple[Any, ...] = (
            *_unique(extensions),
            *_unique(item for item in controllers if is_extension(item)),
            *((openapi,) if openapi is not None else ()),
        )
        controllers = [item for item in controllers if not is_extension(item)]
        extended = [getattr(ext, "providers", ()) for ext in self.extensions]
        self.container = Container(
            [*(item for items in extended for item in items), *providers],
            special={HttpEvent: _the_event, Request: _the_request},
        )
        self.router = Router()
        if stream is not None and not isinstance(stream, Stream):
            raise ConfigurationError(f"stream must be a Stream, not {type(stream).__name__}")
        self.stream = stream
        brought = [m for ext in self.extensions for m in getattr(ext, "middlewares", ())]
        self.middlewares = MiddlewareSet(self.container, [*brought, *middlewares])
        self._controllers = ControllerCompiler(self.container, self.middlewares)
        self.router.adopt_callable = self._controllers.compile_callable
        self._sequence = itertools.count()
        self._registrations: list[Registration] = []  # the users'; the kernel's are added
        self._extension_kernel = _extension_kernel(self.extensions)
        self._listeners: dict[str, tuple[Listener, ...]] = {}
        self._compiling = threading.RLock()  # recompile() may come from an extension's thread
        self._lifecycle = Lifecycle(self)
        for extension in self.extensions:
            for controller in getattr(extension, "controllers", ()):
                self._add_controller(controller)
        for controller in controllers:
            self._add_controller(controller)
        for extension in self.extensions:
            for item in getattr(extension, "listeners", ()):
                self._add_listener_object(item)
        for item in listeners:
            self._add_listener_object(item)
        self._compile()

    # -- the request ---------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Make the event → walk the states → write the response."""
        if self._forwarded is not None:
            self._forwarded(environ, _ignore_start_response)  # rewrites the environ in place
        if not self._lifecycle.started:
            self._lifecycle.start()  # under a server that never called app.start()
        event = HttpEvent(self, environ)
        stream = self.stream
        trace = None
        extra_headers: tuple[tuple[str, str], ...] = ()
        if stream is not None:  # give the request its id, and a trace for the walker to fill
            trace, extra_headers = stream.begin(event)
        try:
            self._check_request(environ)  # SECURITY: before any listener; see request_checks
            walk(event, self._listeners, self.limits.max_hops, trace)
            response = event.response
            if response is None:
                raise ConfigurationError("a response listener set event.response to None")
        except Exception as ex:
            response = self._last_resort(event, ex)
        try:
            status_line, headers, body = prepare(response, environ, extra_headers)
        except Exception as ex:  # a bad status or header: nothing is sent yet
            response = self._last_resort(event, ex)
            status_line, headers, body = prepare(response, environ, extra_headers)
        if response is not event.response:  # the walk's answer was given up: free its body
            close_unsent(response, event.response, event.result)
        if event.error is not None:  # logged by now: let the request's state go
            _drop_tracebacks(event.error, trace)
        if event.parameters:
            # The controller has run: a parameter typed HttpEvent (or a service holding the
            # event) would keep the event alive in a cycle until the cyclic GC runs.
            event.parameters = {}
        if trace is not None and stream is not None:  # no trace: nothing recorded
            body = stream.finish(event, status_of(response), body)
        scoped = event._scoped
        if event._request is not None or scoped is not None:
            teardowns = scoped.get(TEARDOWNS) if scoped is not None else None
            if event._request is not None or teardowns:
                # Uploaded files are spooled to temporary files, generator services wait for
                # their teardown: both when the server closes the body (after a streamed body
                # has been sent, too).
                body = ClosingBody(body, event._request, teardowns, event.error)
        try:
            start_response(status_line, headers)
        except BaseException:
            # SECURITY: the server refused the answer and will never close the body: close
            # it here, with the request's temporary files and generator services, instead of
            # leaking them.
            close_body(body)
            raise
        return body

    def _last_resort(self, event: HttpEvent, error: Exception) -> Response | WerkzeugResponse:
        """Answer what the workflow could not: stalls, loops, errors in failure states.

        An ``HTTPError`` keeps its status even here; anything else is a logged 500.
        """
        if event.error is not error:
            event.error = error
            event.error_state = event.state
        return error_response(error, event, debug=self._debug)

    # -- the worker's lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Run every extension's ``start(app)``, once (later calls do nothing).

        ``workflowhttp serve`` calls it in each worker after the fork, ``with TestClient(app)``
        on entering the block; otherwise the first request does.
        """
        self._lifecycle.start()

    def stop(self) -> None:
        """Tear down the generator singletons, then run every started extension's
        ``stop(app)``, in reverse order, once."""
        self.container.close()
        self._lifecycle.stop()

    @property
    def debug(self) -> bool:
        """Whether 500 responses show the traceback (never in production).

        Setting it recompiles the kernel's listeners, which hold it (``workflowhttp dev
        --debug`` sets it on a built app).
        """
        return self._debug

    @debug.setter
    def debug(self, value: bool) -> None:
        self._debug = bool(value)
        self._compile()

    @property
    def trusts_forwarded(self) -> bool:
        """Whether the app trusts ``X-Forwarded-*`` headers (``proxy_hops`` is not 0)."""
        return self._forwarded is not None

    @property
    def workflow_listeners(self) -> dict[str, tuple[Listener, ...]]:
        """The compiled listener tables of every workflow's states (what :func:`walk` takes)."""
        return self._listeners

    # -- configuration -------------------------------------------------------------------------

    def listen(
        self,
        token: ListenerToken | str,
        function: Listener | None = None,
        *,
        priority: int = 0,
    ) -> Any:
        """Subscribe ``function`` to a state's event: ``app.listen(token, fn)`` or a decorator.

        Lower priorities run first; equal ones in registration order. Users default to 0, the
        kernel sits at 100.
        """
        state = state_name(token)
        if function is None:

            def decorate(function: Listener) -> Listener:
                self.listen(state, function, priority=priority)
                return function

            return decorate
        self._registrations.append(self._registration(state, priority, function))
        self._compile()
        return function

    def add_controller(self, controller: Any) -> None:
        """Add a controller class, route function or mount after the app is built."""
        self._add_controller(controller)

    def add_listener(self, listener: Any) -> None:
        """Add a listener class or object (as in ``App(listeners=[...])``) after the build."""
        self._add_listener_object(listener)
        self._compile()

    def url_for(self, name: str, /, **params: Any) -> str:
        """Build the path of the route named ``name``; extra params become the query."""
        return self.router.url_for(name, **params)

    @property
    def routes(self) -> list[Route]:
        """The app's routes, in registration order."""
        return list(self.router.routes)

    def openapi(self) -> dict[str, Any]:
        """Return the app's OpenAPI 3.1 document (see :mod:`workflowhttp.openapi`).

        Built on the first call (or request for it) and kept; each call returns a new dict.
        """
        return describe(self)

    def listeners(self, token: ListenerToken | str) -> tuple[Listener, ...]:
        """The listeners of a state, in the order they run (the kernel's included)."""
        return self._listeners[state_name(token)]

    def _registration(self, state: str, priority: int, function: Any) -> Registration:
        check_priority("listener", priority)
        return Registration(state, priority, next(self._sequence), check_listener(function))

    def recompile(self) -> None:
        """Compile the listener tables again, reading each extension's ``kernel`` anew.

        For an extension whose kernel listeners change while the app serves (``Hooks``
        subscribes its listener-hook trigger only while a listener hook is registered). Safe
        from any thread: requests walk the old tables or the new ones, never a mix.
        """
        self._compile(extensions=True)

    def _compile(self, *, extensions: bool = False) -> None:
        with self._compiling:
            if extensions:
                self._extension_kernel = _extension_kernel(self.extensions)
            # The kernel's listeners come first among equal priorities; the middleware
            # runners are among them only when the app has middlewares.
            kernel = (
                *kernel_listeners(self.router, self.middlewares, debug=self._debug),
                *self._extension_kernel,
            )
            self._kernel = [
                Registration(state, priority, -1_000_000 + index, function)
                for index, (state, priority, function) in enumerate(kernel)
            ]
            # PERF: per-state tuples, swapped in one assignment (safe while threads serve).
            self._listeners = compile_listeners(self._kernel + self._registrations)

    def _add_listener_object(self, item: Any) -> None:
        """Register a listener class, object or marked function: all its listeners, or none."""
        if isinstance(item, type):
            # Built on first use, in the worker: not here, before gunicorn forks.
            instance = self.container.lazy(item, consumer=item.__qualname__)
            marked = marked_class_listeners(item, instance)
        elif callable(item) and getattr(item, "__workflowhttp_listens__", None):
            marked = [(state, priority, item) for state, priority in item.__workflowhttp_listens__]
        else:
            marked = marked_listeners(item)
        if not marked:
            raise ConfigurationError(f"{item!r} has no @listener methods")
        self._registrations.extend(
            [self._registration(state, priority, function) for state, priority, function in marked]
        )

    def _add_controller(self, controller: Any) -> None:
        """Add a controller class, a route function or a mount: all its routes, or none."""
        routes = self._controllers.compile_routes(controller)
        self.router.add(*routes)
        if any(route.middlewares for route in routes):
            self._compile()  # the first route middlewares bring the middleware runners in


def _unique(items: Iterable[Any]) -> list[Any]:
    """Return ``items`` without repeats (by identity), in order."""
    seen: dict[int, Any] = {}
    for item in items:
        seen.setdefault(id(item), item)
    return list(seen.values())


def _extension_kernel(extensions: tuple[Any, ...]) -> list[tuple[str, int, Any]]:
    """The extensions' kernel listeners, each function once however many extensions bring it."""
    found: dict[tuple[str, Any], tuple[str, int, Any]] = {}
    for extension in extensions:
        for state, priority, function in getattr(extension, "kernel", ()):
            found.setdefault((state_name(state), function), (state, priority, function))
    return list(found.values())


def _drop_tracebacks(error: BaseException, trace: list[Any] | None) -> None:
    """Drop the tracebacks of a request's errors, once its response is prepared.

    A traceback holds the frames of the walker and the listeners; they hold the event, which
    holds the error (``event.error``, and the ``(listener, error)`` entries of the stream's
    trace): a reference cycle that would keep the event, its environ, request and body alive
    until the cyclic garbage collector runs. By now the error has been logged (and formatted,
    in debug mode); the exceptions stay, with their type and message, for the stream.
    """
    pending: list[BaseException | None] = [error]
    if trace:
        pending.extend(entry[1] for entry in trace if entry.__class__ is tuple)
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        pending.append(current.__cause__)
        pending.append(current.__context__)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)


def _the_event(event: HttpEvent) -> HttpEvent:
    return event


def _the_request(event: HttpEvent) -> Request:
    return event.request


def _trusted_hosts(hosts: Iterable[str] | None) -> list[str] | None:
    """Lower-case the trusted host names (host names are case-insensitive)."""
    if hosts is None:
        return None
    trusted = [host.lower() for host in hosts]
    if not trusted:
        raise ConfigurationError(
            "trusted_hosts is empty, so no request could be answered; None accepts any host"
        )
    return trusted


def _proxy_fix(hops: int | dict[str, int]) -> ProxyFix | None:
    """Build werkzeug's ProxyFix for ``hops`` trusted proxies, or ``None`` for none."""
    if isinstance(hops, bool) or not isinstance(hops, (int, dict)):
        raise ConfigurationError(f"proxy_hops must be an int or a dict, not {hops!r}")
    if isinstance(hops, int):
        if hops < 0:
            raise ConfigurationError("proxy_hops cannot be negative")
        if hops == 0:
            return None
        hops = {"x_for": hops, "x_proto": hops, "x_host": hops, "x_port": hops}
    # SECURITY: a header the dict does not name is not trusted (ProxyFix would default
    # x_for and x_proto to 1).
    trusted = {"x_for": 0, "x_proto": 0, "x_host": 0, "x_port": 0, "x_prefix": 0, **hops}
    try:
        return ProxyFix(_ignore_start_response, **trusted)
    except TypeError as ex:
        raise ConfigurationError(f"proxy_hops: {ex}") from None


def _ignore_start_response(*args: Any) -> Any:
    return None
