"""Route declarations: ``http.GET(...)`` and friends, ``@http.controller(...)``,
``http.mount(...)``.

Decorators only *describe* routes: they attach a :class:`RouteSpec` to the function (or a
:class:`ControllerSpec` to the class) and return it unchanged. Nothing is registered globally,
so several apps can share controllers, and one controller can be mounted twice.

A class's declarations are read with one walk, :func:`members_in_source_order`, for controller
classes (:mod:`.controllers`) and listener classes (:mod:`workflowhttp.events`) alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from ..errors import ConfigurationError
from .paths import ANY

__all__ = [
    "ControllerSpec",
    "Mount",
    "RouteSpec",
    "controller_spec",
    "http",
    "members_in_source_order",
    "merge_groups",
    "needs_no_instance",
    "route_specs",
]

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
        self.groups = merge_groups(self.groups, groups)
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
        self.groups = merge_groups(self.groups, groups)
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


class Mount:
    """A group of controllers under a path prefix: what ``http.mount(...)`` returns.

    Given in ``App(controllers=[...])`` (or in another mount), it adds its controllers' routes
    as if declared under ``prefix``: each route's path is the prefix, then its controller's
    base path, then its own; the mount's groups come before the controller's and the route's
    (duplicates dropped); with a ``name``, every route name is prefixed ``name.``; the mount's
    middlewares run for its routes like a controller's, before the controller's own. Nested
    mounts add up, the outer one first. The mount only describes: the same controllers can be
    mounted under several prefixes, each mount adding its own routes.

    Args:
        prefix: The path prefix (``"/v1"``); it may hold ``{name}`` parameters, whose values
            controllers take like any path parameter.
        controllers: Controller classes, route functions and mounts.
        name: Prefix of the route names (``"v1"`` → ``url_for("v1.users.show", id=1)``).
        groups: Groups of every route of the mount.
        middlewares: Middlewares (classes, instances or ``Middleware(...)``) of every route of
            the mount.

    Raises:
        ConfigurationError: an argument of the wrong kind, or no controllers.
    """

    __slots__ = ("prefix", "controllers", "name", "groups", "middlewares")

    def __init__(
        self,
        prefix: str,
        controllers: Iterable[Any],
        *,
        name: str | None = None,
        groups: Iterable[str] = (),
        middlewares: Iterable[Any] = (),
    ) -> None:
        if not isinstance(prefix, str):
            raise ConfigurationError(f"mount prefix must be a str, got {prefix!r}")
        if isinstance(controllers, (str, bytes)) or not isinstance(controllers, Iterable):
            raise ConfigurationError(
                f"mount {prefix!r}: controllers must be a list of controllers, got {controllers!r}"
            )
        if name is not None and (not isinstance(name, str) or not name.strip(".")):
            raise ConfigurationError(f"mount {prefix!r}: name must be a non-empty str or None")
        if isinstance(groups, str):
            raise ConfigurationError(
                f"mount {prefix!r}: groups is a list of group names, not one string"
            )
        self.prefix = prefix
        self.controllers = tuple(controllers)
        if not self.controllers:
            raise ConfigurationError(f"mount {prefix!r} has no controllers")
        self.name = name.strip(".") if name is not None else None
        self.groups = merge_groups(groups, ())
        self.middlewares = tuple(middlewares)

    def __repr__(self) -> str:
        named = f", name={self.name!r}" if self.name else ""
        return f"<Mount {self.prefix!r}{named}: {len(self.controllers)} controllers>"


class _RouteDecorator(Protocol):
    def __call__(self, path: str = "/") -> RouteSpec: ...


def _method_route(method: str) -> _RouteDecorator:
    """Return the decorator ``http.<METHOD>(path="/")``: a route answering ``method``."""

    def route(path: str = "/") -> RouteSpec:
        return RouteSpec(path, (method,))

    route.__name__ = route.__qualname__ = "ANY" if method == ANY else method
    route.__doc__ = f"Declare a {route.__name__} route at ``path`` (default ``/``)."
    return route


class _Http:
    """The route decorators: ``http.GET(path)``, ..., ``http.controller(base)`` and
    ``http.mount(prefix, controllers)``."""

    GET = staticmethod(_method_route("GET"))
    HEAD = staticmethod(_method_route("HEAD"))
    POST = staticmethod(_method_route("POST"))
    PUT = staticmethod(_method_route("PUT"))
    PATCH = staticmethod(_method_route("PATCH"))
    DELETE = staticmethod(_method_route("DELETE"))
    OPTIONS = staticmethod(_method_route("OPTIONS"))
    ANY = staticmethod(_method_route(ANY))

    def controller(self, base: Any = "") -> Any:
        """Mark a class as a controller, with an optional base path.

        Works as ``@http.controller``, ``@http.controller("/users")`` and
        ``@http.controller("/users").group("admin")``.
        """
        if isinstance(base, type):
            return ControllerSpec("")(base)
        return ControllerSpec(base)

    def mount(
        self,
        prefix: str,
        controllers: Iterable[Any],
        *,
        name: str | None = None,
        groups: Iterable[str] = (),
        middlewares: Iterable[Any] = (),
    ) -> Mount:
        """Group ``controllers`` under ``prefix``, for ``App(controllers=[...])``; see
        :class:`Mount`."""
        return Mount(prefix, controllers, name=name, groups=groups, middlewares=middlewares)


http = _Http()


def merge_groups(first: Iterable[str], second: Iterable[str]) -> tuple[str, ...]:
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


def members_in_source_order(cls: type) -> list[tuple[str, Any]]:
    """Return the class's attributes, bases first, each class's in definition order.

    Routes of a controller class and listeners of a listener class are registered in this
    order, so equal priorities run in the order the methods are written.
    """
    members: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for name in vars(klass):
            members.pop(name, None)  # an override moves to where the subclass defines it
            members[name] = getattr(cls, name, None)
    return list(members.items())


def needs_no_instance(cls: type, name: str) -> bool:
    """Whether ``cls.<name>`` is a staticmethod or a classmethod: callable without building
    the class (``getattr`` binds a classmethod to the class)."""
    return isinstance(inspect.getattr_static(cls, name), (staticmethod, classmethod))
