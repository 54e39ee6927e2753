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
one list, its *trail*: its id (made a block at a time: :mod:`.ids`), one
``perf_counter()`` at the start, each state's name and the ``perf_counter()`` it was entered
at (appended by the walker) and, at the end, one tuple with the status, the bytes sent and a
few environ values (:meth:`Stream.finish`). The trail is the whole hand-off: one
``deque.append``, no lock, no wake-up. Everything else (wall-clock times, time per state, the
typed events themselves, the calls to the processor) happens in the shard's thread, a batch
at a time (:mod:`.trail`), and only for the event types its processor wants. Nothing the
request's thread touches is made on another thread: such objects cost it cache misses, more
than making them itself.

The package, one job per module:

* ``__init__``: this facade, :class:`Stream` (the request path, user events, the life
  cycle), and the public names.
* ``shards``: the shard threads, their queues and processors, flush, drain, fork.
* ``trail``: what a request records and the typed events built from it in a shard.
* ``ids``: request ids, trusted or generated.
* ``body``: the counted streamed body, which queues its trail when closed.
* ``events``: the event types; ``processors``: the built-in processors.

Imports go one way: this facade imports the parts, ``shards`` imports ``trail``, and no part
imports anything else of the stream but ``events``.
"""

from __future__ import annotations

import atexit
import itertools
import os
import weakref
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigurationError
from ..settings import check_positive_ints
from . import events
from .body import _CountedBody
from .events import *  # noqa: F403 (the typed events, as events.__all__ lists them)
from .events import StreamEvent
from .ids import _HEADER, _RequestIds
from .shards import _Shards
from .trail import _free_failures, _Trail, _trail_event_types

if TYPE_CHECKING:
    from ..events import HttpEvent

__all__ = ["Processor", "Stream", *events.__all__]

_Headers = tuple[tuple[str, str], ...]


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


class Stream(_Shards, _RequestIds):
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
        check_positive_ints("Stream", shards=shards, queue_size=queue_size)
        _Shards.__init__(self, processor, shards, queue_size, drain_timeout)
        _RequestIds.__init__(self)
        self.trust_request_id = trust_request_id
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
            self._draw_ids()
            self._start_shards()
            self._started = True
            atexit.register(self.shutdown)

    def shutdown(self, timeout: float | None = None) -> None:
        """Drain the queues (within ``timeout``, default ``drain_timeout``), then call each
        processor's ``shutdown()`` once and stop the threads."""
        if not self._stop_shards(timeout):
            return
        atexit.unregister(self.shutdown)
        with self._lock:
            self._started = False
            self._ids = []  # the next request starts the stream again

    def _forget_parent(self) -> None:
        # A forked child has none of the parent's threads: it starts its own on first use,
        # with a prefix of its own (never the parent's ids, made before the fork).
        self._ids = []
        self._forget_shards()
