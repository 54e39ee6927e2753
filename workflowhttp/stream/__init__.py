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
  the others are never built for it, and when it wants none of the framework's events its
  requests record nothing at all.
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

PERF: the request's thread only records raw facts, the way a low-overhead tracer does, into
one list, its *trail*: its id (made a block at a time: :meth:`Stream._make_ids`), one
``perf_counter()`` at the start, each state's name and the ``perf_counter()`` it was entered
at (appended by the walker) and, at the end, one tuple with the status, the bytes sent and a
few environ values (:meth:`Stream.finish`). The trail is the whole hand-off: one
``deque.append``, no lock, no wake-up. Everything else (wall-clock times, time per state, the
typed events themselves, the calls to the processor) happens in the shard's thread, a batch
at a time (:class:`_Builder`), and only for the event types its processor wants. Nothing the
request's thread touches is made on another thread: such objects cost it cache misses, more
than making them itself.
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
from ..middleware.runners import middleware_step
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
_ID_BLOCK = 256  # request ids made at once, by the request that finds none ready
# The last two hex digits of the ids of a block, in the order pop() takes them.
_ID_ENDINGS = tuple(f"{low:02x}" for low in reversed(range(_ID_BLOCK)))
_HEADER = "X-Request-ID"
# SECURITY: a client's request id is echoed in a header and logged: only a short token.
_TRUSTABLE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

_Headers = tuple[tuple[str, str], ...]
_Trail = list[Any]
"""A request's record, as queued: ``[request_id, started, state, entered, state, entered,
..., end]``. Each state's name is followed by the ``perf_counter()`` it was entered at and,
when a listener of that state raised, by ``(listener, exception)`` (``(name,
description)`` once :func:`_free_failures` ran); ``end`` is ``(ended, status, bytes_out,
route, method, path, client, content_length)``, plus ``error`` (the description of the
exception that decided the answer, or ``None``) when something failed."""

_FRAMEWORK_EVENTS = (
    RequestStarted,
    StateEntered,
    ListenerFailed,
    RequestFailed,
    Traffic,
    RequestFinished,
)


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
        self._queues: tuple[deque[Any], ...] = ()
        # Which shards' processors want framework events; none: requests record nothing.
        self._recorded: list[bool] = []
        self._quiet = False
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False
        self._deadline = float("inf")
        self._wall_offset = 0.0
        self._ids: list[str] = []  # request ids ready to hand out; pop() takes the next
        self._id_blocks: Iterator[int] = itertools.count(1)
        self._id_prefix = ""
        self._spread = itertools.count()
        _STREAMS.add(self)

    # -- the request path ------------------------------------------------------------------

    def begin(self, event: HttpEvent) -> tuple[_Trail | None, _Headers]:
        """Give ``event`` its request id and a trail; return the walker's trace list (the
        trail, ``None`` when no processor wants the framework's events) and the response's
        extra headers (``X-Request-ID``). Called once per request."""
        if self.trust_request_id:
            request_id = self._trusted_id(event)
        else:
            try:
                request_id = self._ids.pop()
            except IndexError:  # a block used up, or the stream not started
                request_id = self._make_ids()
        event.request_id = request_id
        if self._quiet:
            return None, ((_HEADER, request_id),)
        # The trail: the id, when the request started, then what the walker appends to it.
        trail = event._trail = [request_id, perf_counter()]
        return trail, ((_HEADER, request_id),)

    def finish(
        self, event: HttpEvent, status: int, body: Iterable[bytes], sent: int | None = None
    ) -> Iterable[bytes]:
        """Queue the request's trail now, or when a streamed body has been sent.

        ``sent`` is given by a streamed body once it has been sent (the bytes it counted).
        The trail holds raw facts only, and no request state: not the environ (werkzeug
        keeps its ``Request`` there), not an exception (its traceback holds the request's
        frames). A few environ values are copied out, and when something failed the errors
        are described here, on the rare path.
        """
        trail = event._trail
        if trail is None:  # nothing recorded
            return body
        if sent is None:
            if body.__class__ is not list:
                return _CountedBody(body, self, event, status)
            # PERF: a rendered body is one chunk (none for HEAD); sum(map()) costs twice that.
            sent = len(body[0]) if len(body) == 1 else sum(map(len, body))
        ended = perf_counter()
        environ = event.environ
        end: tuple[Any, ...] = (
            ended,
            status,
            sent,
            event.route,
            environ.get("REQUEST_METHOD"),
            environ.get("PATH_INFO"),
            environ.get("REMOTE_ADDR"),
            environ.get("CONTENT_LENGTH"),
        )
        if event.error is not None or event.error_state is not None:
            end += (_free_failures(trail, event),)
        trail.append(end)
        queue = self._queues[hash(trail[0]) % self._shard_count]
        if len(queue) < self.queue_size and not self._stopping:
            queue.append(trail)
        else:
            self._count_dropped(_trail_event_types(trail))
        return body

    def _trusted_id(self, event: HttpEvent) -> str:
        """Return the id the client sent, or the next one when it sent none we trust."""
        given = event.environ.get("HTTP_X_REQUEST_ID")
        if given and _TRUSTABLE_ID.fullmatch(given):
            if not self._started:
                self.start()
            return given  # type: ignore[no-any-return]
        try:
            return self._ids.pop()
        except IndexError:
            return self._make_ids()

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
        queue = self._queues[index % self._shard_count]
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
            self._id_prefix = f"{os.urandom(4).hex()}-"
            self._id_blocks = itertools.count(1)
            self._ids = []
            self._wall_offset = time.time() - perf_counter()
            self._stopping = False
            self._shards = tuple(_Shard() for _ in range(self._shard_count))
            self._queues = tuple(shard.queue for shard in self._shards)
            # Until its processor is made and says what it wants, a shard gets everything.
            self._recorded = [True] * self._shard_count
            self._quiet = False
            for index, shard in enumerate(self._shards):
                shard.thread = threading.Thread(
                    target=self._run,
                    args=(shard, index),
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
            self._ids = []  # the next request starts the stream again

    def _make_ids(self) -> str:
        """Make the next block of request ids (starting the stream if needed): return one,
        keep the others ready.

        PERF: a block is the ids of one range of 256 counter values, made by one C-level
        loop that appends each of the 256 possible last two hex digits to the prefix and the
        block number (no formatting per id), so an id costs a request about one
        ``list.pop()``. The request that finds none ready makes them: objects a request
        touches are best made on its own thread (made on a shard's, they cost it cache
        misses). Every block is a distinct range of the counter, so ids stay unique when two
        threads make blocks at once.
        """
        if not self._started:
            self.start()
        block = list(map(f"{self._id_prefix}{next(self._id_blocks):x}".__add__, _ID_ENDINGS))
        request_id = block.pop()
        self._ids[:0] = block  # behind the ones still ready, which pop() takes first
        return request_id

    def _forget_parent(self) -> None:
        # A forked child has none of the parent's threads: it starts its own on first use,
        # with a prefix of its own (never the parent's ids, made before the fork).
        self._ids = []
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False
        self._deadline = float("inf")
        self._shards = ()
        self._queues = ()
        self._recorded = []
        self._quiet = False

    # -- the shard threads -----------------------------------------------------------------

    def _run(self, shard: _Shard, index: int) -> None:
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
        builder = _Builder(wanted, self._wall_offset)
        if process is None or not builder.any:
            self._record_nothing(index)
        deliver = None if process is None else builder.deliver
        queue = shard.queue
        while True:
            if queue:
                self._drain(queue, process, wanted, deliver)
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

    def _record_nothing(self, index: int) -> None:
        """Note that shard ``index`` builds no framework event (its processor wants none, or
        there is none); once no shard does, requests record nothing."""
        with self._lock:
            if index < len(self._recorded):  # not a stream forgotten by a fork meanwhile
                self._recorded[index] = False
                self._quiet = not any(self._recorded)
        # A trail recorded before reaches the shard, which builds nothing from it.

    def _drain(
        self,
        queue: deque[Any],
        process: Callable[[StreamEvent], Any] | None,
        wanted: tuple[type, ...] | None,
        deliver: Callable[[list[Any], Callable[[StreamEvent], Any]], None] | None,
    ) -> None:
        """Process what ``queue`` holds now, in order, as one batch.

        ``process`` is ``None`` when the shard has no working processor: its events are
        dropped. A trail or user event is freed once processed: nothing here outlives the
        call, so an idle shard keeps no event alive.
        """
        popleft = queue.popleft
        for _ in repeat(None, len(queue)):
            if self._stopping and monotonic() > self._deadline:
                return  # out of time: what is left is counted as undrained
            item = popleft()
            kind = item.__class__
            if kind is list:  # a request's trail
                if deliver is not None:
                    try:
                        deliver(item, process)  # type: ignore[arg-type]
                    except Exception:
                        logger.exception("stream could not build the events of a request")
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
    for index in range(2, len(trail)):
        entry = trail[index]
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
    step = middleware_step(listener)
    noted = None if event is None else event._middleware_failures
    if step and noted:
        wanted = id(error)
        for failed, name in reversed(noted):
            if failed == wanted and name.endswith(step):
                return name
    return getattr(listener, "__qualname__", None) or repr(listener)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _trail_event_types(trail: list[Any]) -> dict[str, int]:
    """Count a dropped request's events by type, as if they had all been built."""
    recorded = trail[2:-1]
    end = trail[-1]
    return {
        "RequestStarted": 1,
        "StateEntered": sum(1 for entry in recorded if entry.__class__ is str),
        "ListenerFailed": sum(1 for entry in recorded if entry.__class__ is tuple),
        "RequestFailed": int(len(end) > 8 and end[8] is not None),
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


def _processor_failed(event: StreamEvent) -> None:
    logger.exception("stream processor failed on %s", type(event).__name__)


class _Builder:
    """Turns trails into the typed events one processor wants and gives them to it, in their
    documented order (in its shard).

    PERF: the flags are decided once per shard, and each event goes to the processor as it
    is built (no list of a request's events). A request that nothing failed in takes the
    fast path: its trail strictly alternates state names and times, sliced apart at C speed.
    """

    __slots__ = (
        "offset",
        "any",
        "started",
        "entered",
        "failed",
        "decided",
        "traffic",
        "finished",
    )

    def __init__(self, wanted: tuple[type, ...] | None, offset: float) -> None:
        def wants(kind: type) -> bool:
            return wanted is None or any(issubclass(kind, chosen) for chosen in wanted)

        self.offset = offset  # turns perf_counter() times into wall-clock ones
        # The module's names, looked up now: tests put spies there.
        self.started = wants(RequestStarted)
        self.entered = wants(StateEntered)
        self.failed = wants(ListenerFailed)
        self.decided = wants(RequestFailed)
        self.traffic = wants(Traffic)
        self.finished = wants(RequestFinished)
        self.any = any(wants(kind) for kind in _FRAMEWORK_EVENTS)

    def deliver(self, trail: list[Any], process: Callable[[StreamEvent], Any]) -> None:
        """Build the request's events and give each to ``process``, in their order."""
        request_id = trail[0]
        started = trail[1]
        end = trail[-1]
        if len(end) == 8:
            ended, status, bytes_out, route, method, path, client, content_length = end
            error = None
            failed = False
        else:
            ended, status, bytes_out, route, method, path, client, content_length, error = end
            failed = True
        method = method or ""  # a WSGI server may leave PATH_INFO out (the app's root)
        path = path or ""
        offset = self.offset
        if self.started:
            event: StreamEvent = RequestStarted(request_id, method, path, client, started + offset)
            try:
                process(event)
            except Exception:
                _processor_failed(event)
        last = len(trail) - 1  # the end's index: the states are in between
        spent: dict[str, float] = {}
        # A listener's failure is one more entry in the trail: then take the general path.
        # (``failed`` is decided on the request path from ``event.error``/``error_state``;
        # the parity check also catches a failure whose listener cleared both.)
        if failed or last & 1:
            spent = self._walk_trail(process, request_id, trail, last, ended)
        elif last > 2:  # names and times alternate: one loop, no lookups
            entered = self.entered
            timed = self.finished
            name = trail[2]
            since = trail[3]
            if entered:
                event = StateEntered(request_id, name, since + offset)
                try:
                    process(event)
                except Exception:
                    _processor_failed(event)
            for index in range(4, last, 2):
                entry = trail[index + 1]
                if timed:
                    spent[name] = entry - since
                name = trail[index]
                since = entry
                if entered:
                    event = StateEntered(request_id, name, entry + offset)
                    try:
                        process(event)
                    except Exception:
                        _processor_failed(event)
            if timed:
                spent[name] = ended - since
                if len(spent) * 2 < last - 2:  # a state entered twice: add its visits up
                    spent = self._walk_trail(None, request_id, trail, last, ended)
        if error is not None and self.decided:
            event = RequestFailed(request_id, error, status)
            try:
                process(event)
            except Exception:
                _processor_failed(event)
        if self.traffic:
            event = Traffic(request_id, _bytes_in(content_length), bytes_out)
            try:
                process(event)
            except Exception:
                _processor_failed(event)
        if self.finished:
            event = RequestFinished(
                request_id,
                method,
                path,
                None if route is None else route.name,
                status,
                ended - started,
                spent,
                ended + offset,
            )
            try:
                process(event)
            except Exception:
                _processor_failed(event)

    def _walk_trail(
        self,
        process: Callable[[StreamEvent], Any] | None,
        request_id: str,
        trail: list[Any],
        last: int,
        ended: float,
    ) -> dict[str, float]:
        """The general path: give ``process`` (unless ``None``) the ``StateEntered`` and
        ``ListenerFailed`` events of ``trail`` (its entries between the start and the end, at
        ``last``); return each state's seconds."""
        entered = process is not None and self.entered
        failed = process is not None and self.failed
        offset = self.offset
        spent: dict[str, float] = {}
        state = current = ""
        since = 0.0
        event: StreamEvent
        for index in range(2, last):
            entry = trail[index]
            kind = entry.__class__
            if kind is str:
                state = entry
            elif kind is float:
                if entered:
                    event = StateEntered(request_id, state, entry + offset)
                    try:
                        process(event)  # type: ignore[misc]
                    except Exception:
                        _processor_failed(event)
                if current:
                    spent[current] = spent.get(current, 0.0) + (entry - since)
                current, since = state, entry
            elif failed:
                listener, failure = entry
                if not isinstance(failure, str):  # left raw: freed on the request path only
                    listener, failure = _listener_name(listener, failure, None), _describe(failure)
                event = ListenerFailed(request_id, state, listener, failure)
                try:
                    process(event)  # type: ignore[misc]
                except Exception:
                    _processor_failed(event)
        if current:
            spent[current] = spent.get(current, 0.0) + (ended - since)
        return spent


class _CountedBody:
    """A streamed body that counts what it sends and queues the trail when closed."""

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
