"""workflowhttp versions of the benchmarked apps, following DESIGN.md section 4.

Deliberately no ``from __future__ import annotations`` here: the controllers' annotations are
real objects, so this module exercises the framework's parameter plans and not its handling of
string annotations.
"""

from collections.abc import Callable
from typing import Any
from wsgiref.types import WSGIApplication

from workflowhttp import App, Provider, http
from workflowhttp.stream import RequestFinished, Stream

from . import MANY_ROUTES_STATIC, Item, param_text, static_text


@http.GET("/hello")
def hello() -> str:
    return "Hello, world!"


@http.GET("/users/{id}")
def show_user(id: int) -> dict[str, object]:
    return {"id": id, "name": f"user{id}"}


@http.GET("/search")
def search(q: str, limit: int = 10) -> dict[str, object]:
    return {"q": q, "limit": limit}


@http.POST("/items")
def create_item(item: Item) -> tuple[Item, int]:
    return item, 201


MAIN_CONTROLLERS: list[object] = [hello, show_user, search, create_item]


def noop(event: object) -> None:
    """Do nothing: the cost of a user listener is the cost of being called."""


def _static_controller(index: int) -> Callable[[], str]:
    def static() -> str:
        return static_text(index)

    static.__name__ = static.__qualname__ = f"static_{index}"
    return http.GET(f"/static/{index}")(static)


def _param_controller(index: int) -> Callable[[int], str]:
    def param(id: int) -> str:
        return param_text(index, id)

    param.__name__ = param.__qualname__ = f"param_{index}"
    return http.GET(f"/param{index}/{{id}}")(param)


def make_routes_app(total: int, **options: Any) -> App:
    """Return an app with ``total // 2`` static and ``total // 2`` parametrised routes
    (``options`` go to :class:`~workflowhttp.App`)."""
    half = total // 2
    controllers: list[object] = [_static_controller(i) for i in range(half)]
    controllers += [_param_controller(i) for i in range(half)]
    return App(controllers=controllers, **options)


def make_listeners_app() -> App:
    """Return the main app plus a no-op listener on ``request``, ``controller`` and ``response``."""
    app = App(controllers=MAIN_CONTROLLERS)
    for state in ("request", "controller", "response"):
        app.listen(state, noop)
    return app


class Greeting:
    """A request-scoped service: one instance per request."""

    def __init__(self) -> None:
        self.text = "Hello, world!"


@http.GET("/hello")
def hello_with_service(greeting: Greeting) -> str:
    return greeting.text


def make_scoped_service_app() -> App:
    """Return an app whose ``/hello`` takes a request-scoped service."""
    return App(controllers=[hello_with_service], providers=[Provider(Greeting, scope="request")])


class NoopMiddleware:
    def incoming(self, event: object) -> None:
        pass

    def outgoing(self, event: object) -> None:
        pass


def make_middleware_app(count: int) -> App:
    """Return the main app with ``count`` global no-op middlewares."""
    return App(controllers=MAIN_CONTROLLERS, middlewares=[NoopMiddleware() for _ in range(count)])


class NoopProcessor:
    def process(self, event: object) -> None:
        pass

    def shutdown(self) -> None:
        pass


class FinishedOnly(NoopProcessor):
    events = (RequestFinished,)


class NoFrameworkEvent(NoopProcessor):
    """A processor of its own events only: it wants none of the framework's."""

    events = ()


class _Settling:
    """A WSGI app with an event stream, plus ``settle()``: wait until its queues are empty."""

    def __init__(self, app: App, stream: Stream) -> None:
        self.app = app
        self.stream = stream

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)

    def settle(self) -> None:
        self.stream.flush(timeout=10)


def make_stream_app(every_event: bool, *, framework_events: bool = True) -> WSGIApplication:
    """Return the main app with an event stream whose no-op processor takes every event, or
    only ``RequestFinished``, or (``framework_events=False``) none of the framework's."""
    if not framework_events:
        factory: type[NoopProcessor] = NoFrameworkEvent
    else:
        factory = NoopProcessor if every_event else FinishedOnly
    stream = Stream(factory, queue_size=1_000_000)
    return _Settling(App(controllers=MAIN_CONTROLLERS, stream=stream), stream)


def make_app(kind: str, **options: Any) -> WSGIApplication:
    """Return the workflowhttp app of the given kind (see ``bench.apps.APP_KINDS``);
    ``options`` go to :class:`~workflowhttp.App` (``openapi=...``)."""
    if kind == "main":
        return App(controllers=MAIN_CONTROLLERS, **options)
    if kind == "many_routes":
        return make_routes_app(2 * MANY_ROUTES_STATIC, **options)
    raise ValueError(f"unknown app kind {kind!r}")
