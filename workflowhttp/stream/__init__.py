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
  wants in an ``events`` attribute (a tuple of classes, each also selecting its subclasses);
  the others are never built for it. PERF: building a request's nine events costs more than
  the request itself; a processor that only needs ``RequestFinished`` should say so.
* **Keys.** Events with the same key reach the same shard, in the order they were sent: the
  shard of ``hash(key)``. A request's events all have its request id as key, so a user event
  sent with ``key=event.request_id`` reaches the processor that receives that request's own
  events. User events sent without a key are spread over the shards round robin.
* **Never blocking.** Sending appends to the shard's bounded queue; when it is full the events
  are dropped and counted by type in :attr:`Stream.dropped`. Nothing wakes a shard per event:
  a shard looks at its queue every ``_POLL`` seconds (sooner when :meth:`Stream.flush` or
  :meth:`Stream.shutdown` wake it) and processes what it finds as one batch.
* **Request ids.** Taken from the ``X-Request-ID`` header when ``trust_request_id=True`` (and
  it is a short printable token), else generated: a random prefix drawn once per process and
  a counter, ``"<8 hex digits>-<counter in hex>"``. Returned in the response's
  ``X-Request-ID``.
* **Processes.** Threads start with the first request a process serves, so under gunicorn
  they start in each worker after the fork, never in the master. At exit (or
  :meth:`Stream.shutdown`) the queued events are drained within ``drain_timeout`` seconds.

PERF: the request's thread only records raw facts, the way a low-overhead tracer does: its
id (formatted ahead, a block at a time, by the shard threads: :meth:`Stream._make_ids`), one
``perf_counter()`` at the start, the walker's trail (each state's name and the
``perf_counter()`` it was entered at, in one flat list) and, at the end, one tuple with the
status, the bytes sent and a few environ values (:meth:`Stream.finish`). That tuple is the
whole hand-off: one ``deque.append``, no lock, no wake-up. Everything else (wall-clock times,
time per state, the typed events themselves) is computed in the shard's thread, a batch at a
time (:class:`_Builder`), and only for the event types its processor wants.
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
from itertools import repeat
from time import monotonic, perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigurationError
from ..kernel import run_global_middlewares, run_route_middlewares
from ..middleware import run_outgoing
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
_ID_BLOCK = 256  # request ids formatted at once, by a shard when fewer are ready
# SECURITY: a client's request id is echoed in a header and logged: only a short token.
_TRUSTABLE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

_Record = tuple[Any, ...]
"""A finished request, as queued: ``(request_id, trail, ended, status, bytes_out, route,
error, failed, method, path, client, content_length)``; see :meth:`Stream.finish`."""


class Processor(Protocol):
    """What a stream processor provides (and, optionally, ``events``: the types it wants)."""

    def process(self, event: StreamEvent) -> None: ...

    def shutdown(self) -> None: ...


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
        self._ids: list[str] = []  # request ids ready to hand out; pop() takes the next
        self._id_blocks: Iterator[int] = itertools.count(1, _ID_BLOCK)
        self._id_template = ""
        self._spread = itertools.count()
        _STREAMS.add(self)

    # -- the request path ------------------------------------------------------------------

    def begin(self, event: HttpEvent) -> tuple[list[Any], tuple[tuple[str, str], ...]]:
        """Give ``event`` its request id and a trail; return the walker's trace list (the
        trail) and the response's extra headers (``X-Request-ID``). Called once per request."""
        if not self._started:
            self.start()
        request_id = None
        if self.trust_request_id:
            given = event.environ.get("HTTP_X_REQUEST_ID")
            if given and _TRUSTABLE_ID.fullmatch(given):
                request_id = given
        if request_id is None:
            try:
                request_id = self._ids.pop()
            except IndexError:  # the shards keep ids ready; a burst may use them all up
                request_id = self._make_ids()
        event.request_id = request_id
        # The trail: when the request started, then what the walker appends to it.
        trail = event._trail = [perf_counter()]
        return trail, (("X-Request-ID", request_id),)

    def finish(
        self, event: HttpEvent, status: int, body: Iterable[bytes], sent: int | None = None
    ) -> Iterable[bytes]:
        """Queue the request's record now, or when a streamed body has been sent.

        ``sent`` is given by a streamed body once it has been sent (the bytes it counted).
        The record holds raw facts only, and no request state: not the environ (werkzeug
        keeps its ``Request`` there), not an exception (its traceback holds the request's
        frames). A few environ values are copied out, and when something failed the errors
        are described here, on the rare path.
        """
        if sent is None:
            if body.__class__ is not list:
                return _CountedBody(body, self, event, status)
            # PERF: a rendered body is one chunk (none for HEAD); sum(map()) costs twice that.
            sent = len(body[0]) if len(body) == 1 else sum(map(len, body))
        ended = perf_counter()
        trail = event._trail
        error = None
        failed = event.error is not None or event.error_state is not None
        if failed:
            error = _free_failures(trail, event)
        route = event.route
        environ = event.environ
        request_id = event.request_id
        record = (
            request_id,
            trail,
            ended,
            status,
            sent,
            None if route is None else route.name,
            error,
            failed,
            environ.get("REQUEST_METHOD"),
            environ.get("PATH_INFO"),
            environ.get("REMOTE_ADDR"),
            environ.get("CONTENT_LENGTH"),
        )
        queue = self._shards[hash(request_id) % self._shard_count].queue
        if len(queue) < self.queue_size and not self._stopping:
            queue.append(record)
        else:
            self._count_dropped(_record_event_types(record))
        return body

    # -- user events -----------------------------------------------------------------------

    def send(self, event: StreamEvent, key: Any = None) -> bool:
        """Send a user event; same ``key``, same shard, in order. Return whether it was queued.

        A request's own events have its request id as key: ``key=event.request_id`` sends to
        the processor that receives them.
        """
        if not isinstance(event, StreamEvent):
            raise TypeError(f"stream events subclass StreamEvent, not {type(event).__name__}")
        if not self._started:
            self.start()
        index = next(self._spread) if key is None else hash(key)
        queue = self._shards[index % self._shard_count].queue
        if len(queue) >= self.queue_size or self._stopping:
            self._count_dropped({type(event).__name__: 1})
            return False
        queue.append(event)
        return True

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the shard threads in this process (done by the first request or send)."""
        with self._lock:
            if self._started:
                return
            self._id_template = f"{os.urandom(4).hex()}-%x\n" * _ID_BLOCK
            self._id_blocks = itertools.count(1, _ID_BLOCK)
            self._ids = []
            self._wall_offset = time.time() - perf_counter()
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
        deadline = monotonic() + timeout
        return all(b.done.wait(max(0.0, deadline - monotonic())) for b in barriers)

    def shutdown(self, timeout: float | None = None) -> None:
        """Drain the queues (within ``timeout``, default ``drain_timeout``), then call each
        processor's ``shutdown()`` once and stop the threads."""
        with self._lock:
            if not self._started or self._stopping:
                return
            self._deadline = monotonic() + (self.drain_timeout if timeout is None else timeout)
            self._stopping = True
        for shard in self._shards:
            shard.wake.set()
        for shard in self._shards:
            if shard.thread is not None:
                shard.thread.join(max(0.0, self._deadline - monotonic()) + _POLL * 4)
        atexit.unregister(self.shutdown)
        with self._lock:
            self._started = False

    def _make_ids(self) -> str:
        """Format the next block of request ids: return one, keep the others ready.

        PERF: formatting a counter costs more than the rest of a request's record. Formatted
        a block at a time (one ``%``, one ``split()``), mostly by the shard threads between
        their batches, an id costs the request one ``list.pop()``. Every block is a distinct
        range of the counter, so ids stay unique when two threads make blocks at once.
        """
        first = next(self._id_blocks)
        numbers = tuple(range(first + _ID_BLOCK - 1, first - 1, -1))  # pop() takes them in order
        block = (self._id_template % numbers).split()
        deque(map(hash, block), 0)  # PERF: a str keeps its hash: finish() finds the shard
        request_id = block.pop()
        self._ids[:0] = block  # behind the ones still ready, which pop() takes first
        return request_id

    def _forget_parent(self) -> None:
        # A forked child has none of the parent's threads: it starts its own on first use,
        # with a prefix of its own (never the parent's ids, formatted before the fork).
        self._ids = []
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False
        self._deadline = float("inf")
        self._shards = ()

    # -- the shard threads -----------------------------------------------------------------

    def _run(self, shard: _Shard) -> None:
        processor: Any = None
        wanted: tuple[type, ...] | None = None
        process: Callable[[StreamEvent], Any] | None = None
        try:
            processor = shard.processor = self.factory()
        except Exception:
            logger.exception("stream processor factory failed; this shard drops its events")
        if processor is not None:
            process = getattr(processor, "process", None)
            if not callable(process):
                logger.error("%r has no process(event); this shard drops its events", processor)
                process = None
        try:
            wanted = _wanted(processor)
        except ConfigurationError as ex:
            logger.error("%s; this shard drops its events", ex)
            process = None
        build = _Builder(wanted, self._wall_offset).build
        queue = shard.queue
        while True:
            if queue:
                self._drain(queue, process, wanted, build)
            if len(self._ids) < _ID_BLOCK:
                self._make_ids()  # the one it returns is never used: ids need not be dense
            if self._stopping:
                if not queue or monotonic() > self._deadline:
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

    def _drain(
        self,
        queue: deque[Any],
        process: Callable[[StreamEvent], Any] | None,
        wanted: tuple[type, ...] | None,
        build: Callable[[_Record], list[StreamEvent]],
    ) -> None:
        """Process what ``queue`` holds now, in order, as one batch.

        ``process`` is ``None`` when the shard has no working processor: its events are
        dropped. A request record or user event is freed once processed: nothing here outlives
        the call, so an idle shard keeps no event alive.
        """
        popleft = queue.popleft
        for _ in repeat(None, len(queue)):
            if self._stopping and monotonic() > self._deadline:
                return  # out of time: what is left is counted as undrained
            item = popleft()
            kind = item.__class__
            if kind is tuple:  # a request's record
                if process is None:
                    continue
                try:
                    events = build(item)
                except Exception:
                    logger.exception("stream could not build the events of a request")
                    continue
                for event in events:
                    try:
                        process(event)
                    except Exception:
                        logger.exception("stream processor failed on %s", type(event).__name__)
            elif kind is _Barrier:
                item.done.set()
            elif process is not None and (wanted is None or isinstance(item, wanted)):
                try:
                    process(item)
                except Exception:
                    logger.exception("stream processor failed on %s", kind.__name__)

    def _count_dropped(self, counts: dict[str, int]) -> None:
        with self._lock:
            self.dropped.update(counts)


# -- on the request's thread -----------------------------------------------------------------


def _free_failures(trail: list[Any], event: HttpEvent) -> str | None:
    """Replace each ``(listener, exception)`` the walker put in ``trail`` by ``(name,
    description)``; return the description of ``event.error`` (what decided the answer)."""
    for index, entry in enumerate(trail):
        if entry.__class__ is tuple:
            listener, failure = entry
            trail[index] = (_listener_name(listener, failure, event), _describe(failure))
    return None if event.error is None else _describe(event.error)


def _listener_name(listener: Any, error: BaseException, event: HttpEvent | None) -> str:
    """Return the qualified name of the listener that raised ``error``.

    The kernel runs middleware steps inside its own listeners (the incoming chains in
    ``request`` and ``auth``, the outgoing one in ``response``): for those the name is the
    step that raised, ``"Audit.incoming"``, which the middleware runner noted on the event
    (:func:`workflowhttp.middleware.run_incoming`). Each failure is looked up by its own
    error, so an incoming and an outgoing step that both raised are both named.
    """
    if listener is run_global_middlewares or listener is run_route_middlewares:
        step = "incoming"
    elif listener is run_outgoing:
        step = "outgoing"
    else:
        step = ""
    noted = None if event is None else event._middleware_failures
    if step and noted:
        wanted = id(error)
        for failed, name in reversed(noted):
            if failed == wanted and name.endswith(step):
                return name
    return getattr(listener, "__qualname__", None) or repr(listener)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _record_event_types(record: _Record) -> dict[str, int]:
    """Count a dropped request's events by type, as if they had all been built."""
    trail = record[1]
    entered = sum(1 for entry in trail if entry.__class__ is str)
    failed = sum(1 for entry in trail if entry.__class__ is tuple)
    return {
        "RequestStarted": 1,
        "StateEntered": entered,
        "ListenerFailed": failed,
        "RequestFailed": int(record[6] is not None),
        "Traffic": 1,
        "RequestFinished": 1,
    }


# -- in the shard's thread -------------------------------------------------------------------


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


def _bytes_in(content_length: str | None) -> int:
    """Return the announced body length, 0 when absent or malformed."""
    if not content_length:
        return 0
    try:
        # SECURITY: "²" passes str.isdigit() and then fails int(), and thousands of digits
        # fail int() too: the one client-number parser, never a bare int() on a header.
        return parse_int(content_length.strip(" \t"), signed=False)
    except ValueError:  # the request checks refused it, so nothing was read
        return 0


class _Builder:
    """Turns request records into the typed events one processor wants (in its shard).

    PERF: the flags are decided once per shard. A request that nothing failed in takes the
    fast path: its trail strictly alternates state names and times, and one loop makes its
    ``StateEntered`` events and its time per state.
    """

    __slots__ = ("offset", "started", "entered", "failed", "decided", "traffic", "finished")

    def __init__(self, wanted: tuple[type, ...] | None, offset: float) -> None:
        def wants(kind: type) -> bool:
            return wanted is None or any(issubclass(kind, chosen) for chosen in wanted)

        self.offset = offset  # turns perf_counter() times into wall-clock ones
        self.started = wants(RequestStarted)
        self.entered = wants(StateEntered)
        self.failed = wants(ListenerFailed)
        self.decided = wants(RequestFailed)
        self.traffic = wants(Traffic)
        self.finished = wants(RequestFinished)

    def build(self, record: _Record) -> list[StreamEvent]:
        """Return the request's events, in their documented order."""
        (
            request_id,
            trail,
            ended,
            status,
            bytes_out,
            route,
            error,
            failed,
            method,
            path,
            client,
            content_length,
        ) = record
        method = method or ""  # a WSGI server may leave PATH_INFO out (the app's root)
        path = path or ""
        offset = self.offset
        started = trail[0]
        events: list[StreamEvent] = []
        if self.started:
            events.append(RequestStarted(request_id, method, path, client, started + offset))
        spent: dict[str, float] = {}
        # A listener's failure is one more entry in the trail: then take the general path.
        # (``failed`` is decided on the request path from ``event.error``/``error_state``;
        # the parity check also catches a failure whose listener cleared both.)
        if failed or not len(trail) & 1:
            self._walk_trail(events, request_id, trail, ended, spent)
        elif len(trail) > 1:  # names and times alternate: one loop, no lookups
            entered = self.entered
            timed = self.finished
            append = events.append
            name = trail[1]
            since = trail[2]
            if entered:
                append(StateEntered(request_id, name, since + offset))
            for index in range(3, len(trail), 2):
                entry = trail[index + 1]
                if timed:
                    spent[name] = entry - since
                name = trail[index]
                since = entry
                if entered:
                    append(StateEntered(request_id, name, entry + offset))
            if timed:
                spent[name] = ended - since
                if len(spent) * 2 < len(trail) - 1:  # a state entered twice: add its visits up
                    spent = {}
                    self._walk_trail(None, request_id, trail, ended, spent)
        if error is not None and self.decided:
            events.append(RequestFailed(request_id, error, status))
        if self.traffic:
            events.append(Traffic(request_id, _bytes_in(content_length), bytes_out))
        if self.finished:
            events.append(
                RequestFinished(
                    request_id,
                    method,
                    path,
                    route,
                    status,
                    ended - started,
                    spent,
                    ended + offset,
                )
            )
        return events

    def _walk_trail(
        self,
        events: list[StreamEvent] | None,
        request_id: str,
        trail: list[Any],
        ended: float,
        spent: dict[str, float],
    ) -> None:
        """The general path: add ``StateEntered`` and ``ListenerFailed`` events to ``events``
        (unless ``None``) and each state's seconds to ``spent``."""
        entered = events is not None and self.entered
        failed = events is not None and self.failed
        offset = self.offset
        state = current = ""
        since = 0.0
        for index in range(1, len(trail)):
            entry = trail[index]
            kind = entry.__class__
            if kind is str:
                state = entry
            elif kind is float:
                if entered:
                    events.append(StateEntered(request_id, state, entry + offset))  # type: ignore[union-attr]
                if current:
                    spent[current] = spent.get(current, 0.0) + (entry - since)
                current, since = state, entry
            elif failed:
                listener, failure = entry
                if not isinstance(failure, str):  # left raw: freed on the request path only
                    listener, failure = _listener_name(listener, failure, None), _describe(failure)
                events.append(ListenerFailed(request_id, state, listener, failure))  # type: ignore[union-attr]
        if current:
            spent[current] = spent.get(current, 0.0) + (ended - since)


class _CountedBody:
    """A streamed body that counts what it sends and queues the record when closed."""

    __slots__ = ("_body", "_stream", "_event", "_status", "_sent")

    def __init__(self, body: Iterable[bytes], stream: Stream, event: HttpEvent, status: int):
        self._body = body
        self._stream = stream
        self._event: HttpEvent | None = event
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
            event, self._event = self._event, None
            if event is not None:  # not queued already (a body closed twice)
                self._stream.finish(event, self._status, (), self._sent)
