"""Listener hooks' copies: what a queued copy holds, and each worker's deliverer.

A copy is the request as the listener's destination gets it (method, target, headers after
the listener's rules, body unless the strategy drops it) with what delivering it needs (its
timeout, the statuses that give up, the hooks it came through). It is encoded once, when it
is queued, and never changes.

Every worker runs one :class:`Deliverer`. Its thread claims queues that hold copies and have no
consumer (a lease in the storage that lapses unless renewed), and hands each claimed queue to
one of ``concurrency`` delivery threads, which delivers its copies one at a time, oldest first:

* a copy leaves its queue only after its destination answered 2xx (or 409: the receiver has
  it already), or when it gives up on that status (``x-queue-retry-<status>: 0`` or
  ``x-queue-retry-4xx: 0`` among the listener's headers), or when it expired;
* any other answer, and a connection error or timeout, is retried after a delay that doubles
  from ``retry_delay`` to ``max_retry_delay``; meanwhile the queue keeps its lease, so the
  copies behind wait (FIFO), and the other queues go on;
* the deliverer's thread renews the leases it holds every third of ``lease`` seconds. A worker
  that dies stops renewing: once its leases lapse another worker claims the queues and
  delivers the copy that was in flight again. At least once, never lost; a receiver sees a
  copy twice only after such a takeover (or an answer lost on the way back), so receivers
  should be idempotent.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes, urlsplit

import msgspec

from ..stream.events import HookDelivered, HookQueues
from . import http1
from .forwarding import CHAIN, add_headers, chunks, no_write
from .storage import QueueItem, Storage, StorageUnavailable

if TYPE_CHECKING:
    from .extension import Hooks

__all__ = ["DELIVERY", "Copy", "Deliverer", "decode_copy", "encode_copy", "gives_up"]

logger = logging.getLogger("workflowhttp.hooks")

#: The environ key of a copy delivered in process: the name of its queue.
DELIVERY = "workflowhttp.hooks.delivery"


class Copy(msgspec.Struct, array_like=True, forbid_unknown_fields=False):
    """A queued copy of a request.

    Attributes:
        listener: The listener's name (for logs and metrics).
        method: The request's method.
        url: Where it goes: a local path with its query (``/audit/orders/1?x=1``), or an
            external URL.
        headers: The headers sent, after the listener's rules (no hop-by-hop ones, no
            ``Content-Length``: it is the body's).
        body: The body sent (empty when the strategy drops it).
        remote_addr: The original client's address (a local delivery is that client's
            request, never the server's own: an auth listener trusting 127.0.0.1 stays safe).
        host: The original ``Host`` (a local delivery's).
        chain: The listeners and routes the request came through (a copy never comes back to
            its own listener).
        timeout: Seconds a delivery may take.
        give_up: Statuses (``"404"``) and classes (``"4xx"``) that end the retries.
        interval: Least seconds between two deliveries of the queue (``reducedPropagation``).
    """

    listener: str
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    remote_addr: str
    host: str
    chain: list[str]
    timeout: float
    give_up: list[str] = []
    interval: float = 0.0


encode_copy = msgspec.msgpack.Encoder().encode
decode_copy = msgspec.msgpack.Decoder(Copy).decode


def gives_up(copy: Copy, status: int) -> bool:
    """Return whether an answer of ``status`` ends the copy's retries."""
    give_up = copy.give_up
    return bool(give_up) and (str(status) in give_up or f"{status // 100}xx" in give_up)


def delivered(status: int) -> bool:
    """Return whether ``status`` means the destination has the copy (2xx, or 409)."""
    return 200 <= status < 300 or status == 409


class Deliverer:
    """One worker's delivery of the listeners' queues (see the module's docstring).

    Args:
        hooks: The extension (its storage, pooled client, app and stream).
        lease: Seconds a claimed queue stays the worker's without a renewal.
        concurrency: Queues the worker delivers at the same time.
        poll_interval: Seconds between looks for queues to claim.
        retry_delay: Seconds before the first retry of a failed delivery.
        max_retry_delay: The most seconds between two retries.
        stats_interval: Seconds between reports of the queues' lengths.
    """

    def __init__(
        self,
        hooks: Hooks,
        *,
        lease: float = 10.0,
        concurrency: int = 8,
        poll_interval: float = 0.2,
        retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
        stats_interval: float = 5.0,
    ) -> None:
        self.hooks = hooks
        self.lease = lease
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.stats_interval = stats_interval
        self.owner = ""
        self._active: dict[str, threading.Event] = {}  # queue → set when its lease was lost
        # queue → the monotonic time its lease lapses at the latest unless renewed (the time
        # of the claim or renewal that set it, taken before the storage call, plus ``lease``).
        self._held: dict[str, float] = {}
        self._active_lock = threading.Lock()
        self._wake = threading.Event()
        self._quiet_until = 0.0  # no look asked by wake() before this monotonic time
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self._connections = Connections(concurrency)

    @property
    def storage(self) -> Storage:
        return self.hooks.storage

    # -- the lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start delivering (in each worker, after the fork)."""
        # A lease's owner: this worker, for as long as it runs (a restarted one is another).
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stopping.clear()
        thread = threading.Thread(target=self._run, name="workflowhttp-hooks-delivery", daemon=True)
        self._thread = thread
        thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming, let deliveries in flight end (up to ``timeout``), give leases back."""
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        self._workers = []
        self._connections.clear()

    def wake(self, queues: Collection[str] = ()) -> None:
        """Look for queues to claim soon: this worker just queued copies into ``queues``.

        PERF: a look is a write transaction (and a thread switch): under load, one a copy
        cost a worker more than the copy. None is made for queues this worker drains already
        (their consumer takes the new copy), nor within a quarter of the poll interval of
        the last one (the poll, or the consumer of the queue, takes the copy then).
        """
        if queues and all(queue in self._active for queue in queues):
            return
        now = time.monotonic()
        if now < self._quiet_until:
            return
        self._quiet_until = now + self.poll_interval / 4
        self._wake.set()

    # -- claiming and renewing ------------------------------------------------------------

    def _run(self) -> None:
        last_renewal = last_stats = time.monotonic()
        failing = False
        while not self._stopping.is_set():
            try:
                now = time.monotonic()
                if now - last_renewal >= self.lease / 3:
                    self._renew()
                    last_renewal = now
                if now - last_stats >= self.stats_interval:
                    self._report()
                    last_stats = now
                # A few queues per look, not every free slot at once: the other workers (and
                # machines) look too, and the queues spread over them (their own cores).
                free = min(self.concurrency - len(self._active), CLAIM_BATCH)
                if free > 0:
                    asked = time.monotonic()
                    for queue in self.storage.claim(self.owner, self.lease, free):
                        self._deliver_queue(queue, asked + self.lease)
                if failing:
                    logger.warning("hooks: storage is back; delivering again")
                failing = False
            except StorageUnavailable as ex:
                if not failing:
                    logger.warning("hooks: storage unavailable, deliveries wait: %s", ex)
                failing = True
            except Exception:  # never let the thread die: nothing would be delivered
                logger.exception("hooks: the delivery loop failed")
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def _renew(self) -> None:
        with self._active_lock:
            active = list(self._active.items())
        for queue, lost in active:
            try:
                asked = time.monotonic()
                if self.storage.renew(queue, self.owner, self.lease):
                    with self._active_lock:
                        if self._active.get(queue) is lost:
                            self._held[queue] = asked + self.lease
                else:
                    with self._active_lock:
                        current = self._active.get(queue) is lost
                    if current:  # (not a queue whose delivery ended meanwhile)
                        logger.warning("hooks: lost the lease of queue %s", queue)
                        lost.set()
            except StorageUnavailable:
                pass  # tried again at the next renewal; the lease may lapse meanwhile

    def _report(self) -> None:
        stream = self.hooks.stream
        if stream is None:
            return

        stats = self.storage.queue_stats()
        stream.send(
            HookQueues({queue: length for queue, (length, _) in stats.items()}), key="hooks"
        )

    def _deliver_queue(self, queue: str, held_until: float) -> None:
        lost = threading.Event()
        with self._active_lock:
            self._active[queue] = lost
            self._held[queue] = held_until
        worker = threading.Thread(
            target=self._drain,
            args=(queue, lost),
            name=f"workflowhttp-hooks-{queue[:40]}",
            daemon=True,
        )
        self._workers = [w for w in self._workers if w.is_alive()]
        self._workers.append(worker)
        worker.start()

    # -- delivering one queue -------------------------------------------------------------

    def _drain(self, queue: str, lost: threading.Event) -> None:
        """Deliver ``queue``'s copies one at a time while this worker holds its lease."""
        attempts = 0
        last_delivery = 0.0
        try:
            while not self._stopping.is_set() and not lost.is_set():
                item = self.storage.head(queue)
                if item is None:
                    return
                now = time.time()
                if item.expires_at is not None and item.expires_at <= now:
                    self.storage.remove(queue, item)
                    self._outcome(queue, "expired", 0.0, item, None)
                    attempts = 0
                    continue
                try:
                    copy = decode_copy(item.data)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    logger.warning("hooks: dropped an unreadable copy from queue %s", queue)
                    self.storage.remove(queue, item)
                    self._outcome(queue, "given_up", 0.0, item, None)
                    continue
                due = max(item.not_before, last_delivery + copy.interval if last_delivery else 0.0)
                if due > now and self._pause(due - now, lost):
                    return
                # A worker that was paused (SIGSTOP, a long GC, a VM descheduled) past its
                # lease may run again before its renewal says the lease is lost: it never
                # delivers on a lease that may have lapsed (another worker may hold it now).
                # Nor beside the consumer that claimed its queue again meanwhile.
                with self._active_lock:
                    mine = self._active.get(queue) is lost
                    held_until = self._held.get(queue, 0.0) if mine else 0.0
                if time.monotonic() >= held_until:
                    lost.set()
                    return
                started = time.monotonic()
                last_delivery = time.time()
                status = self._deliver(copy)
                seconds = time.monotonic() - started
                if status == REFUSED:
                    self.storage.remove(queue, item)
                    self._outcome(queue, "given_up", seconds, item, None)
                    continue
                if status is not None and (delivered(status) or gives_up(copy, status)):
                    self.storage.remove(queue, item)
                    outcome = "delivered" if delivered(status) else "given_up"
                    self._outcome(queue, outcome, seconds, item, status)
                    attempts = 0
                    continue
                attempts += 1
                self._outcome(queue, "retried", seconds, item, status)
                delay = min(self.max_retry_delay, self.retry_delay * 2 ** (attempts - 1))
                # Jitter, so that the queues of a receiver that was down do not all come back
                # at the same instant.
                if self._pause(delay * random.uniform(0.8, 1.0), lost):
                    return
        except StorageUnavailable as ex:
            logger.warning("hooks: queue %s paused, storage unavailable: %s", queue, ex)
        except Exception:
            logger.exception("hooks: delivering queue %s failed", queue)
        finally:
            with self._active_lock:
                # The queue may have been claimed again meanwhile (its lease lapsed): that
                # consumer's entry stays, or its lease would never be renewed.
                if self._active.get(queue) is lost:
                    del self._active[queue]
                    self._held.pop(queue, None)
            if not lost.is_set():
                with contextlib.suppress(StorageUnavailable):  # else the lease lapses itself
                    self.storage.release(queue, self.owner)
            self._wake.set()  # another queue may be waiting for this slot

    def _pause(self, seconds: float, lost: threading.Event) -> bool:
        """Wait ``seconds`` (a retry's delay); return True when the queue must be left."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._stopping.wait(min(left, 0.25)) or lost.is_set():
                return True

    def _outcome(
        self, queue: str, outcome: str, seconds: float, item: QueueItem, status: int | None
    ) -> None:
        if outcome in ("expired", "given_up"):
            logger.warning(
                "hooks: %s a copy in queue %s (queued %.1f s ago%s)",
                "dropped (expired)" if outcome == "expired" else "gave up on",
                queue,
                time.time() - item.enqueued_at,
                f", answered {status}" if status is not None else "",
            )
        stream = self.hooks.stream
        if stream is not None:
            stream.send(HookDelivered(queue, outcome, seconds, status or 0), key="hooks")

    # -- one delivery ---------------------------------------------------------------------

    def _deliver(self, copy: Copy) -> int | None:
        """Send ``copy`` once; return the status, None when no answer came, or
        :data:`REFUSED` when it must not be sent at all."""
        if copy.url.startswith("/"):
            return self._deliver_local(copy)
        # SECURITY: the allowed destinations may have shrunk since the copy was queued.
        if not self.hooks.allowed.allows(copy.url.partition("?")[0]):
            logger.warning("hooks: %s is no longer an allowed destination", copy.url[:200])
            return REFUSED
        return self._connections.send(copy)

    def _deliver_local(self, copy: Copy) -> int | None:
        """Answer ``copy`` by calling the app in process."""
        app = self.hooks.app
        if app is None:
            return None
        answer: list[str] = []

        def start_response(
            status: str, headers: Any, exc_info: Any = None
        ) -> Callable[[bytes], None]:
            answer[:] = [status]
            return no_write

        for _ in chunks(app(local_environ(copy), start_response)):
            pass  # the answer's body is not wanted; chunks() closes it
        return int(answer[0][:3]) if answer else None


#: The most queues a worker claims at each look for them.
CLAIM_BATCH = 2
#: What :meth:`Deliverer._deliver` returns for a copy it must not send (given up at once).
REFUSED = -1


class Connections:
    """Keep-alive connections to the listeners' external destinations, up to ``per_host``
    idle ones per scheme, host and port, shared by a worker's delivery threads.

    PERF: a delivery is one small request and its answer, from one thread, on the lean
    client of :mod:`.http1` (about 70 µs of CPU here, ``http.client`` 240, urllib3's pool
    650): deliveries cost a worker more than the requests that queued them.
    """

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self._idle: dict[tuple[str, str, int], list[http1.Connection]] = {}
        self._lock = threading.Lock()

    def send(self, copy: Copy) -> int | None:
        """Send ``copy`` to its URL; return the status, None when no answer came, or
        :data:`REFUSED` when it cannot be written as a request."""
        parts = urlsplit(copy.url)
        scheme, host = parts.scheme, parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            request = http1.encode_request(
                copy.method, target, http1.host_header(scheme, host, port), copy.headers, copy.body
            )
        except http1.Refused as ex:
            logger.warning("hooks: a copy for %s cannot be sent: %s", copy.url[:200], ex)
            return REFUSED
        key = (scheme, host, port)
        for attempt in (1, 2):
            connection, reused = self._get(key)
            try:
                if connection.sock is None:
                    connection.connect(min(5.0, copy.timeout))
                status = connection.exchange(request, copy.timeout, head=copy.method == "HEAD")
            except OSError as ex:  # (connection.exchange closed it)
                connection.close()
                # A kept-alive connection the destination closed meanwhile fails before any
                # answer: once more on a fresh one (at least once allows a repeat).
                if reused and attempt == 1:
                    continue
                logger.info("hooks: delivery to %s failed: %s", copy.url[:200], ex)
                return None
            if connection.sock is not None:
                self._put(key, connection)
            return status
        return None  # pragma: no cover - the loop returns

    def _get(self, key: tuple[str, str, int]) -> tuple[http1.Connection, bool]:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        return http1.Connection(*key), False

    def _put(self, key: tuple[str, str, int], connection: http1.Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.per_host:
                idle.append(connection)
                return
        connection.close()

    def clear(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()


def local_environ(copy: Copy) -> dict[str, Any]:
    """Return the WSGI environ of a copy delivered in process."""
    path, _, query = copy.url.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": copy.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "RAW_URI": copy.url,
        "REQUEST_URI": copy.url,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": copy.remote_addr,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(copy.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        CHAIN: tuple(copy.chain),
        DELIVERY: copy.listener,
    }
    add_headers(environ, copy.headers)  # (a copy has no Content-Length: it is the body's)
    if copy.host:
        environ["HTTP_HOST"] = copy.host
    if copy.body or copy.method in ("POST", "PUT", "PATCH"):
        environ["CONTENT_LENGTH"] = str(len(copy.body))
    return environ
