"""The :class:`Hooks` extension: the registration routes, the route listener, the lifecycle."""

from __future__ import annotations

import contextlib
import datetime
import io
import logging
import time
from typing import Annotated, Any

import msgspec
import urllib3
from werkzeug.datastructures import Headers

from ..error_responses import loggable
from ..errors import (
    ConfigurationError,
    NotFound,
    ParametersFailed,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from ..events import HttpEvent
from ..extensions import Extension
from ..params import Body, Header, Query
from ..proxy.headers import request_headers
from ..proxy.kernel import KERNEL as PROXY_KERNEL
from ..proxy.upstreams import LazyClient
from ..reading import read_body
from ..responses import JSONResponse, status_of
from ..routing import Miss, Route, Router, http
from ..settings import check_positive_ints, check_positive_numbers
from ..stream.events import HooksChanged
from ..workflow import CONTROLLER, METHOD_NOT_ALLOWED, ROUTE, ROUTE_NOT_FOUND
from .delivery import Copy, Deliverer, encode_copy
from .forwarding import CHAIN, MAX_CHAIN, HookProxy, LoopDetected, apply_header_rules, path_below
from .registry import (
    ListenerHook,
    Registry,
    RouteHook,
    applicable_spec,
    listener_name,
    may_be_hooked,
)
from .specs import (
    AllowedDestinations,
    ListenerSpec,
    RouteSpec,
    expiry,
    listener_id_problems,
    parse_listener,
    parse_route,
)
from .storage import Entry, Record, Storage, StorageUnavailable, open_storage

__all__ = ["HOOK", "Hooks", "HooksChanged"]

logger = logging.getLogger("workflowhttp.hooks")

#: The environ key holding the :class:`RouteHook` that claimed a request.
HOOK = "workflowhttp.hook"
_MiB = 1024 * 1024
#: The longest queue name an ``x-queue`` header may give.
MAX_QUEUE_NAME = 200


class Hooks(Extension):
    """Hooks registered over HTTP at run time (after Gateleen's hook handler; DESIGN.md §8).

    ``PUT <resource>/_hooks/route`` with ``{"destination": ...}`` forwards every request to the
    resource and below it to the destination (a local path, answered in process, or an
    external URL under ``allowed_destinations``) through the proxy's machinery. See
    ``docs/hooks.md``.

    Args:
        storage: ``"sqlite:///path"`` (default: ``hooks.sqlite3`` in the working directory;
            one file per machine), ``"redis://host:port/db"`` (the ``redis`` extra; shared by
            every machine), or a :class:`~workflowhttp.hooks.storage.Storage`.
        allowed_destinations: External URLs hooks may forward to (each allows the paths below
            it); none by default: only local paths.
        root: The path under which hooks are registered and apply.
        poll_interval: Seconds between checks for changes made by other workers (SQLite).
        reload_interval: Seconds between full reloads whatever was heard (a missed Redis
            message heals).
        sweep_interval: Seconds between removals of expired hooks from the storage.
        pool_size: Keep-alive connections kept per external destination.
        max_buffer: Most bytes a proxy listener may buffer of a hooked answer.
        default_expiry: Seconds a hook lives without ``X-Expire-After`` (Gateleen's hour).
        lease: Seconds a worker holds a listener's queue without renewing its lease: how long
            a queue waits after its worker died before another delivers it.
        delivery_concurrency: Queues each worker delivers at the same time.
        retry_delay: Seconds before the first retry of a failed delivery (doubling after).
        max_retry_delay: The most seconds between two retries.
    """

    def __init__(
        self,
        storage: str | Storage = "sqlite:///hooks.sqlite3",
        *,
        allowed_destinations: list[str] | tuple[str, ...] = (),
        root: str = "/",
        poll_interval: float = 0.2,
        reload_interval: float = 5.0,
        sweep_interval: float = 60.0,
        pool_size: int = 32,
        max_buffer: int = 10 * _MiB,
        default_expiry: int = 3600,
        lease: float = 10.0,
        delivery_concurrency: int = 8,
        retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
    ) -> None:
        if not isinstance(root, str) or not root.startswith("/"):
            raise ConfigurationError(f"hooks root must be a path starting with '/': {root!r}")
        if isinstance(allowed_destinations, str):
            allowed_destinations = [allowed_destinations]
        try:
            self.allowed = AllowedDestinations(allowed_destinations)
        except ValueError as ex:
            raise ConfigurationError(str(ex)) from None
        # Durations in seconds: the registry's, then the deliverer's.
        check_positive_numbers(
            "hooks", poll_interval=poll_interval, reload_interval=reload_interval
        )
        check_positive_numbers("hooks", sweep_interval=sweep_interval, lease=lease)
        check_positive_numbers("hooks", retry_delay=retry_delay, max_retry_delay=max_retry_delay)
        self.root = root.rstrip("/") + "/"
        self.storage = open_storage(storage)
        self.pool_size = pool_size
        self.max_buffer = max_buffer
        self.default_expiry = default_expiry
        self.registry = Registry(
            self.storage,
            self.allowed,
            self._make_proxy,
            poll_interval=poll_interval,
            reload_interval=reload_interval,
            sweep_interval=sweep_interval,
            on_change=self._changed,
            on_listeners=self._listen_for_copies,
        )
        check_positive_ints("hooks", delivery_concurrency=delivery_concurrency)
        self.deliverer = Deliverer(
            self,
            lease=lease,
            concurrency=delivery_concurrency,
            poll_interval=poll_interval,
            retry_delay=retry_delay,
            max_retry_delay=max_retry_delay,
        )
        self._client = LazyClient(64, pool_size)
        self._app: Any = None
        self._registration = Router()
        self._forward_route: Route | None = None
        self.controllers = self._routes()
        self._copying = False  # whether listener hooks exist: see kernel

    @property
    def kernel(self) -> tuple[tuple[str, int, Any], ...]:  # type: ignore[override]
        """The route listener, the copying one while listener hooks exist, and the proxy
        workflow's kernel (hooked requests are proxy transactions; the app dedupes it when a
        Proxy brings it too).

        Listener hooks copy requests on entering ``controller`` (after auth and parameters: a
        request refused there changes nothing, so nobody is told of it). PERF: without any,
        that listener is not subscribed at all (``app.recompile()`` adds and drops it).
        """
        copying = ((CONTROLLER, 50, self._on_controller),) if self._copying else ()
        return ((ROUTE, 50, self._on_route), *copying, *PROXY_KERNEL)

    def _listen_for_copies(self, wanted: bool) -> None:
        """The registry's index gains its first listener hook or loses its last."""
        self._copying = wanted
        if self._app is not None:
            self._app.recompile()

    # -- the lifecycle --------------------------------------------------------------------

    def start(self, app: Any) -> None:
        """Open the storage, load the index, start following changes (in each worker)."""
        self._app = app
        mine = [route for route in app.router.routes if route.data.get("hooks") is self]
        self._registration = Router()
        self._registration.add(*mine)
        # _on_route matches them with the router above, before the app's router is asked:
        # PERF: the app's router need not search them on every request it misses.
        app.router.detach(*mine)
        route = app.router.adopt(self._forward)
        route.name = "hooks.forward"
        route.groups = ("hooked",)
        self._forward_route = route
        self.storage.open()
        self.registry.start()
        self.deliverer.start()

    def stop(self, app: Any) -> None:
        self.deliverer.stop()
        self.registry.stop()  # closes the storage, which wakes the thread at once
        self._client.clear()

    @property
    def app(self) -> Any:
        """The app the hooks run in (once started)."""
        return self._app

    @property
    def stream(self) -> Any:
        """The app's event stream, when it has one."""
        return self._app.stream if self._app is not None else None

    @property
    def client(self) -> urllib3.PoolManager:
        """The worker's pooled client for external destinations, made on first use."""
        return self._client.get()

    def _make_proxy(self, hook: RouteHook) -> HookProxy:
        return HookProxy(hook, self)

    def _changed(self, counts: dict[str, int]) -> None:
        stream = self._app.stream if self._app is not None else None
        if stream is not None:
            for kind, count in counts.items():
                stream.send(HooksChanged(kind, count), key="hooks")

    # -- requests -------------------------------------------------------------------------

    def _on_route(self, event: HttpEvent) -> None:
        """Claim registration requests, then hooked ones (``route``, priority 50)."""
        raw_path = event.environ.get("PATH_INFO") or "/"
        # PERF: most requests are neither registrations nor under a hooked collection.
        if event._next is None and (
            "/_hooks" in raw_path or may_be_hooked(self.registry.routes, raw_path)
        ):
            self._claim(event, raw_path)

    def _claim(self, event: HttpEvent, raw_path: str) -> None:
        """Route a request that may be a registration or hooked (see :meth:`_on_route`)."""
        environ = event.environ
        if "/_hooks" in raw_path:
            # Registration requests are the hooks' own routes, whatever the app's routes
            # (a catch-all never shadows them), and are never hooked themselves.
            path = self._registration.request_path(environ)
            found = self._registration.match(environ["REQUEST_METHOD"], path)
            if not isinstance(found, Miss):
                event.route_found(*found)
                return
            allowed = found.allowed
            if "/_hooks/" in path + "/" and (path + "/").startswith(self.root):
                # The registration namespace: what is no registration route there is refused,
                # never served by a catch-all or forwarded by a hook of the resource.
                if allowed:
                    event.allowed_methods = allowed
                    event.next(METHOD_NOT_ALLOWED)
                else:
                    event.next(ROUTE_NOT_FOUND)
                return
        routes = self.registry.routes
        if not routes.depths:
            return
        path = self._registration.request_path(environ)
        if not path.startswith(self.root) and path + "/" != self.root:
            return
        hook = routes.find(environ["REQUEST_METHOD"], path, environ)
        if hook is None:
            return
        # SECURITY: an in-process request carries the hooks it came through: coming back to
        # one (or too long a chain) is a 508 at once, never an endless recursion.
        chain = environ.get(CHAIN, ())
        if hook.resource in chain or len(chain) >= MAX_CHAIN:
            raise LoopDetected(f"the request came back to the hook on {hook.resource}")
        environ[HOOK] = hook
        event.route_found(self._forward_route)  # type: ignore[arg-type]

    def _forward(self, event: HttpEvent) -> Any:
        hook: RouteHook = event.environ[HOOK]
        return hook.proxy.handle(event)

    def _on_controller(self, event: HttpEvent) -> None:
        """Queue the copies of a request the listener hooks want (``controller``, 50)."""
        if event._next is not None:
            return
        index = self.registry.listeners
        if not index.depths:  # PERF: no listener hook: one attribute read and out
            return
        environ = event.environ
        if not may_be_hooked(index, environ.get("PATH_INFO") or "/"):
            return
        route = event.route
        if route is not None and route.data.get("hooks") is self:
            return  # registration requests are never hooked
        path = self._registration.request_path(environ)
        if not path.startswith(self.root) and path + "/" != self.root:
            return
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
        query = environ.get("QUERY_STRING", "")
        uri = str(raw) if raw else (path + (f"?{query}" if query else ""))
        found = index.find(environ["REQUEST_METHOD"], path, uri, environ)
        if not found:
            return
        # SECURITY: a copy delivered in process carries the listeners it came through: it is
        # never copied to one of them again (two listeners delivering to each other's
        # resources would otherwise copy forever), nor beyond MAX_CHAIN hooks.
        chain = environ.get(CHAIN, ())
        found = [listener for listener in found if listener.name not in chain]
        if not found or len(chain) >= MAX_CHAIN:
            return
        body = b""
        if any(listener.payload for listener in found):
            body = read_body(event)  # bounded by max_content_length
            # Whoever reads the body next (a controller, a route hook's proxy) reads it again.
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        now = time.time()
        lines = _copied_headers(event)  # once, however many listeners
        before = [self._entry(lst, event, path, body, lines, now) for lst in found if not lst.after]
        after = [self._entry(lst, event, path, body, lines, now) for lst in found if lst.after]
        if before:
            try:
                self.storage.enqueue(before)
            except StorageUnavailable as ex:
                logger.warning("hooks: a request refused, its copies could not be queued: %s", ex)
                raise ServiceUnavailable(
                    "hooks storage unavailable; the request was not processed"
                ) from None
            self.deliverer.wake([entry.queue for entry in before])
        if after:
            event.call_on_close(lambda: self._queue_after(event, after))

    def _queue_after(self, event: HttpEvent, entries: list[Entry]) -> None:
        """Queue the ``after`` listeners' copies once the request answered 2xx."""
        response = event.response
        if response is None or not 200 <= status_of(response) < 300:
            return
        try:
            self.storage.enqueue(entries)
        except StorageUnavailable as ex:
            logger.error(
                "hooks: %d copies for after listeners lost (storage unavailable): %s",
                len(entries),
                ex,
            )
            return
        self.deliverer.wake([entry.queue for entry in entries])

    def _entry(
        self,
        listener: ListenerHook,
        event: HttpEvent,
        path: str,
        body: bytes,
        lines: list[tuple[str, str]],
        now: float,
    ) -> Entry:
        """Return the queue entry of ``listener``'s copy of the request, whose headers are
        ``lines`` (:func:`_copied_headers`) before the listener's rules."""
        environ = event.environ
        spec = listener.spec
        queue = listener.queue
        give_up: list[str] = []
        if listener.rules:
            headers = Headers(lines)
            apply_header_rules(listener.rules, headers, environ)
            named = headers.pop("X-Queue", None)
            # SECURITY: a queue named by a header is a bounded, printable name.
            if named and len(named) <= MAX_QUEUE_NAME and named.isprintable() and named.isascii():
                queue = named
            lines = []
            for name, value in headers.items():
                lower = name.lower()
                if lower.startswith("x-queue-retry-"):
                    if value.strip() == "0":
                        give_up.append(lower[len("x-queue-retry-") :])
                else:
                    lines.append((name, value))
        if not listener.payload:
            body = b""
        destination = spec.destination.rstrip("/")
        suffix = "" if spec.fullUrl else path_below(environ, listener.resource)
        query = environ.get("QUERY_STRING", "")
        url = (destination + suffix or "/") + (f"?{query}" if query else "")
        copy = Copy(
            listener.name,
            environ["REQUEST_METHOD"],
            url,
            lines,
            body,
            environ.get("REMOTE_ADDR", ""),
            environ.get("HTTP_HOST", ""),
            [*environ.get(CHAIN, ()), listener.name],
            spec.timeout,
            give_up,
            listener.interval,
        )
        seconds = spec.queueExpireAfter
        return Entry(
            queue,
            encode_copy(copy),
            None if seconds is None or seconds < 0 else now + seconds,
            now + listener.interval if listener.interval else 0.0,
            listener.interval > 0,
        )

    # -- registration ---------------------------------------------------------------------

    def _routes(self) -> tuple[Any, ...]:
        hooks = self
        resource_path = f"{self.root}{{resource:path}}/_hooks/route"

        def register_route(
            event: HttpEvent,
            resource: str,
            body: Annotated[bytes, Body()],
            expire_after: Annotated[str | None, Header("X-Expire-After")] = None,
        ) -> JSONResponse:
            """Register (or replace) the route hook of a resource."""
            return hooks._register(
                event, "route", hooks._resource(resource), "", body, expire_after
            )

        def show_route(resource: str) -> JSONResponse:
            """Return the route hook registered on a resource."""
            return hooks._show("route", hooks._resource(resource), "")

        def unregister_route(event: HttpEvent, resource: str) -> JSONResponse:
            """Remove the route hook of a resource (404 when there was none)."""
            return hooks._unregister(event, "route", hooks._resource(resource), "")

        def list_routes(q: Annotated[str, Query()] = "") -> JSONResponse:
            """List the route hooks; ``q`` keeps those whose destination holds it."""
            return hooks._list("route", q)

        listener_path = f"{self.root}{{resource:path}}/_hooks/listeners/http/{{id}}"

        def register_listener(
            event: HttpEvent,
            resource: str,
            id: str,
            body: Annotated[bytes, Body()],
            expire_after: Annotated[str | None, Header("X-Expire-After")] = None,
        ) -> JSONResponse:
            """Register (or replace) a listener hook of a resource."""
            return hooks._register(
                event, "listener", hooks._resource(resource), id, body, expire_after
            )

        def show_listener(resource: str, id: str) -> JSONResponse:
            """Return a listener hook of a resource, with its queue's length."""
            return hooks._show("listener", hooks._resource(resource), id)

        def unregister_listener(event: HttpEvent, resource: str, id: str) -> JSONResponse:
            """Remove a listener hook (404 when there was none); its queued copies stay."""
            return hooks._unregister(event, "listener", hooks._resource(resource), id)

        def list_listeners(q: Annotated[str, Query()] = "") -> JSONResponse:
            """List the listener hooks; ``q`` keeps those whose destination holds it."""
            return hooks._list("listener", q)

        declared = (
            (
                http.PUT(resource_path).name("hooks.route.register").data("body", RouteSpec),
                register_route,
            ),
            (http.GET(resource_path).name("hooks.route.show"), show_route),
            (http.DELETE(resource_path).name("hooks.route.unregister"), unregister_route),
            (http.GET(f"{self.root}_hooks/routes").name("hooks.routes"), list_routes),
            (
                http.PUT(listener_path).name("hooks.listener.register").data("body", ListenerSpec),
                register_listener,
            ),
            (http.GET(listener_path).name("hooks.listener.show"), show_listener),
            (http.DELETE(listener_path).name("hooks.listener.unregister"), unregister_listener),
            (http.GET(f"{self.root}_hooks/listeners").name("hooks.listeners"), list_listeners),
        )
        for spec, function in declared:
            function.__qualname__ = f"Hooks.{function.__name__}"
            spec.group("hooks").data("hooks", self).description(function.__doc__ or "")(function)
        return tuple(function for _, function in declared)

    def _resource(self, value: str) -> str:
        return f"{self.root}{value}".rstrip("/")

    def _register(
        self,
        event: HttpEvent,
        kind: str,
        resource: str,
        id: str,
        body: bytes,
        expire_after: str | None,
    ) -> JSONResponse:
        """Validate and store a route (``id`` empty) or listener registration."""
        _require_json(event.environ)
        depth = event.app.limits.max_json_depth
        problems: list[dict[str, str]]
        spec: RouteSpec | ListenerSpec | None
        if kind == "route":
            spec, problems = parse_route(body, resource, self.allowed, depth)
        else:
            spec, problems = parse_listener(body, resource, self.allowed, depth)
            problems = listener_id_problems(id) + problems
        expires_at = None
        try:
            expires_at = expiry(expire_after, self.default_expiry)
        except ParametersFailed as ex:
            problems.extend(ex.errors)
        if problems or spec is None:
            raise ParametersFailed(problems, f"Invalid {kind} hook")
        record = Record(kind, resource, id, msgspec.json.encode(spec), expires_at)
        self._write(self.storage.put, record)
        logger.info(
            "hooks: %s hook%s on %s → %s registered by %s (expires %s)",
            kind,
            loggable(f" {id}" if id else ""),
            loggable(resource),
            loggable(spec.destination),
            loggable(event.environ.get("REMOTE_ADDR", "-")),
            _when(expires_at),
        )
        return JSONResponse(_described(record, spec), 200)

    def _unregister(self, event: HttpEvent, kind: str, resource: str, id: str) -> JSONResponse:
        named = f" {id}" if id else ""
        if not self._write(self.storage.delete, kind, resource, id):
            raise NotFound(f"no {kind} hook{named} on {resource}")
        logger.info(
            "hooks: %s hook%s on %s unregistered by %s",
            kind,
            loggable(named),
            loggable(resource),
            loggable(event.environ.get("REMOTE_ADDR", "-")),
        )
        answer = {"message": f"{kind} hook removed", "resource": resource}
        if id:
            answer["id"] = id
        return JSONResponse(answer, 200)

    def _show(self, kind: str, resource: str, id: str) -> JSONResponse:
        for _, entry in self._described(kind):
            if entry["resource"] == resource and entry.get("id", "") == id:
                return JSONResponse(entry, 200)
        raise NotFound(f"no {kind} hook{f' {id}' if id else ''} on {resource}")

    def _list(self, kind: str, q: str) -> JSONResponse:
        found = [entry for _, entry in self._described(kind) if q in entry["destination"]]
        return JSONResponse({f"{kind}s": found}, 200)

    def _described(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        described = [found for found in describe(self._records(), self.allowed) if found[0] == kind]
        if kind == "listener":
            try:
                stats = self.storage.queue_stats()
            except StorageUnavailable as ex:
                raise ServiceUnavailable(f"hooks storage unavailable: {ex}") from None
            add_queues(described, stats)
        return described

    def _records(self) -> list[Record]:
        try:
            return self.storage.records()
        except StorageUnavailable as ex:
            raise ServiceUnavailable(f"hooks storage unavailable: {ex}") from None

    def _write(self, action: Any, *args: Any) -> Any:
        """Run a storage write, then bring this worker's index up to date at once."""
        try:
            result = action(*args)
        except StorageUnavailable as ex:
            logger.warning("hooks: registration refused, storage unavailable: %s", ex)
            raise ServiceUnavailable("hooks storage unavailable; try again later") from None
        # Written; if the storage went away meanwhile, the thread reloads once it is back.
        with contextlib.suppress(StorageUnavailable):
            self.registry.reload()
        return result

    def __repr__(self) -> str:
        return f"<Hooks {self.root} on {self.storage!r}>"


def _copied_headers(event: HttpEvent) -> list[tuple[str, str]]:
    """Return the headers a copy of the request carries before its listener's rules: the
    proxy's outgoing headers (no hop-by-hop ones, ``X-Forwarded-*`` added)."""
    headers, _ = request_headers(
        event.environ, trust_forwarded=event.app.trusts_forwarded, preserve_host=False
    )
    # SECURITY: the queue's own headers (X-Queue, X-Queue-Retry-*) are the listener's to set,
    # never the client's: a client cannot send its copy into another queue, nor make its
    # delivery give up. Content-Length is the body's, when delivered.
    return [
        (name, value)
        for name, value in headers.items()
        if not (lower := name.lower()).startswith("x-queue") and lower != "content-length"
    ]


def _require_json(environ: dict[str, Any]) -> None:
    """SECURITY: a registration body must say it is JSON, as every JSON body parameter must
    (a cross-site form post, which needs no CORS preflight, cannot register a hook)."""
    mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(
            f"A registration is JSON, not {mimetype or 'a body without Content-Type'}"
        )


def describe(
    records: list[Record], allowed: AllowedDestinations
) -> list[tuple[str, dict[str, Any]]]:
    """Return ``(kind, description)`` of each record the index would apply, by resource and
    id (what the listing routes and ``workflowhttp hooks`` show)."""
    described = []
    now = time.time()
    for record in sorted(records, key=lambda r: (r.kind, r.resource, r.id)):
        if record.expires_at is not None and record.expires_at <= now:
            continue
        spec = applicable_spec(record, allowed)
        if spec is not None:
            described.append((record.kind, _described(record, spec)))
    return described


def add_queues(
    described: list[tuple[str, dict[str, Any]]], stats: dict[str, tuple[int, float]]
) -> None:
    """Add to each listener's description its queue's length and oldest copy's age (the
    default queue's; copies an ``x-queue`` header sent elsewhere are counted there)."""
    now = time.time()
    for kind, entry in described:
        if kind == "listener":
            length, oldest = stats.get(entry["queue"], (0, now))
            entry["queueLength"] = length
            entry["oldestQueuedSeconds"] = round(now - oldest, 3) if length else None


def _described(record: Record, spec: RouteSpec | ListenerSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": record.resource}
    if record.kind == "listener":
        name = listener_name(record.resource, record.id)
        entry.update(id=record.id, name=name, queue=f"listener-hook-{name}")
    entry.update(msgspec.to_builtins(spec))
    entry["expires"] = _when(record.expires_at)
    return entry


def _when(expires_at: float | None) -> str | None:
    if expires_at is None:
        return None
    moment = datetime.datetime.fromtimestamp(expires_at, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
