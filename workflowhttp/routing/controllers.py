"""Controller compilation: controller classes, route functions and mounts into routes.

At start-up each route declared with ``http.*`` becomes a :class:`~.router.Route` whose
parameter plan and invoker are compiled once: the plan resolves the controller's arguments,
the invoker calls it (building the controller class per request, except for a staticmethod or
a classmethod). The mounts around a controller add their prefixes, names, groups and
middlewares, the outer mount's first.

The compiler needs the app's container (to inject the controllers and their parameters) and
its middleware set (to give each route its chain), not the app: it never imports
:mod:`workflowhttp.app`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import ConfigurationError
from ..extensions import is_extension
from ..params import build_plan
from .declarations import (
    Mount,
    controller_spec,
    members_in_source_order,
    merge_groups,
    needs_no_instance,
    route_specs,
)
from .paths import join_paths
from .router import Route

if TYPE_CHECKING:
    from ..di import Container
    from ..events import HttpEvent
    from ..middleware import MiddlewareSet

__all__ = ["ControllerCompiler"]


class ControllerCompiler:
    """Compiles an app's controllers into routes, with the app's services and middlewares.

    Args:
        container: The app's :class:`~workflowhttp.di.Container` (controller classes and
            parameters are injected from it).
        middlewares: The app's :class:`~workflowhttp.middleware.MiddlewareSet` (each route
            gets its chain from it).
    """

    __slots__ = ("container", "middlewares")

    def __init__(self, container: Container, middlewares: MiddlewareSet) -> None:
        self.container = container
        self.middlewares = middlewares

    def compile_routes(self, controller: Any) -> list[Route]:
        """Compile the routes of a controller class, a route function or a mount given to the
        app itself.

        Raises:
            ConfigurationError: the controller declares no routes, a mount holds an
                extension, or a route cannot be compiled.
        """
        return self._controller_routes(controller, _TOP)

    def compile_callable(self, function: Callable[..., Any]) -> Route:
        """Compile a route for a callable a listener claims with ``event.route_found()``: it
        learns its path parameters per request."""
        route = Route("/", ("*",), function)
        self._bind(route, function, None, claimed=True)
        return route

    def _controller_routes(self, controller: Any, scope: _Scope) -> list[Route]:
        """Compile the routes of ``controller`` placed in ``scope`` (the mounts around it)."""
        if isinstance(controller, Mount):
            inner = scope.within(controller)
            routes = []
            for item in controller.controllers:
                if is_extension(item):
                    raise ConfigurationError(
                        f"mount {controller.prefix!r}: {item!r} is an extension; give it to "
                        f"App(controllers=[...]) or App(extensions=[...]) itself"
                    )
                routes.extend(self._controller_routes(item, inner))
            return routes
        if isinstance(controller, type):
            routes = self._class_routes(controller, scope)
        else:
            routes = self._function_routes(controller, scope)
        if not routes:
            raise ConfigurationError(f"controller {controller!r} declares no routes")
        return routes

    def _function_routes(self, function: Any, scope: _Scope) -> list[Route]:
        specs = route_specs(function)
        routes = []
        for spec in specs:
            route = Route(
                join_paths(scope.prefix, spec.path),
                spec.methods,
                function,
                name=spec.route_name,
                groups=merge_groups(scope.groups, spec.groups),
                data=spec.route_data,
                description=spec.route_description,
            )
            scope.place(route)
            self._bind(route, function, None)
            route.middlewares = self.middlewares.for_route(
                route, scope.middlewares, spec.middlewares
            )
            routes.append(route)
        return routes

    def _class_routes(self, cls: type, scope: _Scope) -> list[Route]:
        spec = controller_spec(cls)
        base = join_paths(scope.prefix, spec.base if spec else "")
        class_groups = merge_groups(scope.groups, spec.groups if spec else ())
        class_middlewares = (*scope.middlewares, *(spec.middlewares if spec else ()))
        factory = None
        routes = []
        for name, member in members_in_source_order(cls):
            for route_spec in route_specs(member):
                if factory is None:
                    factory = self.container.constructor(
                        cls, consumer=cls.__qualname__, request_scope=True
                    )
                route = Route(
                    join_paths(base, route_spec.path),
                    route_spec.methods,
                    member,
                    name=route_spec.route_name,
                    groups=merge_groups(class_groups, route_spec.groups),
                    data=route_spec.route_data,
                    description=route_spec.route_description,
                    controller=cls,
                )
                scope.place(route)
                # A staticmethod or a classmethod (bound to the class by getattr) needs no
                # instance: the controller is not built for it.
                self._bind(route, member, None if needs_no_instance(cls, name) else factory)
                route.middlewares = self.middlewares.for_route(
                    route, class_middlewares, route_spec.middlewares
                )
                routes.append(route)
        return routes

    def _bind(
        self,
        route: Route,
        function: Callable[..., Any],
        factory: Any,
        *,
        claimed: bool = False,
    ) -> None:
        """Compile the route's parameter plan and the callable that runs its controller.

        A ``claimed`` route (compiled for ``event.route_found()``) learns its path parameters
        per request.
        """
        if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
            raise ConfigurationError(f"{route.name}: async controllers need an ASGI server")
        plan = build_plan(
            function,
            None if claimed else route.param_names,
            self.container,
            skip_first=factory is not None,
        )
        route.plan = plan
        route.invoke = _invoker(function, factory, bool(plan.resolvers))


class _Scope(NamedTuple):
    """Where the mounts around a controller put its routes (their prefixes, names, groups,
    middlewares, the outer mount's first)."""

    prefix: str
    name: str  # "v1." (or "api.v1." when nested), "" outside named mounts
    groups: tuple[str, ...]
    middlewares: tuple[Any, ...]

    def within(self, mount: Mount) -> _Scope:
        """The scope of ``mount``'s controllers, ``mount`` being in this one."""
        return _Scope(
            join_paths(self.prefix, mount.prefix) if self.prefix else mount.prefix,
            f"{self.name}{mount.name}." if mount.name else self.name,
            merge_groups(self.groups, mount.groups),
            (*self.middlewares, *mount.middlewares),
        )

    def place(self, route: Route) -> None:
        """Give ``route`` the mounts' name prefix, and say where it is mounted."""
        if self.name:
            route.name = self.name + route.name
        if self.prefix:
            route.mounted = join_paths("", self.prefix)


_TOP = _Scope("", "", (), ())
"""The scope of a controller given to the app itself: no mount."""


def _invoker(
    function: Callable[..., Any], factory: Callable[[Any], Any] | None, has_parameters: bool
) -> Callable[[HttpEvent], Any]:
    # PERF: one specialised closure per route, chosen at start-up.
    if factory is None:
        if has_parameters:
            return lambda event: function(**event.parameters)
        return lambda event: function()
    if has_parameters:
        return lambda event: function(factory(event), **event.parameters)
    return lambda event: function(factory(event))
