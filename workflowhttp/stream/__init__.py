"""The event stream: typed events from every request to processors on sharded threads.

::

    class Printer:
        def process(self, event): print(event)
        def shutdown(self): pass

    app = App(controllers=[...], stream=Stream(Printer, shards=2))

The contract, stated once:

* **Processors.** The factory given to :class:`Stream` is called once per shard, in that
  shard's thread; each shard is one thread that calls its processor's ``process(event)`` for
  every event routed to it, so a processor needs no locks. ``shutdown()`` is called exactly
  once per processor, when the stream shuts down. A processor may name the event types it
  wants in an ``events`` attribute (a tuple of classes); the others are never built for it.
  PERF: building a request's nine events costs more than the request itself; a processor
  that only needs ``RequestFinished`` should say so.
* **Keys.** Events with the same key reach the same shard, in the order they were sent. A
  request's events all have its request id as key. User events sent without a key are spread
  over the shards round robin.
* **Never blocking.** Sending appends to the shard's bounded queue; when it is full the events
  are dropped and counted by type in :attr:`Stream.dropped`. PERF: a request hands its whole
  trail (the states it entered, with times) to its shard as one item at the end, and the typed
  events are built in the shard's thread, off the request's path.
* **Request ids.** Taken from the ``X-Request-ID`` header when ``trust_request_id=True`` (and
  it is a short printable token), else generated; returned in the response's ``X-Request-ID``.
* **Processes.** Threads start with the first request a process serves, so under gunicorn
  they start in each worker after the fork, never in the master. At exit (or
  :meth:`Stream.shutdown`) the queued events are drained within ``drain_timeout`` seconds.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import re
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigurationError
from ..numbers import parse_int
from .events import (
    ListenerFailed,
    RequestFailed,
    RequestFinished,
    RequestStarted,
    StateEntered,
    StreamEvent,
    Traffic,
)

if TYPE_CHECKING:
    from ..events import HttpEvent

__all__ = [
    "ListenerFailed",
    "Processor",
    "RequestFailed",
    "RequestFinished",
    "RequestStarted",
    "StateEntered",
    "Stream",
    "StreamEvent",
    "Traffic",
]

logger = logging.getLogger("workflowhttp.stream")

_POLL = 0.01  # seconds an idle shard waits between looks at its queue (or until woken)
# SECURITY: a client's request id is echoed in a header and logged: only a short token.
_TRUSTABLE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class Processor(Protocol):
    """What a stream processor provides (and, optionally, ``events``: the types it wants)."""

    def process(self, event: StreamEvent) -> None: ...

    def shutdown(self) -> None: ...


class _Trail:
    """What a request records for the stream; queued whole, turned into events in the shard.

    PERF: the request path records as little as it can (the walker appends to the flat
    ``states`` list: a state name, then the time it was entered, then ``(listener, error)``
    for each listener of that state that raised); wall-clock times are derived in the shard.
    When the request is queued, what the events need is copied out as plain values (the
    environ's, the errors' descriptions), so a queued trail keeps no request state alive:
    not the environ (werkzeug keeps its Request there), not an exception's traceback.
    """

    __slots__ = (
        "request_id",
        "key",
        "environ",
        "method",
        "path",
        "client",
        "bytes_in",
        "started",
        "states",
        "route",
        "error",
        "status",
        "bytes_out",
        "ended",
    )

    def __init__(self, request_id: str, key: int, environ: dict[str, Any]) -> None:
        self.request_id = request_id
        self.key = key
        self.environ: dict[str, Any] | None = environ
        self.states: list[Any] = []
        self.started = time.perf_counter()
        # Set when the request is queued:
        self.method = self.path = ""
        self.client: str | None = None
        self.bytes_in = 0
        self.route: str | None = None
        self.error: str | None = None
        self.status = 0
        self.bytes_out = 0
        self.ended = 0.0


_STREAMS: weakref.WeakSet[Stream] = weakref.WeakSet()
"""Every live stream, so a forked child forgets its parent's threads (one fork hook for all,
which never keeps a stream alive)."""


def _after_fork_in_child() -> None:
    for stream in list(_STREAMS):
        stream._forget_parent()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Shard:
    __slots__ = ("queue", "thread", "processor", "wake")

    def __init__(self) -> None:
        self.queue: deque[Any] = deque()
        self.thread: threading.Thread | None = None
        self.processor: Any = None
        # Set by flush() and shutdown() only: a request never pays for waking a shard.
        self.wake = threading.Event()


class _Barrier:
    """Queued by flush(): set once the shard has processed everything queued before it."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class Stream:
    """The app's event stream.

    Args:
        processor: A factory (a class, or any callable) making one processor per shard.
        shards: Number of shard threads (default 2).
        queue_size: Items a shard may hold before new ones are dropped (default 10 000).
        trust_request_id: Take the request id from the ``X-Request-ID`` header.
        drain_timeout: Seconds shutdown waits for queued events to be processed (default 5).
    """

    def __init__(
        self,
        processor: Callable[[], Any],
        *,
        shards: int = 2,
        queue_size: int = 10_000,
        trust_request_id: bool = False,
        drain_timeout: float = 5.0,
    ) -> None:
        if not callable(processor):
            raise ConfigurationError(f"Stream needs a processor factory, not {processor!r}")
        for name, value in (("shards", shards), ("queue_size", queue_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"Stream {name} must be a positive int, not {value!r}")
        self.factory = processor
        self.queue_size = queue_size
        self.trust_request_id = trust_request_id
        self.drain_timeout = drain_timeout
        self.dropped: Counter[str] = Counter()
        """Events dropped because a shard's queue was full, by event type name."""
        self._shard_count = shards
        self._shards: tuple[_Shard, ...] = ()
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False
        self._deadline = float("inf")
        self._wall_offset = 0.0
        self._counter = itertools.count(1)
        self._spread = itertools.count()
        self._prefix = ""
        _STREAMS.add(self)

    # -- the request path ------------------------------------------------------------------

    def begin(self, event: HttpEvent) -> tuple[list[Any], tuple[tuple[str, str], ...]]:
        """Give ``event`` its request id and a trail; return the walker's trace list and the
        response's extra headers (``X-Request-ID``). Called once per request."""
        if not self._started:
            self.start()
        environ = event.environ
        number = next(self._counter)
        request_id = None
        if self.trust_request_id:
            given = environ.get("HTTP_X_REQUEST_ID")
            if given and _TRUSTABLE_ID.fullmatch(given):
                request_id = given
        if request_id is None:
            request_id = f"{self._prefix}-{number:x}"
        trail = event._trail = _Trail(request_id, number, environ)
        event.request_id = request_id
        return trail.states, (("X-Request-ID", request_id),)

    def finish(self, event: HttpEvent, status: int, body: Iterable[bytes]) -> Iterable[bytes]:
        """Queue the request's trail now, or when a streamed body has been sent."""
        if isinstance(body, list):
            self._queue_request(event, status, sum(map(len, body)))
            return body
        return _CountedBody(body, self, event, status)

    def _queue_request(self, event: HttpEvent, status: int, bytes_out: int) -> None:
        trail: _Trail = event._trail
        environ = trail.environ
        if environ is None:  # queued already (a body closed twice)
            return
        trail.environ = None
        trail.ended = time.perf_counter()
        route = event.route
        trail.route = route.name if route is not None else None
        trail.method = environ.get("REQUEST_METHOD", "")
        trail.path = environ.get("PATH_INFO", "")
        trail.client = environ.get("REMOTE_ADDR")
        try:  # SECURITY: "²" passes isdigit() and then fails int(), after start_response
            trail.bytes_in = parse_int(environ.get("CONTENT_LENGTH") or "0", signed=False)
        except ValueError:  # refused by the request checks, so nothing was read
            trail.bytes_in = 0
        if event.error is not None:
            trail.error = _describe(event.error)
        if event.error_state is not None:  # set whenever a listener raised: name the failures
            states = trail.states
            for index, entry in enumerate(states):
                if entry.__class__ is tuple:  # (listener, error) → (name, description)
                    listener, failure = entry
                    name = getattr(listener, "__qualname__", repr(listener))
                    states[index] = (name, _describe(failure))
        trail.status = status
        trail.bytes_out = bytes_out
        shard = self._shards[trail.key % len(self._shards)]
        if len(shard.queue) >= self.queue_size or self._stopping:
            self._count_dropped(_request_event_types(trail))
        else:
            shard.queue.append(trail)

    # -- user events -----------------------------------------------------------------------

    def send(self, event: StreamEvent, key: Any = None) -> bool:
        """Send a user event; same ``key``, same shard, in order. Return whether it was queued."""
        if not isinstance(event, StreamEvent):
            raise TypeError(f"stream events subclass StreamEvent, not {type(event).__name__}")
        if not self._started:
            self.start()
        index = next(self._spread) if key is None else hash(key)
        shard = self._shards[index % len(self._shards)]
        if len(shard.queue) >= self.queue_size or self._stopping:
            self._count_dropped({type(event).__name__: 1})
            return False
        shard.queue.append(event)
        return True

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the shard threads in this process (done by the first request or send)."""
        with self._lock:
            if self._started:
                return
            self._prefix = os.urandom(4).hex()
            self._wall_offset = time.time() - time.perf_counter()
            self._stopping = False
            self._shards = tuple(_Shard() for _ in range(self._shard_count))
            for index, shard in enumerate(self._shards):
                shard.thread = threading.Thread(
                    target=self._run,
                    args=(shard,),
                    name=f"workflowhttp-stream-{index}",
                    daemon=True,
                )
                shard.thread.start()
            self._started = True
            atexit.register(self.shutdown)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every event queued so far has been processed; return whether it was
        (``False`` when ``timeout`` seconds ran out first)."""
        if not self._started:
            return True
        barriers = []
        for shard in self._shards:
            barrier = _Barrier()
            shard.queue.append(barrier)
            shard.wake.set()
            barriers.append(barrier)
        deadline = time.monotonic() + timeout
        return all(b.done.wait(max(0.0, deadline - time.monotonic())) for b in barriers)

    def shutdown(self, timeout: float | None = None) -> None:
        """Drain the queues (within ``timeout``, default ``drain_timeout``), then call each
        processor's ``shutdown()`` once and stop the threads."""
        with self._lock:
            if not self._started or self._stopping:
                return
            self._deadline = time.monotonic() + (self.drain_timeout if timeout is None else timeout)
            self._stopping = True
        for shard in self._shards:
            shard.wake.set()
        for shard in self._shards:
            if shard.thread is not None:
                shard.thread.join(max(0.0, self._deadline - time.monotonic()) + _POLL * 4)
        atexit.unregister(self.shutdown)
        with self._lock:
            self._started = False

    def _forget_parent(self) -> None:
        # A forked child has none of the parent's threads: it starts its own on first use.
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False
        self._deadline = float("inf")
        self._shards = ()

    def _run(self, shard: _Shard) -> None:
        processor: Any = None
        wanted: tuple[type, ...] | None = None
        try:
            processor = shard.processor = self.factory()
        except Exception:
            logger.exception("stream processor factory failed; this shard drops its events")
        try:
            wanted = _wanted(processor)
        except ConfigurationError as ex:
            logger.error("%s; this shard drops its events", ex)
            processor = None
        queue = shard.queue
        while True:
            while queue:
                if self._stopping and time.monotonic() > self._deadline:
                    break  # out of time: what is left is counted as undrained
                # No local keeps the item: an idle shard must not keep a request alive.
                if queue[0].__class__ is _Barrier:
                    queue.popleft().done.set()
                elif processor is not None:
                    self._dispatch(processor, queue.popleft(), wanted)
                else:
                    queue.popleft()
            if self._stopping:
                if not queue or time.monotonic() > self._deadline:
                    break
                continue
            shard.wake.wait(_POLL)
            shard.wake.clear()
        undrained = 0
        while queue:
            if queue[0].__class__ is _Barrier:
                queue.popleft().done.set()  # a flush() waiting on it returns
            else:
                queue.popleft()
                undrained += 1
        if undrained:
            self._count_dropped({"(undrained)": undrained})
        if processor is not None:
            try:
                processor.shutdown()
            except Exception:
                logger.exception("stream processor shutdown failed")

    def _dispatch(self, processor: Any, item: Any, wanted: tuple[type, ...] | None) -> None:
        events: Iterable[StreamEvent]
        if isinstance(item, StreamEvent):
            if wanted is not None and not isinstance(item, wanted):
                return
            events = (item,)
        else:
            events = _request_events(item, wanted, self._wall_offset)
        # Free the trail (and the request's error, traceback and event) before the processor
        # runs: a processed request must not outlive its events.
        del item
        for event in events:
            try:
                processor.process(event)
            except Exception:
                logger.exception("stream processor failed on %s", type(event).__name__)

    def _count_dropped(self, counts: dict[str, int]) -> None:
        with self._lock:
            self.dropped.update(counts)


def _wanted(processor: Any) -> tuple[type, ...] | None:
    """Return the event types ``processor`` asks for (``None``: all of them).

    Raises:
        ConfigurationError: ``events`` is not a tuple/set/frozenset of StreamEvent classes
            (a list such as ``self.events = []`` is more likely a processor's own record).
    """
    wanted = getattr(processor, "events", None)
    if wanted is None:
        return None
    if not isinstance(wanted, (tuple, set, frozenset)) or not all(
        isinstance(kind, type) and issubclass(kind, StreamEvent) for kind in wanted
    ):
        raise ConfigurationError(
            f"{type(processor).__qualname__}.events must be a tuple of StreamEvent classes "
            f"(the types it wants), not {wanted!r}"
        )
    return tuple(wanted)


def _request_event_types(trail: _Trail) -> dict[str, int]:
    entered = sum(1 for entry in trail.states if entry.__class__ is str)
    failed = sum(1 for entry in trail.states if entry.__class__ is tuple)
    return {
        "RequestStarted": 1,
        "StateEntered": entered,
        "ListenerFailed": failed,
        "RequestFailed": int(trail.error is not None),
        "Traffic": 1,
        "RequestFinished": 1,
    }


def _request_events(
    trail: _Trail, wanted: tuple[type, ...] | None, offset: float
) -> list[StreamEvent]:
    """Build a request's typed events from its trail (in the shard's thread).

    Only the types in ``wanted`` are built (all when ``None``); ``offset`` turns
    ``perf_counter()`` times into wall-clock ones. PERF: positional construction, one list,
    no generator: this runs once per request.
    """
    every = wanted is None
    request_id = trail.request_id
    method = trail.method
    path = trail.path
    events: list[StreamEvent] = []
    if every or RequestStarted in wanted:  # type: ignore[operator]
        events.append(
            RequestStarted(request_id, method, path, trail.client, trail.started + offset)
        )
    entered = every or StateEntered in wanted  # type: ignore[operator]
    failed = every or ListenerFailed in wanted  # type: ignore[operator]
    if entered or failed:
        state = ""
        for entry in trail.states:
            kind = entry.__class__
            if kind is str:
                state = entry
            elif kind is float:
                if entered:
                    events.append(StateEntered(request_id, state, entry + offset))
            elif failed:
                name, failure = entry
                events.append(ListenerFailed(request_id, state, name, failure))
    error = trail.error
    if error is not None and (every or RequestFailed in wanted):  # type: ignore[operator]
        events.append(RequestFailed(request_id, error, trail.status))
    if every or Traffic in wanted:  # type: ignore[operator]
        events.append(Traffic(request_id, trail.bytes_in, trail.bytes_out))
    if every or RequestFinished in wanted:  # type: ignore[operator]
        events.append(
            RequestFinished(
                request_id,
                method,
                path,
                trail.route,
                trail.status,
                trail.ended - trail.started,
                _time_per_state(trail.states, trail.ended),
                trail.ended + offset,
            )
        )
    return events


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _time_per_state(trail: list[Any], ended: float) -> dict[str, float]:
    """Seconds spent in each state: from entering it to entering the next (or the end)."""
    spent: dict[str, float] = {}
    state = None
    entered = 0.0
    for entry in trail:
        if entry.__class__ is str:
            pending = entry
        elif entry.__class__ is float:
            if state is not None:
                spent[state] = spent.get(state, 0.0) + (entry - entered)
            state, entered = pending, entry
    if state is not None:
        spent[state] = spent.get(state, 0.0) + (ended - entered)
    return spent


class _CountedBody:
    """A streamed body that counts what it sends and queues the trail when closed."""

    __slots__ = ("_body", "_stream", "_event", "_status", "_sent")

    def __init__(self, body: Iterable[bytes], stream: Stream, event: HttpEvent, status: int):
        self._body = body
        self._stream = stream
        self._event = event
        self._status = status
        self._sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._stream._queue_request(self._event, self._status, self._sent)
