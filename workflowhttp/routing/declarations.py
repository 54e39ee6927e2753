"""Route declarations: ``http.GET(...)`` and friends, ``@http.controller(...)``.

Decorators only *describe* routes: they attach a :class:`RouteSpec` to the function (or a
:class:`ControllerSpec` to the class) and return it unchanged. Nothing is registered globally,
so several apps can share controllers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ..errors import ConfigurationError
from .paths import ANY

__all__ = ["ControllerSpec", "RouteSpec", "controller_spec", "http", "route_specs"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T", bound=type)

_SPECS = "__workflowhttp_routes__"
_CONTROLLER = "__workflowhttp_controller__"


class RouteSpec:
    """What a route decorator describes; chainable, then applied to a function.

    ``http.GET("/users/{id}").name("user").group("admin")`` returns a spec; applying it to a
    function attaches the spec and returns the function unchanged.
    """

    __slots__ = (
        "path",
        "methods",
        "route_name",
        "groups",
        "route_data",
        "route_description",
        "middlewares",
    )

    def __init__(self, path: str, methods: tuple[str, ...]) -> None:
        if not isinstance(path, str):
            raise ConfigurationError(f"route path must be a str, got {path!r}")
        self.path = path
        self.methods = methods
        self.route_name: str | None = None
        self.groups: tuple[str, ...] = ()
        self.route_data: dict[str, Any] = {}
        self.route_description = ""
        self.middlewares: tuple[Any, ...] = ()

    def __call__(self, function: F) -> F:
        if not (callable(function) or isinstance(function, classmethod)):
            raise ConfigurationError(f"{function!r} cannot be a controller: not callable")
        target = (
            function.__func__ if isinstance(function, (staticmethod, classmethod)) else function
        )
        target.__dict__.setdefault(_SPECS, []).append(self)
        return function

    def name(self, name: str) -> RouteSpec:
        """Name the route (for ``app.url_for``)."""
        self.route_name = name
        return self

    def group(self, *groups: str) -> RouteSpec:
        """Add groups (listeners can select routes by ``"admin" in event.route.groups``)."""
        self.groups = _merge(self.groups, groups)
        return self

    def data(self, key: str, value: Any) -> RouteSpec:
        """Attach a value to the route (``event.route.data[key]``)."""
        self.route_data[key] = value
        return self

    def description(self, text: str) -> RouteSpec:
        """Describe the route (shown by ``workflowhttp routes``)."""
        self.route_description = text
        return self

    def middleware(self, *middlewares: Any) -> RouteSpec:
        """Run these middlewares (classes, instances or ``Middleware(...)``) for this route.

        They run after the app's global middlewares and the controller's, in the order given.
        """
        self.middlewares = (*self.middlewares, *middlewares)
        return self

    def _verb(self, method: str) -> RouteSpec:
        if method == ANY:
            self.methods = (ANY,)
        elif ANY not in self.methods and method not in self.methods:
            self.methods = (*self.methods, method)
        return self

    def GET(self) -> RouteSpec:  # noqa: N802 - verbs are upper case, as in the decorators
        return self._verb("GET")

    def HEAD(self) -> RouteSpec:  # noqa: N802
        return self._verb("HEAD")

    def POST(self) -> RouteSpec:  # noqa: N802
        return self._verb("POST")

    def PUT(self) -> RouteSpec:  # noqa: N802
        return self._verb("PUT")

    def PATCH(self) -> RouteSpec:  # noqa: N802
        return self._verb("PATCH")

    def DELETE(self) -> RouteSpec:  # noqa: N802
        return self._verb("DELETE")

    def OPTIONS(self) -> RouteSpec:  # noqa: N802
        return self._verb("OPTIONS")

    def ANY(self) -> RouteSpec:  # noqa: N802
        return self._verb(ANY)


class ControllerSpec:
    """``@http.controller("/base")``: a base path and groups for a controller class."""

    __slots__ = ("base", "groups", "middlewares")

    def __init__(self, base: str = "") -> None:
        self.base = base
        self.groups: tuple[str, ...] = ()
        self.middlewares: tuple[Any, ...] = ()

    def group(self, *groups: str) -> ControllerSpec:
        self.groups = _merge(self.groups, groups)
        return self

    def middleware(self, *middlewares: Any) -> ControllerSpec:
        """Run these middlewares for every route of the controller, before the routes' own."""
        self.middlewares = (*self.middlewares, *middlewares)
        return self

    def __call__(self, cls: T) -> T:
        if not isinstance(cls, type):
            raise ConfigurationError(f"http.controller decorates classes, not {cls!r}")
        setattr(cls, _CONTROLLER, self)
        return cls


class _Http:
    """The route decorators: ``http.GET(path)``, ... and ``http.controller(base)``."""

    def GET(self, path: str = "/") -> RouteSpec:  # noqa: N802
        return RouteSpec(path, ("GET",))

    def HEAD(self, path: str = "/") -> RouteSpec:  # noqa: N802
        return RouteSpec(path, ("HEAD",))

    def POST(self, path: str = "/") -> RouteSpec:  # noqa: N802
        return RouteSpec(path, ("POST",))

    def PUT(self, path: str = "/") -> RouteSpec:  # noqa: N802
        return RouteSpec(path, ("PUT",))

    def PATCH(self, path: str = "/") -> RouteSpec:  # noqa: N802
        return RouteSpec(path, ("PATCH",))

    def DELETE(self, path: str = "/") -> RouteSpec:  # noqa: N802
        return RouteSpec(path, ("DELETE",))

    def OPTIONS(self, path: str = "/") -> RouteSpec:  # noqa: N802
        return RouteSpec(path, ("OPTIONS",))

    def ANY(self, path: str = "/") -> RouteSpec:  # noqa: N802
        return RouteSpec(path, (ANY,))

    def controller(self, base: Any = "") -> Any:
        """Mark a class as a controller, with an optional base path.

        Works as ``@http.controller``, ``@http.controller("/users")`` and
        ``@http.controller("/users").group("admin")``.
        """
        if isinstance(base, type):
            return ControllerSpec("")(base)
        return ControllerSpec(base)


http = _Http()


def _merge(first: Iterable[str], second: Iterable[str]) -> tuple[str, ...]:
    """Concatenate groups, first ones first, dropping duplicates."""
    return tuple(dict.fromkeys((*first, *second)))


def route_specs(function: Any) -> list[RouteSpec]:
    """Return the specs attached to ``function`` by route decorators."""
    target = function.__func__ if isinstance(function, (staticmethod, classmethod)) else function
    return list(getattr(target, _SPECS, ()))


def controller_spec(cls: type) -> ControllerSpec | None:
    """Return the ``@http.controller`` spec of ``cls``, if it has one."""
    spec = cls.__dict__.get(_CONTROLLER)
    return spec if isinstance(spec, ControllerSpec) else None
