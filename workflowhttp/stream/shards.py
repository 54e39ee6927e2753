"""The stream's shards: one thread and one bounded queue each, and what runs in that thread.

Owns the shard threads and their queues, the processor each thread makes and calls, the
batches a thread takes from its queue (:meth:`_Shards._drain`), the barrier that
:meth:`_Shards.flush` queues, the draining at shutdown, what a forked child forgets of its
parent's threads, and the count of dropped events.

:class:`_Shards` is a base of :class:`~workflowhttp.stream.Stream`: the request path appends
to ``_queues`` and reads ``_quiet`` itself (one ``deque.append``, no lock, no wake-up), and
the stream's ``start()``/``shutdown()`` call :meth:`_Shards._start_shards` and
:meth:`_Shards._stop_shards` with its request ids. Imports the trail (to build events), never
the stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from itertools import repeat
from time import monotonic, perf_counter
from typing import Any

from ..errors import ConfigurationError
from .events import StreamEvent
from .trail import _Builder, _wanted

# The stream's one logger, whichever of its modules logs: what users configure.
logger = logging.getLogger("workflowhttp.stream")

_POLL = 0.01  # seconds an idle shard waits between looks at its queue (or until woken)


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


class _Shards:
    """A stream's shard threads, their queues and processors, and their life cycle."""

    def __init__(
        self,
        factory: Callable[[], Any],
        shards: int,
        queue_size: int,
        drain_timeout: float,
    ) -> None:
        self.factory = factory
        self.queue_size = queue_size
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

    def _start_shards(self) -> None:
        """Make the shards and start their threads (called holding ``_lock``)."""
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

    def _stop_shards(self, timeout: float | None) -> bool:
        """Drain the queues (within ``timeout``, default ``drain_timeout``) and wait for the
        threads to end; return ``False`` when they were not running or already stopping."""
        with self._lock:
            if not self._started or self._stopping:
                return False
            self._deadline = monotonic() + (self.drain_timeout if timeout is None else timeout)
            self._stopping = True
        for shard in self._shards:
            shard.wake.set()
        for shard in self._shards:
            if shard.thread is not None:
                shard.thread.join(max(0.0, self._deadline - monotonic()) + _POLL * 4)
        return True

    def _forget_shards(self) -> None:
        # A forked child has none of the parent's threads: it starts its own on first use.
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False
        self._deadline = float("inf")
        self._shards = ()
        self._queues = ()
        self._recorded = []
        self._quiet = False

    # -- in a shard's thread ---------------------------------------------------------------

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
