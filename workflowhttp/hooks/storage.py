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

import logging
import os
import sqlite3
import threading
import time
from typing import Any, NamedTuple, Protocol
from urllib.parse import unquote, urlsplit

from ..errors import ConfigurationError

__all__ = [
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


_SCHEMA = """
CREATE TABLE IF NOT EXISTS workflowhttp_hooks (
    kind TEXT NOT NULL,
    resource TEXT NOT NULL,
    id TEXT NOT NULL,
    spec BLOB NOT NULL,
    expires_at REAL,
    PRIMARY KEY (kind, resource, id)
)
"""


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
        self._closed = threading.Event()

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
                    connection.execute(_SCHEMA)
                except sqlite3.Error as ex:
                    raise StorageUnavailable(f"sqlite {self.path}: {ex}") from ex
                self._connection = connection
                self._pid = os.getpid()
                self._closed.clear()
                self._version = None
            return self._connection

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None and self._pid == os.getpid():
                connection.close()

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        connection = self._connect()
        with self._lock:
            try:
                return connection.execute(sql, args).fetchall()
            except sqlite3.Error as ex:
                raise StorageUnavailable(f"sqlite {self.path}: {ex}") from ex

    def put(self, record: Record) -> None:
        self._run(
            "INSERT OR REPLACE INTO workflowhttp_hooks VALUES (?, ?, ?, ?, ?)",
            (record.kind, record.resource, record.id, record.spec, record.expires_at),
        )

    def delete(self, kind: str, resource: str, id: str) -> bool:
        rows = self._run(
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
        # The first call cannot rule out a change since the caller's last read (the registry's
        # load at start): say there may have been one, as Redis's first subscription does.
        changed = self._version is None or version != self._version
        self._version = version
        return changed

    def sweep(self) -> int:
        rows = self._run(
            "DELETE FROM workflowhttp_hooks WHERE expires_at IS NOT NULL AND expires_at <= ? "
            "RETURNING kind",
            (time.time(),),
        )
        return len(rows)

    def __repr__(self) -> str:
        return f"<SQLiteStorage {self.path}>"
