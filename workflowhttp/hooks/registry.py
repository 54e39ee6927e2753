"""Each worker's in-memory index of the hooks, kept in step with the storage.

Requests read only :attr:`Registry.routes` (a :class:`RouteIndex`, replaced whole on each
reload, so a request never sees half a change). A thread per worker waits for the storage to
say something changed (SQLite: ``PRAGMA data_version`` polled; Redis: pub/sub), reloads, and
also reloads every ``reload_interval`` seconds whatever it heard (a missed message heals) and
sweeps expired records every ``sweep_interval`` seconds. While the storage is unreachable the
index stays as it was: requests keep being answered, and it catches up once the storage is
back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from .specs import (
    AllowedDestinations,
    HeaderRule,
    ListenerSpec,
    RouteSpec,
    compile_pattern,
    is_local,
    listener_id_problems,
    listener_problems,
    route_problems,
)
from .storage import Record, Storage, StorageUnavailable

__all__ = ["ListenerHook", "ListenerIndex", "Registry", "RouteHook", "RouteIndex"]

logger = logging.getLogger("workflowhttp.hooks")

_decode_route = msgspec.json.Decoder(RouteSpec).decode
_decode_listener = msgspec.json.Decoder(ListenerSpec).decode


class RouteHook:
    """A compiled route hook: what it matches and where it forwards.

    Attributes:
        resource: The hooked path (decoded, no trailing slash).
        spec: The registration as validated.
        expires_at: Wall-clock expiry (``None``: never).
        local: Whether the destination is a path of this app (dispatched in process).
        proxy: The :class:`~workflowhttp.proxy.Proxy` that forwards its requests (made by
            :class:`~workflowhttp.hooks.Hooks`).
    """

    __slots__ = (
        "resource",
        "spec",
        "expires_at",
        "methods",
        "headers_filter",
        "rules",
        "translate",
        "local",
        "proxy",
    )

    def __init__(self, resource: str, spec: RouteSpec, expires_at: float | None) -> None:
        self.resource = resource
        self.spec = spec
        self.expires_at = expires_at
        self.methods = frozenset(spec.methods) if spec.methods else None
        self.headers_filter = (
            compile_pattern(spec.headersFilter) if spec.headersFilter is not None else None
        )
        self.rules = tuple(_rule(rule) for rule in spec.headers)
        self.translate = tuple(
            (compile_pattern(pattern), status) for pattern, status in spec.translateStatus.items()
        )
        self.local = is_local(spec.destination)
        self.proxy: Any = None

    def applies(self, method: str, environ: dict[str, Any]) -> bool:
        """Return whether the request's method and headers are the hook's."""
        if self.methods is not None and method not in self.methods:
            return False
        pattern = self.headers_filter
        return pattern is None or any(
            pattern.fullmatch(line) is not None for line in header_lines(environ)
        )

    def translated(self, status: int) -> int:
        """Return the status ``translateStatus`` maps ``status`` to (itself when none does)."""
        text = str(status)
        for pattern, translated in self.translate:
            if pattern.fullmatch(text) is not None:
                return translated
        return status

    def __repr__(self) -> str:
        return f"<RouteHook {self.resource} → {self.spec.destination}>"


def _rule(rule: HeaderRule) -> tuple[str, str | None, str]:
    return rule.header, rule.value or None, rule.mode or "set"


def header_lines(environ: dict[str, Any]) -> list[str]:
    """Return the request's headers as ``name: value`` lines, names in lower case (the form
    ``headersFilter`` regexes match, as Gateleen's do)."""
    lines = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            lines.append(f"{key[5:].lower().replace('_', '-')}: {value}")
    if "CONTENT_TYPE" in environ:
        lines.append(f"content-type: {environ['CONTENT_TYPE']}")
    if "CONTENT_LENGTH" in environ:
        lines.append(f"content-length: {environ['CONTENT_LENGTH']}")
    return lines


#: Up to this many hooked first segments, a request is told apart by one ``startswith`` on
#: their tuple (no slice, no hash); beyond, by its first segment looked up in ``firsts``.
PREFIX_GATE = 16


def prefix_gate(firsts: frozenset[str]) -> tuple[str, ...] | None:
    """``("/orders", ...)``: a path under a hooked collection starts with one of them (so may
    a few others, which the full match then refuses); ``None`` when there are too many."""
    return tuple(sorted(f"/{first}" for first in firsts)) if len(firsts) <= PREFIX_GATE else None


def may_be_hooked(index: RouteIndex | ListenerIndex, raw_path: str) -> bool:
    """Whether a request for ``raw_path`` (undecoded) may be under a hooked collection.

    PERF: the gate of most requests, before the path is decoded. A non-ASCII path may
    decode to a hooked one: it says yes, and the full match decides.
    """
    prefixes = index.prefixes
    if prefixes is not None:
        hooked = raw_path.startswith(prefixes)
    else:
        cut = raw_path.find("/", 1)
        hooked = (raw_path[1:cut] if cut > 0 else raw_path[1:]) in index.firsts
    return hooked or not raw_path.isascii()


class RouteIndex:
    """The route hooks by resource; finds the longest registered prefix of a path.

    The cost of :meth:`find` is bounded by the registered resources' depth, not by the path:
    it looks up at most one prefix per registered depth (a dict lookup each), whatever the
    number of hooks, and scans the path once.
    """

    __slots__ = ("routes", "depths", "deepest", "firsts", "prefixes")

    def __init__(self, routes: dict[str, RouteHook]) -> None:
        self.routes = routes
        self.depths = tuple(sorted({resource.count("/") for resource in routes}, reverse=True))
        self.deepest = self.depths[0] if self.depths else 0
        #: The first segment of every hooked resource: a request whose first segment is none
        #: of them is no hook's, found with one slice and one set lookup.
        self.firsts = frozenset(resource.split("/", 2)[1] for resource in routes)
        self.prefixes = prefix_gate(self.firsts)

    def find(self, method: str, path: str, environ: dict[str, Any]) -> RouteHook | None:
        """Return the hook that claims a request for ``path`` (decoded, no trailing slash)."""
        # The ends of the path's first 1..deepest segments, found in one scan.
        ends: list[int] = []
        position = 0
        deepest = self.deepest
        while len(ends) < deepest:
            position = path.find("/", position + 1)
            if position < 0:
                ends.append(len(path))
                break
            ends.append(position)
        now = 0.0
        routes = self.routes
        for depth in self.depths:
            if depth > len(ends):
                continue
            hook = routes.get(path[: ends[depth - 1]])
            if hook is None:
                continue
            if hook.expires_at is not None:
                now = now or time.time()
                if hook.expires_at <= now:  # expired: never applies, swept or not
                    continue
            if hook.applies(method, environ):
                return hook
        return None

    def __len__(self) -> int:
        return len(self.routes)


_EMPTY = RouteIndex({})


def listener_name(resource: str, id: str) -> str:
    """Return a listener's unique name: its resource's segments and its id joined by ``+``
    (Gateleen's listener ids: ``/data/orders`` and ``audit`` make ``data+orders+audit``)."""
    return "+".join((*resource.strip("/").split("/"), id)) if resource.strip("/") else id


class ListenerHook:
    """A compiled listener hook: what it matches and how its copies are queued.

    Attributes:
        resource: The hooked path (decoded, no trailing slash).
        id: The listener's id (the last segment of its registration path).
        name: Its unique name (:func:`listener_name`).
        queue: Its queue's name (``listener-hook-<name>``; an ``x-queue`` header set by its
            header rules names another).
        spec: The registration as validated.
        expires_at: Wall-clock expiry of the registration (``None``: never).
        after: Whether copies are queued after a 2xx answer (``type: after``), not before.
        payload: Whether copies keep the request's body (not with ``discardPayload`` or
            ``reducedPropagation``).
        interval: Seconds between deliveries of ``reducedPropagation`` (0: no such limit).
        local: Whether the destination is a path of this app (dispatched in process).
    """

    __slots__ = (
        "resource",
        "id",
        "name",
        "queue",
        "spec",
        "expires_at",
        "methods",
        "filter",
        "headers_filter",
        "rules",
        "after",
        "payload",
        "interval",
        "local",
    )

    def __init__(
        self, resource: str, id: str, spec: ListenerSpec, expires_at: float | None
    ) -> None:
        self.resource = resource
        self.id = id
        self.name = listener_name(resource, id)
        self.queue = f"listener-hook-{self.name}"
        self.spec = spec
        self.expires_at = expires_at
        self.methods = frozenset(spec.methods) if spec.methods else None
        self.filter = compile_pattern(spec.filter) if spec.filter is not None else None
        self.headers_filter = (
            compile_pattern(spec.headersFilter) if spec.headersFilter is not None else None
        )
        self.rules = tuple(_rule(rule) for rule in spec.headers)
        self.after = spec.type == "after"
        strategy = spec.queueingStrategy
        self.payload = strategy.type == "default"
        self.interval = (
            (strategy.intervalMs or 0) / 1000 if strategy.type == "reducedPropagation" else 0.0
        )
        self.local = is_local(spec.destination)

    def applies(
        self, method: str, uri: str, lines: list[str] | None, environ: dict[str, Any]
    ) -> bool:
        """Return whether the request's method, URI (``filter``) and headers are the
        listener's; ``lines`` are the request's :func:`header_lines` when computed already."""
        if self.methods is not None and method not in self.methods:
            return False
        if self.filter is not None and self.filter.fullmatch(uri) is None:
            return False
        pattern = self.headers_filter
        if pattern is None:
            return True
        return any(
            pattern.fullmatch(line) is not None
            for line in (lines if lines is not None else header_lines(environ))
        )

    def __repr__(self) -> str:
        return f"<ListenerHook {self.name} → {self.spec.destination}>"


class ListenerIndex:
    """The listener hooks by resource; finds those of a path and of each of its ancestors.

    As :class:`RouteIndex`, the cost of :meth:`find` is one dict lookup per registered depth
    (at most the path's), whatever the number of listeners, plus the matching listeners' own
    checks.
    """

    __slots__ = ("listeners", "depths", "deepest", "firsts", "prefixes", "count")

    def __init__(self, listeners: dict[str, tuple[ListenerHook, ...]]) -> None:
        self.listeners = listeners
        self.depths = tuple(sorted({resource.count("/") for resource in listeners}))
        self.deepest = self.depths[-1] if self.depths else 0
        self.firsts = frozenset(resource.split("/", 2)[1] for resource in listeners)
        self.prefixes = prefix_gate(self.firsts)
        self.count = sum(len(found) for found in listeners.values())

    def find(self, method: str, path: str, uri: str, environ: dict[str, Any]) -> list[ListenerHook]:
        """Return every listener that wants a copy of a request for ``path`` (decoded, no
        trailing slash), the shallowest resource's first; ``uri`` is what ``filter`` sees."""
        ends: list[int] = []
        position = 0
        while len(ends) < self.deepest:
            position = path.find("/", position + 1)
            if position < 0:
                ends.append(len(path))
                break
            ends.append(position)
        found: list[ListenerHook] = []
        lines: list[str] | None = None
        now = 0.0
        for depth in self.depths:
            if depth > len(ends):
                break
            candidates = self.listeners.get(path[: ends[depth - 1]])
            if candidates is None:
                continue
            for listener in candidates:
                if listener.expires_at is not None:
                    now = now or time.time()
                    if listener.expires_at <= now:  # expired: never applies, swept or not
                        continue
                if listener.headers_filter is not None and lines is None:
                    lines = header_lines(environ)
                if listener.applies(method, uri, lines, environ):
                    found.append(listener)
        return found

    def __len__(self) -> int:
        return self.count


_NO_LISTENERS = ListenerIndex({})


def _route_spec(record: Record, allowed: AllowedDestinations) -> RouteSpec:
    """Return the route registration a stored record holds, checked as a registration is.

    Raises:
        ValueError: the record is not one (msgspec's errors are ValueErrors).
    """
    if not record.resource.startswith("/"):
        raise ValueError(f"resource {record.resource[:64]!r} is not a path")
    spec = _decode_route(record.spec)
    problems = route_problems(spec, record.resource, allowed)
    if problems:
        raise ValueError("; ".join(f"{p['path']}: {p['message']}" for p in problems))
    return spec


def _listener_spec(record: Record, allowed: AllowedDestinations) -> ListenerSpec:
    """Return the listener registration a stored record holds, checked as a registration is.

    Raises:
        ValueError: the record is not one.
    """
    if not record.resource.startswith("/"):
        raise ValueError(f"resource {record.resource[:64]!r} is not a path")
    problems = listener_id_problems(record.id)
    if not problems:
        spec = _decode_listener(record.spec)
        problems = listener_problems(spec, record.resource, allowed)
    if problems:
        raise ValueError("; ".join(f"{p['path']}: {p['message']}" for p in problems))
    return spec


def applicable_route(record: Record, allowed: AllowedDestinations) -> RouteSpec | None:
    """Return the route registration of ``record`` if the index would apply it, else None."""
    try:
        return _route_spec(record, allowed)
    except ValueError:
        return None


def applicable_spec(
    record: Record, allowed: AllowedDestinations
) -> RouteSpec | ListenerSpec | None:
    """Return the registration of ``record`` (a route or a listener) if the index would apply
    it, else None."""
    try:
        if record.kind == "route":
            return _route_spec(record, allowed)
        if record.kind == "listener":
            return _listener_spec(record, allowed)
    except ValueError:
        pass
    return None


class Registry:
    """One worker's index of the hooks in ``storage``.

    Args:
        storage: The backend.
        allowed: The allowed external destinations (a stored hook outside them is skipped:
            the list may have shrunk since it was registered).
        make_proxy: Builds the proxy that forwards a route hook's requests.
        on_change: Called with the counts by kind after each reload that changed them.
    """

    def __init__(
        self,
        storage: Storage,
        allowed: AllowedDestinations,
        make_proxy: Callable[[RouteHook], Any],
        *,
        poll_interval: float = 0.2,
        reload_interval: float = 5.0,
        sweep_interval: float = 60.0,
        on_change: Callable[[dict[str, int]], None] | None = None,
        on_listeners: Callable[[bool], None] | None = None,
    ) -> None:
        self.storage = storage
        self.allowed = allowed
        self.make_proxy = make_proxy
        self.poll_interval = poll_interval
        self.reload_interval = reload_interval
        self.sweep_interval = sweep_interval
        self.on_change = on_change
        self.on_listeners = on_listeners
        self.routes: RouteIndex = _EMPTY
        self.listeners: ListenerIndex = _NO_LISTENERS
        # The compiled hook of each stored record, kept while the record is unchanged (a
        # reload recompiles only what changed); None for a record that could not be read.
        self._compiled: dict[tuple[str, str, str], tuple[Record, Any]] = {}
        self._reload_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.loaded = False

    # -- reloading ------------------------------------------------------------------------

    def reload(self) -> None:
        """Rebuild the index from the storage.

        Raises:
            StorageUnavailable: the storage cannot be read (the index stays as it was).
        """
        with self._reload_lock:
            records = self.storage.records()
            compiled: dict[tuple[str, str, str], tuple[Record, Any]] = {}
            routes: dict[str, RouteHook] = {}
            listeners: dict[str, list[ListenerHook]] = {}
            for record in sorted(records, key=lambda r: (r.kind, r.resource, r.id)):
                key = (record.kind, record.resource, record.id)
                known = self._compiled.get(key)
                hook = (
                    known[1] if known is not None and known[0] == record else self._compile(record)
                )
                compiled[key] = (record, hook)
                if isinstance(hook, RouteHook):
                    routes[record.resource] = hook
                elif isinstance(hook, ListenerHook):
                    listeners.setdefault(record.resource, []).append(hook)
            before = None if not self.loaded else (len(self.routes), len(self.listeners))
            had_listeners = bool(self.listeners.depths)
            if listeners and not had_listeners and self.on_listeners is not None:
                self.on_listeners(True)  # subscribed before the index holds any listener
            self._compiled = compiled
            # One assignment each: requests see all of a change or nothing of it.
            self.routes = RouteIndex(routes)
            self.listeners = ListenerIndex(
                {resource: tuple(found) for resource, found in listeners.items()}
            )
            self.loaded = True
            if had_listeners and not listeners and self.on_listeners is not None:
                self.on_listeners(False)  # dropped once the index holds none
            counts = (len(self.routes), len(self.listeners))
        if self.on_change is not None and counts != before:
            self.on_change({"route": counts[0], "listener": counts[1]})

    def _compile(self, record: Record) -> RouteHook | ListenerHook | None:
        """Compile a stored record; a corrupt or foreign one is logged once and skipped."""
        if record.kind not in ("route", "listener"):
            logger.warning("hooks: skipped a stored record of unknown kind %r", record.kind[:64])
            return None
        try:
            if record.kind == "listener":
                return ListenerHook(
                    record.resource,
                    record.id,
                    _listener_spec(record, self.allowed),
                    record.expires_at,
                )
            hook = RouteHook(record.resource, _route_spec(record, self.allowed), record.expires_at)
            hook.proxy = self.make_proxy(hook)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as ex:
            logger.warning(
                "hooks: skipped the stored %s hook on %r: %s",
                record.kind,
                record.resource[:200],
                ex,
            )
            return None
        return hook

    # -- the thread that keeps the index in step ------------------------------------------

    def start(self) -> None:
        """Load the index and start the thread that keeps it in step (in the worker)."""
        self._stopping.clear()
        try:
            self.reload()
        except StorageUnavailable as ex:
            logger.warning(
                "hooks: storage unavailable at start (%s); serving without hooks until it is back",
                ex,
            )
        thread = threading.Thread(target=self._follow, name="workflowhttp-hooks", daemon=True)
        self._thread = thread
        thread.start()

    def stop(self) -> None:
        """Stop the thread and close the storage (which wakes a thread waiting in it)."""
        self._stopping.set()
        self.storage.close()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)

    def _follow(self) -> None:
        last_reload = last_sweep = last_maintenance = time.monotonic()
        failing = not self.loaded
        backoff = self.poll_interval
        while not self._stopping.is_set():
            try:
                changed = self.storage.wait_for_change(self.poll_interval)
                if self._stopping.is_set():
                    return
                now = time.monotonic()
                if changed or failing or now - last_reload >= self.reload_interval:
                    self.reload()
                    last_reload = now
                if now - last_sweep >= self.sweep_interval:
                    self.storage.sweep()
                    last_sweep = now
                if now - last_maintenance >= 1.0:
                    self.storage.maintain()
                    last_maintenance = now
                if failing:
                    logger.warning(
                        "hooks: storage %s is back; the index caught up", self.storage.url
                    )
                failing = False
                backoff = self.poll_interval
            except StorageUnavailable as ex:
                if not failing:
                    logger.warning(
                        "hooks: storage unavailable (%s); serving from the local index", ex
                    )
                failing = True
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:  # never let the thread die: the index would freeze
                logger.exception("hooks: reloading the index failed")
                self._stopping.wait(1.0)
