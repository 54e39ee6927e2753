"""Dependency injection: providers, scopes, and the accessors compiled from them.

``App(providers=[...])`` takes:

* a class: provides itself, built with its constructor's dependencies (by type hint);
* a function with a return annotation: a factory providing that type, its parameters injected;
* any other object: an instance providing its own class;
* ``Provider(type, factory_or_instance, scope="request")`` to be explicit.

Services are singletons (one per app, built on first use, so a gunicorn worker builds its own
after the fork) unless registered with ``scope="request"``: then one instance per request,
cached on the event. A request-scoped factory may take the ``HttpEvent`` or the ``Request``.
Every dependency is checked when the app is built: a type nobody provides, a cycle, or a
singleton depending on a request-scoped service is a ``ConfigurationError``.

A **generator factory** (``def session() -> Iterator[Session]: s = open(); yield s;
s.close()``) provides what it yields, and the code after its ``yield`` is its teardown, as
with pytest fixtures and FastAPI dependencies:

* request-scoped: torn down once the server has closed the response's body (after a streamed
  body has been sent, after an error too), newest first. When the request failed (the error
  that made its 4xx/5xx, ``event.error``), that error is thrown in at the ``yield``, so
  ``try: yield s except Exception: s.rollback()`` rolls back; re-raising it is fine. Any other
  exception of a teardown is logged, never answered: the response is out already.
* singleton: set up once per worker on first use, torn down by ``app.stop()`` (gunicorn's
  ``worker_exit``, the end of ``with TestClient(app):``), newest first. The singletons are then
  built afresh on their next use (an app that serves again after ``stop()``), so none keeps a
  closed resource; listener and middleware classes are built once per app, and keep theirs.

The request side costs nothing to a request that creates no generator service: the teardowns
are recorded in the event's request-scope cache only when one is created.
"""

from __future__ import annotations

import collections.abc
import inspect
import logging
import threading
import typing
from collections.abc import Callable, Generator
from typing import Any

from .errors import ConfigurationError

__all__ = ["TEARDOWNS", "Container", "Provider", "run_teardowns"]

logger = logging.getLogger("workflowhttp")

SINGLETON = "singleton"
REQUEST = "request"
_UNSET: Any = object()

Accessor = Callable[[Any], Any]
"""Return a dependency's value for one request's event (``None`` outside a request)."""

Teardown = tuple[str, Generator[Any, Any, Any]]
"""A generator service waiting for its teardown: the provided type's name, the generator."""

TEARDOWNS: Any = object()
"""The key, in an event's request-scope cache (``event._scoped``), of the request's
:data:`Teardown` list, in the order the services were created; absent when there is none."""

_ITERATORS = (collections.abc.Iterator, collections.abc.Generator, collections.abc.Iterable)


class Provider:
    """Provide ``provides`` from a class, a factory or an instance, in a scope.

    Args:
        provides: The type that parameters are annotated with.
        use: A class or factory called with its dependencies injected, or an instance. Default:
            ``provides`` itself.
        scope: ``"singleton"`` (default) or ``"request"``.
    """

    __slots__ = ("provides", "use", "scope")

    def __init__(self, provides: type, use: Any = _UNSET, *, scope: str = SINGLETON) -> None:
        if scope not in (SINGLETON, REQUEST):
            raise ConfigurationError(f"scope must be 'singleton' or 'request', not {scope!r}")
        if use is _UNSET:
            use = provides
        elif not (isinstance(use, (type, _Instance)) or _is_factory(use)):
            use = _Instance(use)
        self.provides = provides
        self.use = use
        self.scope = scope

    @classmethod
    def of(cls, item: Any) -> Provider:
        """Interpret one entry of ``App(providers=[...])``."""
        if isinstance(item, Provider):
            return item
        if isinstance(item, type):
            return cls(item)
        if _is_factory(item):
            returns = _hints(item).get("return")
            yielded = _yielded(returns)
            if inspect.isgeneratorfunction(item):
                if yielded is not None:
                    returns = yielded  # Iterator[Session] provides Session
                if not isinstance(returns, type):
                    raise ConfigurationError(
                        f"generator factory {item.__qualname__} needs Iterator[T] (or "
                        f"Generator[T, None, None]) as return annotation, T a class"
                    )
            elif yielded is not None:
                raise ConfigurationError(
                    f"factory {item.__qualname__} is annotated to return an iterator but is "
                    f"not a generator function: give the generator function itself (not a "
                    f"@contextmanager), or annotate the class it returns"
                )
            if not isinstance(returns, type):
                raise ConfigurationError(
                    f"factory {item.__qualname__} needs a class as return annotation"
                )
            return cls(returns, item)
        return cls(type(item), _Instance(item))

    def __repr__(self) -> str:
        return f"Provider({self.provides.__name__}, scope={self.scope!r})"


def _is_factory(item: Any) -> bool:
    return inspect.isfunction(item) or inspect.ismethod(item)


def _yielded(annotation: Any) -> Any:
    """Return ``T`` of ``Iterator[T]``, ``Generator[T, ...]`` or ``Iterable[T]``, else None."""
    if typing.get_origin(annotation) in _ITERATORS:
        arguments = typing.get_args(annotation)
        return arguments[0] if arguments else None
    return None


def _is_generator_factory(use: Any) -> bool:
    return not isinstance(use, (type, _Instance)) and inspect.isgeneratorfunction(use)


def _first_value(generator: Generator[Any, Any, Any], name: str) -> Any:
    """Run a generator factory's setup: the value it yields."""
    try:
        return next(generator)
    except StopIteration:
        raise RuntimeError(f"the generator factory of {name} returned without yielding") from None


def run_teardowns(teardowns: list[Teardown], error: BaseException | None) -> None:
    """Run the code after ``yield`` of each generator service in ``teardowns``, newest first.

    ``error``, the request's (``event.error``), is thrown in at each ``yield``; a generator
    that re-raises it is fine. Any other exception is logged, never raised, and the other
    teardowns still run: the response has been sent, nobody could be told. The list is
    emptied, so a second call does nothing.
    """
    while teardowns:
        name, generator = teardowns.pop()
        try:
            if error is None:
                next(generator)
            else:
                generator.throw(error)
        except StopIteration:
            continue
        except Exception as ex:
            if ex is not error:
                logger.exception("the teardown of %s failed", name)
            continue
        finally:
            if error is not None:
                # The throw added the generator's frames (which may hold the event) to the
                # request's error: let them go, as the kernel does once the error is logged.
                error.__traceback__ = None
        logger.error("the generator factory of %s yielded twice; it is closed", name)
        try:
            generator.close()
        except Exception:
            logger.exception("closing the generator factory of %s failed", name)


class _Instance:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _hints(function: Any) -> dict[str, Any]:
    target = function.__init__ if isinstance(function, type) else function  # type: ignore[misc]
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception as ex:
        name = getattr(function, "__qualname__", repr(function))
        raise ConfigurationError(f"cannot resolve the annotations of {name}: {ex}") from None


def _parameters(function: Any) -> list[inspect.Parameter]:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return []
    return [
        p
        for p in signature.parameters.values()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]


class Container:
    """The providers of one app, compiled into accessors."""

    def __init__(self, providers: list[Any], special: dict[type, Accessor]) -> None:
        """Register ``providers``; ``special`` maps per-request types (event, request)."""
        self._providers: dict[type, Provider] = {}
        self._special = special
        self._accessors: dict[type, Accessor] = {}
        self._resolving: list[type] = []
        self._lock = threading.RLock()
        self._cells: list[list[Any]] = []  # the singletons' built-once values
        self._teardowns: list[Teardown] = []  # the generator singletons set up, in order
        for item in providers:
            provider = Provider.of(item)
            if provider.provides in self._providers:
                raise ConfigurationError(f"{provider.provides.__name__} is provided twice")
            self._providers[provider.provides] = provider
        for provides in list(self._providers):
            self.accessor(provides, consumer="the providers", request_scope=True)

    def provides(self, annotation: Any) -> bool:
        """Return whether ``annotation`` is a provided or per-request type."""
        return isinstance(annotation, type) and (
            annotation in self._providers or self._special_for(annotation) is not None
        )

    def _special_for(self, annotation: type) -> Accessor | None:
        # `object` is a base of every class, the event's too: a parameter annotated `object`
        # says nothing of what it wants, so it gets no per-request value silently.
        if annotation is object:
            return None
        for special, accessor in self._special.items():
            try:
                if issubclass(special, annotation) or issubclass(annotation, special):
                    return accessor
            except TypeError:  # TypedDicts and other classes that refuse subclass checks
                return None
        return None

    def accessor(self, annotation: Any, *, consumer: str, request_scope: bool) -> Accessor:
        """Return the accessor of ``annotation``'s value, validating the whole dependency tree.

        Args:
            consumer: Names who asks, for error messages.
            request_scope: Whether the consumer lives per request (else request-scoped
                services and per-request types are refused).
        """
        if not isinstance(annotation, type):
            raise ConfigurationError(f"{consumer}: cannot inject {annotation!r}")
        provider = self._providers.get(annotation)
        if provider is None:
            special = self._special_for(annotation)
            if special is None:
                raise ConfigurationError(
                    f"{consumer}: no provider for {annotation.__qualname__}; "
                    f"add it to App(providers=[...])"
                )
            if not request_scope:
                raise ConfigurationError(
                    f"{consumer}: {annotation.__name__} exists per request, but {consumer} "
                    f"is a singleton"
                )
            return special
        if provider.scope == REQUEST and not request_scope:
            raise ConfigurationError(
                f"{consumer}: {annotation.__name__} is request-scoped, but {consumer} is a "
                f"singleton"
            )
        cached = self._accessors.get(annotation)
        if cached is not None:
            return cached
        if annotation in self._resolving:
            cycle = " → ".join(t.__name__ for t in (*self._resolving, annotation))
            raise ConfigurationError(f"dependency cycle: {cycle}")
        self._resolving.append(annotation)
        try:
            accessor = self._compile(provider)
        finally:
            self._resolving.pop()
        self._accessors[annotation] = accessor
        return accessor

    def constructor(self, use: Any, *, consumer: str, request_scope: bool) -> Accessor:
        """Return an accessor that calls ``use`` with its dependencies injected."""
        arguments: list[tuple[str, Accessor]] = []
        hints = _hints(use)
        for parameter in _parameters(use):
            annotation = hints.get(parameter.name, parameter.annotation)
            if annotation is inspect.Parameter.empty or not self.provides(annotation):
                if parameter.default is not inspect.Parameter.empty:
                    continue
                shown = getattr(annotation, "__qualname__", annotation)
                if annotation is inspect.Parameter.empty:
                    shown = "no annotation"
                raise ConfigurationError(
                    f"{consumer}: cannot inject parameter {parameter.name!r} ({shown}); "
                    f"provide it with App(providers=[...])"
                )
            arguments.append(
                (
                    parameter.name,
                    self.accessor(annotation, consumer=consumer, request_scope=request_scope),
                )
            )
        if not arguments:
            return lambda event: use()
        names = tuple(name for name, _ in arguments)
        getters = tuple(getter for _, getter in arguments)

        def construct(event: Any) -> Any:
            return use(**{name: get(event) for name, get in zip(names, getters, strict=True)})

        return construct

    def lazy(self, use: type, *, consumer: str) -> Callable[[], Any]:
        """Return a function that builds ``use`` (dependencies injected) once, on first call.

        The dependency tree is validated now; nothing is built until the first call, so a
        listener or middleware class and the singletons it needs are made in the worker that
        uses them, after gunicorn's fork, not in the master that imported the app.
        """
        make = self.constructor(use, consumer=consumer, request_scope=False)
        # Not in self._cells: the listener and middleware steps cache the instance's bound
        # methods, so all of them must keep one instance, even after close().
        cell: list[Any] = [_UNSET]
        lock = self._lock

        def build() -> Any:
            value = cell[0]
            if value is _UNSET:
                with lock:
                    value = cell[0]
                    if value is _UNSET:
                        value = cell[0] = make(None)
            return value

        return build

    def _compile(self, provider: Provider) -> Accessor:
        use = provider.use
        name = provider.provides.__qualname__
        request_scope = provider.scope == REQUEST
        if isinstance(use, _Instance):
            value = use.value
            make: Accessor = lambda event: value  # noqa: E731
        else:
            make = self.constructor(use, consumer=name, request_scope=request_scope)
        if _is_generator_factory(use):
            make = self._generator_setup(make, name, request_scope)
        if request_scope:
            key = provider.provides

            def scoped(event: Any) -> Any:
                cache = event._scoped
                if cache is None:
                    cache = event._scoped = {}
                value = cache.get(key, _UNSET)
                if value is _UNSET:
                    value = cache[key] = make(event)
                return value

            return scoped
        if isinstance(use, _Instance):
            return make
        cell: list[Any] = [_UNSET]
        self._cells.append(cell)
        lock = self._lock

        def singleton(event: Any) -> Any:
            value = cell[0]
            if value is _UNSET:
                with lock:  # built once per process, on first use (after gunicorn's fork)
                    value = cell[0]
                    if value is _UNSET:
                        value = cell[0] = make(None)
            return value

        return singleton

    def _generator_setup(self, make: Accessor, name: str, request_scope: bool) -> Accessor:
        """Wrap a generator factory: run it to its ``yield``, record it for its teardown."""
        if request_scope:

            def setup_for_request(event: Any) -> Any:
                generator = make(event)
                value = _first_value(generator, name)
                # The scoped accessor made the cache before calling us. PERF: only a request
                # that creates a generator service gets a teardown list.
                cache = event._scoped
                teardowns = cache.get(TEARDOWNS)
                if teardowns is None:
                    teardowns = cache[TEARDOWNS] = []
                teardowns.append((name, generator))
                return value

            return setup_for_request
        teardowns = self._teardowns

        def setup_once(event: Any) -> Any:  # called under the lock, once per worker
            generator = make(event)
            value = _first_value(generator, name)
            teardowns.append((name, generator))
            return value

        return setup_once

    def close(self) -> None:
        """Tear down the generator singletons set up so far, newest first (``app.stop()``).

        When there were any, every singleton is built again on its next use: none of them
        keeps a resource that is closed now. (Listener and middleware classes cache their
        bound methods, so they keep the instance they were built with.)
        """
        with self._lock:
            teardowns = self._teardowns[:]
            self._teardowns.clear()
            if teardowns:
                for cell in self._cells:
                    cell[0] = _UNSET
        run_teardowns(teardowns, None)
