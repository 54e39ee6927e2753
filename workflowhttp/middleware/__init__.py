"""Middleware: incoming/outgoing steps around the controller, run as workflow listeners.

A middleware is an object (or a class, built once with its constructor dependencies injected)
with ``incoming(event)`` and/or ``outgoing(event)``::

    class Timing:
        def incoming(self, event):
            event.store["started"] = time.perf_counter()

        def outgoing(self, event):
            spent = time.perf_counter() - event.store["started"]
            event.response.headers["Server-Timing"] = f"app;dur={spent * 1000:.1f}"

    app = App(controllers=[...], middlewares=[Timing, Middleware(Audit, groups=["admin"])])

The chain, stated once:

* **Where.** Global middlewares without filters run in ``request`` (for every request, also
  the ones no route matches). Filtered global middlewares, a controller's
  (``@http.controller(...).middleware(...)``) and a route's (``http.GET(...).middleware(...)``)
  run once the route is known, in ``auth`` just before the kernel moves on (after user ``auth``
  listeners: a request they deny runs none of them).
* **Order.** By ``priority`` (default 0, lower first), then global before controller before
  route, then registration order.
* **Short-circuit.** An ``incoming`` that returns a response ends the chain: the controller is
  not called and that response is sent. One that schedules a state itself
  (``event.access_denied()``) ends it too. Returning anything but a response or ``None`` is a
  :class:`~workflowhttp.errors.ConfigurationError` (a logged 500).
* **Outgoing.** In ``response``, after rendering, the ``outgoing`` steps run in reverse order
  for every middleware whose incoming step was reached, the one that ended the chain
  included. Each may change ``event.response`` or return a response to replace it.
* **Errors.** An exception in a middleware is handled like a controller's: an ``HTTPError``
  keeps its status, ``AccessDenied`` answers 403, anything else is a logged 500; never a 404.

Filters (``Middleware(target, groups=..., names=..., paths=..., methods=..., controllers=...,
exclude_...=...)``) are resolved once per route at start-up. ``names`` and ``paths`` are
shell-style patterns (``"admin.*"``, ``"/api/*"``); a route is selected when it matches every
given filter and none of the exclusions.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..events import check_listener, check_signature, lazy_method
from ..settings import check_priority

if TYPE_CHECKING:
    from ..di import Container
    from ..events import HttpEvent
    from ..routing import Route

__all__ = ["Middleware"]

Step = Callable[["HttpEvent"], Any]

_GLOBAL, _CONTROLLER, _ROUTE = 0, 1, 2


class Middleware:
    """A middleware with a priority and, optionally, the routes it applies to.

    Args:
        target: A class (built once, constructor injected) or an instance.
        priority: Lower runs first (default 0).
        groups, names, paths, methods, controllers: Apply only to routes in one of these
            groups / whose name or path matches one of these patterns / answering one of these
            methods / of one of these controller classes.
        exclude_groups, exclude_names, exclude_paths, exclude_methods, exclude_controllers:
            Never apply to such routes.
    """

    __slots__ = ("target", "priority", "include", "exclude")

    def __init__(
        self,
        target: Any,
        *,
        priority: int = 0,
        groups: Iterable[str] = (),
        names: Iterable[str] = (),
        paths: Iterable[str] = (),
        methods: Iterable[str] = (),
        controllers: Iterable[type] = (),
        exclude_groups: Iterable[str] = (),
        exclude_names: Iterable[str] = (),
        exclude_paths: Iterable[str] = (),
        exclude_methods: Iterable[str] = (),
        exclude_controllers: Iterable[type] = (),
    ) -> None:
        if isinstance(target, Middleware):
            raise ConfigurationError("Middleware(...) wraps a middleware, not another wrapper")
        self.target = target
        self.priority = check_priority("middleware", priority)
        self.include = _Filter(groups, names, paths, methods, controllers)
        self.exclude = _Filter(
            exclude_groups, exclude_names, exclude_paths, exclude_methods, exclude_controllers
        )

    @property
    def filtered(self) -> bool:
        """Whether the middleware applies to selected routes only."""
        return bool(self.include or self.exclude)

    def selects(self, route: Route) -> bool:
        """Return whether the middleware applies to ``route``."""
        if self.include and not self.include.matches_all(route):
            return False
        return not (self.exclude and self.exclude.matches_any(route))

    def __repr__(self) -> str:
        return f"Middleware({_name(self.target)}, priority={self.priority})"


class _Filter:
    __slots__ = ("groups", "names", "paths", "methods", "controllers")

    def __init__(
        self,
        groups: Iterable[str],
        names: Iterable[str],
        paths: Iterable[str],
        methods: Iterable[str],
        controllers: Iterable[type],
    ) -> None:
        for value in (groups, names, paths, methods):
            if isinstance(value, str):
                raise ConfigurationError(f"middleware filters are lists, not the string {value!r}")
        self.groups = frozenset(groups)
        self.names = tuple(names)
        self.paths = tuple(paths)
        self.methods = frozenset(m.upper() for m in methods)
        self.controllers = tuple(controllers)

    def __bool__(self) -> bool:
        return bool(self.groups or self.names or self.paths or self.methods or self.controllers)

    def _checks(self, route: Route) -> list[bool]:
        checks = []
        if self.groups:
            checks.append(not self.groups.isdisjoint(route.groups))
        if self.names:
            checks.append(any(fnmatchcase(route.name, pattern) for pattern in self.names))
        if self.paths:
            checks.append(any(fnmatchcase(route.path, pattern) for pattern in self.paths))
        if self.methods:
            checks.append("*" in route.methods or not self.methods.isdisjoint(route.methods))
        if self.controllers:
            checks.append(route.controller in self.controllers)
        return checks

    def matches_all(self, route: Route) -> bool:
        return all(self._checks(route))

    def matches_any(self, route: Route) -> bool:
        return any(self._checks(route))


class CompiledMiddleware:
    """One built middleware: its bound steps, ready for the chain."""

    __slots__ = ("name", "incoming", "outgoing")

    def __init__(self, name: str, incoming: Step | None, outgoing: Step | None) -> None:
        self.name = name
        self.incoming = incoming
        self.outgoing = outgoing

    def __repr__(self) -> str:
        return f"<middleware {self.name}>"


class MiddlewareSet:
    """The app's middlewares, built and sorted at start-up.

    Args:
        container: Builds middleware classes with their dependencies injected.
        global_items: ``App(middlewares=[...])``.
    """

    def __init__(self, container: Container, global_items: Iterable[Any]) -> None:
        self._container = container
        self._built: dict[int, tuple[Any, CompiledMiddleware]] = {}
        self._sequence = 0
        unfiltered: list[tuple[tuple[int, int, int], CompiledMiddleware]] = []
        self._filtered: list[tuple[tuple[int, int, int], Middleware, CompiledMiddleware]] = []
        for item in global_items:
            spec = _spec(item)
            compiled = self._build(spec.target)
            order = (spec.priority, _GLOBAL, self._next())
            if spec.filtered:
                self._filtered.append((order, spec, compiled))
            else:
                unfiltered.append((order, compiled))
        unfiltered.sort(key=lambda entry: entry[0])
        self.unfiltered = tuple(compiled for _, compiled in unfiltered)
        """The chain run in ``request``, for every request."""

    def for_route(
        self, route: Route, controller_items: Iterable[Any], route_items: Iterable[Any]
    ) -> tuple[CompiledMiddleware, ...]:
        """Return the chain that runs once ``route`` is known."""
        chain = [
            (order, compiled) for order, spec, compiled in self._filtered if spec.selects(route)
        ]
        for level, items in ((_CONTROLLER, controller_items), (_ROUTE, route_items)):
            for item in items:
                spec = _spec(item)
                if spec.filtered and not spec.selects(route):
                    continue
                chain.append(((spec.priority, level, self._next()), self._build(spec.target)))
        chain.sort(key=lambda entry: entry[0])
        return tuple(compiled for _, compiled in chain)

    @property
    def empty(self) -> bool:
        """Whether the app has no middleware at all (then none of this runs)."""
        return not self._built

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence

    def _build(self, target: Any) -> CompiledMiddleware:
        """Build ``target`` once per app (a class is instantiated with injection)."""
        known = self._built.get(id(target))
        if known is not None and known[0] is target:
            return known[1]
        if isinstance(target, type):
            # Built on first use, in the worker: not here, before gunicorn forks.
            instance = self._container.lazy(target, consumer=f"middleware {target.__qualname__}")
            incoming = _class_step(target, instance, "incoming")
            outgoing = _class_step(target, instance, "outgoing")
        else:
            incoming = _step(target, "incoming")
            outgoing = _step(target, "outgoing")
        if incoming is None and outgoing is None:
            raise ConfigurationError(
                f"middleware {_name(target)} has neither incoming(event) nor outgoing(event)"
            )
        compiled = CompiledMiddleware(_name(target), incoming, outgoing)
        self._built[id(target)] = (target, compiled)
        return compiled


def _spec(item: Any) -> Middleware:
    return item if isinstance(item, Middleware) else Middleware(item)


def _step(instance: Any, name: str) -> Step | None:
    step = getattr(instance, name, None)
    if step is None:
        return None
    if not callable(step):
        raise ConfigurationError(f"middleware {_name(instance)}.{name} is not callable")
    return check_listener(step)


def _class_step(cls: type, instance: Callable[[], Any], name: str) -> Step | None:
    step = getattr(cls, name, None)
    if step is None:
        return None
    if not callable(step):
        raise ConfigurationError(f"middleware {cls.__qualname__}.{name} is not callable")
    qualname = f"{cls.__qualname__}.{name}"
    if isinstance(inspect.getattr_static(cls, name), (staticmethod, classmethod)):
        return check_listener(step)
    check_signature(step, qualname, (None, None))
    return lazy_method(instance, name, qualname)


def _name(target: Any) -> str:
    cls = target if isinstance(target, type) else type(target)
    return cls.__qualname__
