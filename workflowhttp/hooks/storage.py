"""Where hooks are kept: one small interface, SQLite (the default) and Redis behind it.

A backend stores :class:`Record` values (a hook's kind, resource, id, its registration JSON and
when it expires) and tells a worker when another worker or machine changed them. Each worker
keeps its own in-memory index built from the records (see :mod:`.registry`); requests read
only that index, never the backend.

* :class:`SQLiteStorage` (``sqlite:///path/to/file``, the default): one file shared by every
  worker of a machine, in WAL mode. A change made by another process is seen by polling
  ``PRAGMA data_version`` (a counter SQLite bumps on every commit by another connection).
* :class:`~workflowhttp.hooks.redis.RedisStorage` (``redis://host:port/db``, the ``redis``
  extra): shared by every machine; changes are announced on a pub/sub channel.

Expiry is enforced by the index on every read; the backends also sweep expired records
(SQLite deletes them, Redis lets its key TTLs do it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from typing import Any, NamedTuple, Protocol
from urllib.parse import unquote, urlsplit

from ..errors import ConfigurationError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: SQLite's own busy handler alone
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "Entry",
    "QueueItem",
    "Record",
    "SQLiteStorage",
    "Storage",
    "StorageUnavailable",
    "open_storage",
]

logger = logging.getLogger("workflowhttp.hooks")


class StorageUnavailable(Exception):
    """The backend cannot be reached (Redis down, the SQLite file locked for too long)."""


class Record(NamedTuple):
    """One stored hook.

    Attributes:
        kind: ``"route"`` (``"listener"`` for listener hooks).
        resource: The hooked path (``"/data/orders"``), decoded, without a trailing slash.
        id: The listener's id; ``""`` for a route hook (one per resource).
        spec: The registration's JSON, as validated and stored.
        expires_at: Wall-clock seconds (``time.time()``) after which the hook never applies;
            ``None`` for a hook that never expires.
    """

    kind: str
    resource: str
    id: str
    spec: bytes
    expires_at: float | None


class Entry(NamedTuple):
    """A copy of a request to put into a listener's queue.

    Attributes:
        queue: The queue's name.
        data: The encoded copy (see :mod:`.delivery`).
        expires_at: Wall-clock seconds after which the copy is dropped undelivered (``None``:
            never).
        not_before: Wall-clock seconds before which it is not delivered (0: at once).
        coalesce: Add nothing when the queue already holds a copy not yet due (the
            ``reducedPropagation`` strategy: one notification stands for every change).
    """

    queue: str
    data: bytes
    expires_at: float | None = None
    not_before: float = 0.0
    coalesce: bool = False


class QueueItem(NamedTuple):
    """The oldest copy of a queue, as :meth:`Storage.head` returns it.

    Attributes:
        ref: The backend's handle for :meth:`Storage.remove`.
        data: The encoded copy.
        enqueued_at: Wall-clock seconds it was queued.
        expires_at: As in :class:`Entry`.
        not_before: As in :class:`Entry`.
    """

    ref: Any
    data: bytes
    enqueued_at: float
    expires_at: float | None
    not_before: float


class Storage(Protocol):
    """What a hooks backend does. Each method may raise :class:`StorageUnavailable`.

    ``open`` runs in each worker (after gunicorn's fork), ``close`` at shutdown. The other
    methods may be called from any thread of the worker.
    """

    url: str

    def open(self) -> None:
        """Connect (in the worker, after the fork)."""

    def close(self) -> None:
        """Disconnect; wake a thread blocked in :meth:`wait_for_change`."""

    def put(self, record: Record) -> None:
        """Store ``record``, replacing the one of the same kind, resource and id."""

    def delete(self, kind: str, resource: str, id: str) -> bool:
        """Remove a record; return whether one was there (and had not expired)."""

    def records(self) -> list[Record]:
        """Return every record that has not expired."""

    def wait_for_change(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; return whether records may have changed since the
        last call (a change by another process, or one this process cannot rule out)."""

    def sweep(self) -> int:
        """Remove expired records; return how many went."""

    def maintain(self) -> None:
        """Housekeeping off the request path, every second or so (SQLite: checkpoint the
        write-ahead log)."""

    # -- the listeners' queues (FIFO, one consumer each under a lease) --

    def enqueue(self, entries: list[Entry]) -> int:
        """Append every entry to its queue, all or none; return how many were added (a
        coalesced entry adds nothing)."""

    def claim(self, owner: str, lease: float, limit: int) -> list[str]:
        """Take the lease of up to ``limit`` queues that hold copies and have no consumer
        (none, or one whose lease lapsed); return their names."""

    def renew(self, queue: str, owner: str, lease: float) -> bool:
        """Extend ``owner``'s lease of ``queue``; return False when it is no longer theirs."""

    def release(self, queue: str, owner: str) -> None:
        """Give up ``owner``'s lease of ``queue`` (the queue is forgotten once empty)."""

    def head(self, queue: str) -> QueueItem | None:
        """Return the oldest copy of ``queue`` without removing it; None when empty."""

    def remove(self, queue: str, item: QueueItem) -> None:
        """Remove ``item`` (from :meth:`head`) from ``queue``; nothing when it is gone."""

    def queue_stats(self) -> dict[str, tuple[int, float]]:
        """Return each non-empty queue's length and its oldest copy's ``enqueued_at``."""


def open_storage(url: str | Storage) -> Storage:
    """Return the backend for ``url`` (``sqlite:///path`` or ``redis://host:port/db``), or
    ``url`` itself when it is a backend already.

    Raises:
        ConfigurationError: an unknown scheme, or the ``redis`` extra is not installed.
    """
    if not isinstance(url, str):
        return url
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return SQLiteStorage(url)
    if scheme in ("redis", "rediss", "unix"):
        try:
            from .redis import RedisStorage  # type: ignore[import-not-found, unused-ignore]
        except ImportError as ex:  # pragma: no cover - depends on the extra
            raise ConfigurationError(
                "hooks on Redis need the redis extra: pip install 'workflowhttp[redis]'"
            ) from ex
        storage: Storage = RedisStorage(url)
        return storage
    raise ConfigurationError(f"hooks storage must be sqlite:///path or redis://..., not {url!r}")


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS workflowhttp_hooks (
        kind TEXT NOT NULL,
        resource TEXT NOT NULL,
        id TEXT NOT NULL,
        spec BLOB NOT NULL,
        expires_at REAL,
        PRIMARY KEY (kind, resource, id)
    )""",
    # The queues that hold copies, each with its consumer's lease (owner '' and 0: none).
    """CREATE TABLE IF NOT EXISTS workflowhttp_queues (
        queue TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        lease_until REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS workflowhttp_queue_items (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        data BLOB NOT NULL,
        enqueued_at REAL NOT NULL,
        expires_at REAL,
        not_before REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS workflowhttp_queue_order ON workflowhttp_queue_items (queue, seq)",
    # A counter of the changes to the hooks (not to the queues): a worker reloads its index
    # when it moved, not on every commit of a copy (PRAGMA data_version counts those too).
    """CREATE TABLE IF NOT EXISTS workflowhttp_hooks_version (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        version INTEGER NOT NULL
    )""",
    "INSERT OR IGNORE INTO workflowhttp_hooks_version VALUES (0, 0)",
    *(
        f"""CREATE TRIGGER IF NOT EXISTS workflowhttp_hooks_{event.lower()}
            AFTER {event} ON workflowhttp_hooks
            BEGIN UPDATE workflowhttp_hooks_version SET version = version + 1; END"""
        for event in ("INSERT", "UPDATE", "DELETE")
    ),
    # PERF: a queue is known once it holds a copy, without a second statement per copy.
    """CREATE TRIGGER IF NOT EXISTS workflowhttp_queue_known
        AFTER INSERT ON workflowhttp_queue_items
        BEGIN INSERT OR IGNORE INTO workflowhttp_queues VALUES (NEW.queue, '', 0); END""",
)
_INSERT_ITEM = (
    "INSERT INTO workflowhttp_queue_items (queue, data, enqueued_at, expires_at, not_before) "
    "VALUES (?, ?, ?, ?, ?)"
)


class _WriterLock:
    """One writer at a time on a SQLite file, across processes: a ``flock`` on ``<file>-lock``.

    PERF: when another process holds SQLite's write lock, its busy handler sleeps 1 ms, then 2,
    5, 10..., though a write holds it for some 30 µs: under gunicorn, two workers queueing
    copies spent more time asleep than writing (2 sync workers: 0.47x the unhooked
    requests/s, 0.6x with this lock; ``python -m bench.listeners``). Writers wait here
    instead: a free lock is one system call, a held one is tried again after 50 µs, then
    twice as long each time, up to 1 ms, until ``timeout``. SQLite's busy handler stays for
    the writers that do not take this lock (its checkpoints, another program).
    """

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._fd = -1
        self._pid = 0

    def acquire(self) -> None:
        """Take the lock (called holding the storage's thread lock).

        Raises:
            StorageUnavailable: another process held it for more than ``timeout`` seconds.
        """
        if self._pid != os.getpid():  # never the descriptor a fork inherited (nor its lock)
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as ex:
                raise StorageUnavailable(f"sqlite write lock {self.path}: {ex}") from ex
            self._pid = os.getpid()
        fd = self._fd
        pause = 50e-6
        deadline = 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                now = time.monotonic()
                if not deadline:
                    deadline = now + self.timeout
                if now >= deadline:
                    raise StorageUnavailable(
                        f"sqlite {self.path}: another process held the write lock for more "
                        f"than {self.timeout:g} s"
                    ) from None
                time.sleep(min(pause, deadline - now))
                pause = min(pause * 2, 0.001)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def close(self) -> None:
        if self._pid == os.getpid():
            os.close(self._fd)
        self._fd, self._pid = -1, 0


#: What a reading statement holds besides the storage's thread lock: nothing.
_UNLOCKED: contextlib.nullcontext[None] = contextlib.nullcontext()


#: The size of the write-ahead log over which :meth:`SQLiteStorage.maintain` empties it.
MAX_WAL = 16 * 1024 * 1024


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _decode_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


class SQLiteStorage:
    """Hooks in one SQLite file (WAL mode), shared by every worker of a machine.

    ``sqlite:///relative/path`` and ``sqlite:////absolute/path`` as SQLAlchemy spells them;
    ``sqlite:///:memory:`` keeps hooks in one process only (tests).

    Args:
        url: The file's URL.
        busy_timeout: Seconds a write waits for another process's write lock.
    """

    def __init__(self, url: str, *, busy_timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "sqlite" or parts.netloc:
            raise ConfigurationError(f"not a sqlite:///path URL: {url!r}")
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
        if not path:
            raise ConfigurationError(f"sqlite URL without a path: {url!r}")
        self.url = url
        self.path = path
        self.busy_timeout = busy_timeout
        self._connection: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._version: int | None = None
        self._hooks_version: int | None = None
        self._closed = threading.Event()
        self._maintenance: sqlite3.Connection | None = None
        self._maintenance_pid = 0
        self._maintenance_lock = threading.Lock()
        self._writer: _WriterLock | contextlib.nullcontext[None] = (
            _WriterLock(f"{path}-lock", busy_timeout)
            if fcntl is not None and path != ":memory:"
            else _UNLOCKED
        )

    def open(self) -> None:
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        connection = self._connection
        if connection is not None and self._pid == os.getpid():
            return connection
        # A connection never crosses a fork: each worker opens its own.
        with self._lock:
            if self._connection is None or self._pid != os.getpid():
                if self.path != ":memory:":
                    directory = os.path.dirname(os.path.abspath(self.path))
                    os.makedirs(directory, exist_ok=True)
                try:
                    connection = sqlite3.connect(
                        self.path,
                        timeout=self.busy_timeout,
                        isolation_level=None,  # autocommit: each statement is its own commit
                        check_same_thread=False,  # used under self._lock by every thread
                    )
                    # SECURITY: a foreign row's text that is not UTF-8 would fail every read
                    # (sqlite3 raises on decoding it), the storage would count as down for
                    # good and every worker's index would freeze: decode with replacement.
                    connection.text_factory = _decode_text
                    connection.execute("PRAGMA journal_mode=WAL")
                    connection.execute("PRAGMA synchronous=NORMAL")
                    # PERF: no checkpoint (and its two fsyncs) in a request's commit:
                    # maintain() runs them from the registry's thread instead.
                    connection.execute("PRAGMA wal_autocheckpoint=0")
                    for statement in _SCHEMA:
                        connection.execute(statement)
                except sqlite3.Error as ex:
                    raise StorageUnavailable(f"sqlite {self.path}: {ex}") from ex
                self._connection = connection
                self._pid = os.getpid()
                self._closed.clear()
                self._version = None
                self._hooks_version = None
            return self._connection

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None and self._pid == os.getpid():
                connection.close()
            if isinstance(self._writer, _WriterLock):
                self._writer.close()
        with self._maintenance_lock:
            maintenance, self._maintenance = self._maintenance, None
            if maintenance is not None and self._maintenance_pid == os.getpid():
                maintenance.close()

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """Run one reading statement."""
        return self._execute(sql, args, _UNLOCKED)

    def _write(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """Run one writing statement (its own transaction), holding the writer lock."""
        return self._execute(sql, args, self._writer)

    def _execute(self, sql: str, args: tuple[Any, ...], writer: Any) -> list[Any]:
        connection = self._connect()
        with self._lock, writer:
            try:
                return connection.execute(sql, args).fetchall()
            except sqlite3.Error as ex:
                raise StorageUnavailable(f"sqlite {self.path}: {ex}") from ex

    def _transaction(self, work: Any) -> Any:
        """Run ``work(connection)`` in one write transaction (all or nothing)."""
        connection = self._connect()
        with self._lock, self._writer:
            try:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    result = work(connection)
                    connection.execute("COMMIT")
                except BaseException:
                    # Also when the COMMIT failed: a transaction left open would make every
                    # later BEGIN on this connection fail.
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                    raise
                return result
            except sqlite3.Error as ex:
                raise StorageUnavailable(f"sqlite {self.path}: {ex}") from ex

    def put(self, record: Record) -> None:
        self._write(
            "INSERT OR REPLACE INTO workflowhttp_hooks VALUES (?, ?, ?, ?, ?)",
            (record.kind, record.resource, record.id, record.spec, record.expires_at),
        )

    def delete(self, kind: str, resource: str, id: str) -> bool:
        rows = self._write(
            "DELETE FROM workflowhttp_hooks WHERE kind = ? AND resource = ? AND id = ? "
            "RETURNING expires_at",
            (kind, resource, id),
        )
        now = time.time()
        return any(expires is None or expires > now for (expires,) in rows)

    def records(self) -> list[Record]:
        rows = self._run(
            "SELECT kind, resource, id, spec, expires_at FROM workflowhttp_hooks "
            "WHERE expires_at IS NULL OR expires_at > ?",
            (time.time(),),
        )
        found = []
        for kind, resource, id, spec, expires_at in rows:
            # A foreign row (another program's, a hand edit) may hold anything: the index
            # skips what it cannot read; here only the types are made what Record says.
            # SECURITY: never bytes(spec) of a number: bytes(10**12) allocates a terabyte and
            # bytes(-1) raises, which would freeze every worker's index and fail the listing.
            if not isinstance(spec, bytes):
                spec = spec.encode() if isinstance(spec, str) else b""
            if not isinstance(expires_at, (int, float, type(None))):
                expires_at = 0.0
            found.append(Record(str(kind), str(resource), str(id), spec, expires_at))
        return found

    def wait_for_change(self, timeout: float) -> bool:
        if self._closed.wait(timeout):
            return False
        ((version,),) = self._run("PRAGMA data_version")
        if version == self._version:
            return False  # nothing committed by another connection
        self._version = version
        # Something was committed, most often a listener's copy: the hooks changed only if
        # their counter moved. The first call cannot rule out a change since the caller's
        # last read (the registry's load at start): it says there may have been one, as
        # Redis's first subscription does.
        rows = self._run("SELECT version FROM workflowhttp_hooks_version")
        hooks_version = rows[0][0] if rows else None
        changed = self._hooks_version is None or hooks_version != self._hooks_version
        self._hooks_version = hooks_version
        return changed

    def maintain(self) -> None:
        """Checkpoint the write-ahead log (PASSIVE: never waits for, nor blocks, a writer)
        on a connection of its own, so requests never wait for its fsyncs."""
        if self.path == ":memory:" or self._closed.is_set():
            return
        # SECURITY: under the lock close() takes too: closing a connection while another
        # thread runs a statement on it is a use-after-free in sqlite3 (a segfault).
        with self._maintenance_lock:
            if not self._closed.is_set():  # (closed while this thread waited for the lock)
                self._maintain()

    def _maintain(self) -> None:
        connection = self._maintenance
        if connection is None or self._maintenance_pid != os.getpid():
            try:
                connection = sqlite3.connect(
                    self.path, timeout=0.5, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error as ex:
                raise StorageUnavailable(f"sqlite {self.path}: {ex}") from ex
            self._maintenance, self._maintenance_pid = connection, os.getpid()
        try:
            # A passive checkpoint copies the log into the database but cannot rewind it while
            # writers never pause (under load, the log grew to 80 MB and more): once it is over
            # MAX_WAL bytes, TRUNCATE waits (up to the 0.5 s busy timeout) for a quiet moment
            # and empties it.
            mode = "TRUNCATE" if _size(self.path + "-wal") > MAX_WAL else "PASSIVE"
            connection.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        except sqlite3.Error as ex:
            raise StorageUnavailable(f"sqlite {self.path}: {ex}") from ex

    def sweep(self) -> int:
        rows = self._write(
            "DELETE FROM workflowhttp_hooks WHERE expires_at IS NOT NULL AND expires_at <= ? "
            "RETURNING kind",
            (time.time(),),
        )
        return len(rows)

    # -- queues -----------------------------------------------------------------------------

    def enqueue(self, entries: list[Entry]) -> int:
        if len(entries) == 1 and not entries[0].coalesce:
            # PERF: the common case (one listener) is one statement, its own transaction.
            entry = entries[0]
            self._write(
                _INSERT_ITEM,
                (entry.queue, entry.data, time.time(), entry.expires_at, entry.not_before),
            )
            return 1

        def work(connection: sqlite3.Connection) -> int:
            now = time.time()  # once the write lock is held
            added = 0
            for entry in entries:
                # Coalesced when the queue's newest copy is not due yet (Redis checks its
                # tail alike).
                newest = (
                    connection.execute(
                        "SELECT not_before FROM workflowhttp_queue_items WHERE queue = ? "
                        "ORDER BY seq DESC LIMIT 1",
                        (entry.queue,),
                    ).fetchone()
                    if entry.coalesce
                    else None
                )
                if newest is not None and isinstance(newest[0], (int, float)) and newest[0] > now:
                    continue
                connection.execute(
                    _INSERT_ITEM, (entry.queue, entry.data, now, entry.expires_at, entry.not_before)
                )
                added += 1
            return added

        result: int = self._transaction(work)
        return result

    def claim(self, owner: str, lease: float, limit: int) -> list[str]:
        if limit <= 0:
            return []  # (SQLite reads LIMIT -1 as no limit)

        def work(connection: sqlite3.Connection) -> list[str]:
            now = time.time()  # once the write lock is held: the lease is as long as asked
            free = connection.execute(
                "SELECT queue FROM workflowhttp_queues WHERE lease_until < ? "
                "ORDER BY random() LIMIT ?",
                (now, limit),
            ).fetchall()
            for (queue,) in free:
                connection.execute(
                    "UPDATE workflowhttp_queues SET owner = ?, lease_until = ? WHERE queue = ?",
                    (owner, now + lease, queue),
                )
            return [str(queue) for (queue,) in free]

        result: list[str] = self._transaction(work)
        return result

    def renew(self, queue: str, owner: str, lease: float) -> bool:
        rows = self._write(
            "UPDATE workflowhttp_queues SET lease_until = ? WHERE queue = ? AND owner = ? "
            "RETURNING queue",
            (time.time() + lease, queue, owner),
        )
        return bool(rows)

    def release(self, queue: str, owner: str) -> None:
        def work(connection: sqlite3.Connection) -> None:
            left = connection.execute(
                "SELECT 1 FROM workflowhttp_queue_items WHERE queue = ? LIMIT 1", (queue,)
            ).fetchone()
            if left is None:
                connection.execute(
                    "DELETE FROM workflowhttp_queues WHERE queue = ? AND owner = ?",
                    (queue, owner),
                )
            else:
                connection.execute(
                    "UPDATE workflowhttp_queues SET owner = '', lease_until = 0 "
                    "WHERE queue = ? AND owner = ?",
                    (queue, owner),
                )

        self._transaction(work)

    def head(self, queue: str) -> QueueItem | None:
        rows = self._run(
            "SELECT seq, data, enqueued_at, expires_at, not_before FROM workflowhttp_queue_items "
            "WHERE queue = ? ORDER BY seq LIMIT 1",
            (queue,),
        )
        if not rows:
            return None
        seq, data, enqueued_at, expires_at, not_before = rows[0]
        numbers = (enqueued_at, not_before, 0.0 if expires_at is None else expires_at)
        if not isinstance(data, bytes) or not all(isinstance(n, (int, float)) for n in numbers):
            # SECURITY: a foreign row (another program's, a hand edit) would stop its queue for
            # good, or bytes() of a huge number allocate without bound: it reads as a copy
            # that expired, which the consumer drops (and counts).
            return QueueItem(seq, b"", 0.0, 0.0, 0.0)
        return QueueItem(seq, data, enqueued_at, expires_at, not_before)

    def remove(self, queue: str, item: QueueItem) -> None:
        self._write("DELETE FROM workflowhttp_queue_items WHERE seq = ?", (item.ref,))

    def queue_stats(self) -> dict[str, tuple[int, float]]:
        rows = self._run(
            "SELECT queue, COUNT(*), MIN(enqueued_at) FROM workflowhttp_queue_items GROUP BY queue"
        )
        return {
            str(queue): (int(count), float(oldest) if isinstance(oldest, (int, float)) else 0.0)
            for queue, count, oldest in rows
        }

    def __repr__(self) -> str:
        return f"<SQLiteStorage {self.path}>"
