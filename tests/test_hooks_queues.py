"""The listeners' queues, one conformance suite over both backends (``Storage``'s queue part).

Every test runs on SQLite (a file in the test's directory) and on a real redis-server
(``tests/redis_server.py``; skipped when it is missing, failed under
``WORKFLOWHTTP_REQUIRE_REDIS=1``): FIFO order, all-or-none enqueues, coalescing, one owner
per queue (two owners, racing threads, racing processes), leases that lapse and are taken
over, release, remove, the statistics, and Redis stopped. Leases are 0.2 s; every wait is
bounded.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import RedisServer, running
from workflowhttp.hooks.storage import (
    Entry,
    QueueItem,
    SQLiteStorage,
    Storage,
    StorageUnavailable,
    open_storage,
)

LEASE = 0.2  # seconds
LAPSE = 0.3  # long enough for a LEASE to lapse
CHILD_DEADLINE = 30.0  # seconds for a spawned process to start, claim and answer


@dataclass
class Backend:
    """One backend under test: its URL, a way to open more clients on it (other workers),
    and the redis-server behind it (None for SQLite)."""

    name: str
    url: str
    server: RedisServer | None
    opened: list[Storage]

    def open(self) -> Storage:
        storage = open_storage(self.url)
        storage.open()
        self.opened.append(storage)
        return storage


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        found = Backend("sqlite", f"sqlite:///{tmp_path}/hooks.db", None, [])
        try:
            yield found
        finally:
            for storage in found.opened:
                storage.close()
        return
    with running(tmp_path / "redis") as server:
        found = Backend("redis", server.url, server, [])
        try:
            yield found
        finally:
            for storage in found.opened:
                storage.close()


@pytest.fixture
def storage(backend: Backend) -> Storage:
    return backend.open()


def drain(storage: Storage, queue: str) -> list[bytes]:
    """Take every copy of ``queue`` in order, as a consumer does (head, then remove)."""
    taken = []
    while (item := storage.head(queue)) is not None:
        taken.append(item.data)
        storage.remove(queue, item)
    return taken


def lengths(storage: Storage) -> dict[str, int]:
    return {queue: length for queue, (length, _) in storage.queue_stats().items()}


# -- order and atomicity --------------------------------------------------------------------


def test_each_queue_is_fifo(storage: Storage) -> None:
    for number in range(10):
        assert storage.enqueue([Entry("a", b"a%d" % number)]) == 1
    batch = [
        Entry("b" if n % 2 else "a", b"%s%d" % (b"b" if n % 2 else b"a", n)) for n in range(10, 20)
    ]
    assert storage.enqueue(batch) == 10
    assert drain(storage, "a") == [b"a%d" % n for n in [*range(10), 10, 12, 14, 16, 18]]
    assert drain(storage, "b") == [b"b%d" % n for n in (11, 13, 15, 17, 19)]
    assert storage.head("a") is None


def test_head_returns_what_was_queued(storage: Storage) -> None:
    before = time.time()
    storage.enqueue([Entry("q", b"\x00copy\xff", expires_at=before + 60, not_before=before - 1)])
    item = storage.head("q")
    assert item is not None
    assert (item.data, item.expires_at, item.not_before) == (
        b"\x00copy\xff",
        before + 60,
        before - 1,
    )
    assert before <= item.enqueued_at <= time.time()
    assert storage.head("q") == item, "head removes nothing"
    assert storage.head("elsewhere") is None


def spoiled(backend: Backend, queue: str) -> Entry:
    """An entry that cannot be stored: no data for SQLite (NOT NULL); for Redis a queue key
    that some other program filled with a string (the script refuses its type)."""
    if backend.server is None:
        return Entry(queue, None)  # type: ignore[arg-type]
    with backend.server.client() as client:
        client.set(f"workflowhttp:hooks:queue:{queue}", b"not a list")
    return Entry(queue, b"fine")


def test_an_enqueue_is_all_or_none(backend: Backend, storage: Storage) -> None:
    storage.enqueue([Entry("kept", b"before")])
    entries = [Entry("kept", b"one"), Entry("new", b"two"), spoiled(backend, "bad")]
    with pytest.raises(StorageUnavailable):
        storage.enqueue(entries)
    assert lengths(storage) == {"kept": 1}
    assert storage.claim("worker", LEASE, 10) == ["kept"], "'new' was not left behind"
    assert drain(storage, "kept") == [b"before"]
    # The storage still works after the refused write.
    assert storage.enqueue([Entry("new", b"later")]) == 1
    assert drain(storage, "new") == [b"later"]


def test_enqueuing_nothing_adds_nothing(storage: Storage) -> None:
    assert storage.enqueue([]) == 0
    assert storage.queue_stats() == {}
    assert storage.claim("worker", LEASE, 10) == []


# -- coalescing -----------------------------------------------------------------------------


def test_a_copy_not_yet_due_stands_for_later_coalescing_ones(storage: Storage) -> None:
    later = time.time() + 60
    assert storage.enqueue([Entry("n", b"first", not_before=later, coalesce=True)]) == 1
    assert storage.enqueue([Entry("n", b"second", not_before=later, coalesce=True)]) == 0
    # Within one call too, and other queues are not affected.
    two = [Entry("m", b"m1", not_before=later, coalesce=True)] * 2
    assert storage.enqueue([*two, Entry("n", b"third", not_before=later, coalesce=True)]) == 1
    assert lengths(storage) == {"n": 1, "m": 1}
    assert drain(storage, "n") == [b"first"]


def test_a_copy_already_due_does_not_coalesce(storage: Storage) -> None:
    past = time.time() - 1
    assert storage.enqueue([Entry("n", b"first", not_before=past, coalesce=True)]) == 1
    assert storage.enqueue([Entry("n", b"second", not_before=past, coalesce=True)]) == 1
    # A copy that does not coalesce is always added, even behind one not yet due.
    assert storage.enqueue([Entry("n", b"soon", not_before=time.time() + 60, coalesce=True)]) == 1
    assert storage.enqueue([Entry("n", b"plain")]) == 1
    assert drain(storage, "n") == [b"first", b"second", b"soon", b"plain"]


# -- leases ---------------------------------------------------------------------------------


def test_a_queue_has_one_owner_at_a_time(backend: Backend, storage: Storage) -> None:
    other = backend.open()
    storage.enqueue([Entry(name, b"x") for name in ("a", "b", "c")])
    assert sorted(storage.claim("one", LEASE, 2) + other.claim("two", LEASE, 10)) == ["a", "b", "c"]
    assert storage.claim("one", LEASE, 10) == []
    assert other.claim("two", LEASE, 10) == []
    assert other.claim("three", LEASE, 10) == []


def test_claim_takes_up_to_limit_queues(storage: Storage) -> None:
    storage.enqueue([Entry(f"q{n}", b"x") for n in range(5)])
    assert storage.claim("worker", LEASE, 0) == []
    first = storage.claim("worker", LEASE, 2)
    assert len(first) == 2
    rest = storage.claim("worker", LEASE, 10)
    assert sorted(first + rest) == [f"q{n}" for n in range(5)]


def test_a_lapsed_lease_is_taken_over_and_the_old_owner_cannot_renew(
    backend: Backend, storage: Storage
) -> None:
    other = backend.open()
    storage.enqueue([Entry("q", b"x")])
    assert storage.claim("one", LEASE, 10) == ["q"]
    assert other.claim("two", LEASE, 10) == []
    time.sleep(LAPSE)
    assert other.claim("two", LEASE, 10) == ["q"]
    assert storage.renew("q", "one", LEASE) is False
    assert other.renew("q", "two", LEASE) is True
    # The old owner's release does not end the new owner's lease.
    storage.release("q", "one")
    assert storage.claim("three", LEASE, 10) == []
    assert other.renew("q", "two", LEASE) is True


def test_renew_keeps_the_lease(backend: Backend, storage: Storage) -> None:
    other = backend.open()
    storage.enqueue([Entry("q", b"x")])
    assert storage.claim("one", LEASE, 10) == ["q"]
    for _ in range(3):
        time.sleep(LEASE / 2)
        assert storage.renew("q", "one", LEASE) is True
    assert other.claim("two", LEASE, 10) == []
    assert other.renew("q", "two", LEASE) is False
    assert storage.renew("unknown", "one", LEASE) is False


def test_release_of_an_empty_queue_forgets_it(backend: Backend, storage: Storage) -> None:
    other = backend.open()
    storage.enqueue([Entry("q", b"x")])
    assert storage.claim("one", LEASE, 10) == ["q"]
    assert drain(storage, "q") == [b"x"]
    storage.release("q", "one")
    assert storage.queue_stats() == {}
    assert other.claim("two", LEASE, 10) == []
    time.sleep(LAPSE)
    assert other.claim("two", LEASE, 10) == [], "forgotten, not merely unleased"
    # Queued again, it is claimable again.
    storage.enqueue([Entry("q", b"y")])
    assert other.claim("two", LEASE, 10) == ["q"]


def test_release_of_a_queue_with_copies_makes_it_claimable_at_once(
    backend: Backend, storage: Storage
) -> None:
    other = backend.open()
    storage.enqueue([Entry("q", b"x"), Entry("q", b"y")])
    assert storage.claim("one", LEASE, 10) == ["q"]
    item = storage.head("q")
    assert item is not None
    storage.remove("q", item)
    storage.release("q", "one")
    assert other.claim("two", LEASE, 10) == ["q"], "no wait for the lease to lapse"
    assert drain(other, "q") == [b"y"]


def test_a_queue_emptied_by_a_consumer_that_died_is_claimed_then_forgotten(
    backend: Backend, storage: Storage
) -> None:
    other = backend.open()
    storage.enqueue([Entry("q", b"x")])
    assert storage.claim("dies", LEASE, 10) == ["q"]
    drain(storage, "q")  # and it never releases
    time.sleep(LAPSE)
    assert other.claim("two", LEASE, 10) == ["q"]
    assert other.head("q") is None
    other.release("q", "two")
    assert other.claim("two", LEASE, 10) == []


# -- remove ---------------------------------------------------------------------------------


def test_remove_of_a_gone_copy_does_nothing(storage: Storage) -> None:
    # Two copies alike in every byte they were given, queued in one call.
    storage.enqueue([Entry("q", b"same"), Entry("q", b"same"), Entry("q", b"last")])
    item = storage.head("q")
    assert item is not None
    storage.remove("q", item)
    storage.remove("q", item)
    assert lengths(storage) == {"q": 2}, "the second remove took the other copy"
    assert drain(storage, "q") == [b"same", b"last"]
    storage.remove("q", item)
    assert storage.head("q") is None


def test_a_stale_consumer_removes_nothing_after_a_takeover(
    backend: Backend, storage: Storage
) -> None:
    other = backend.open()
    storage.enqueue([Entry("q", b"first"), Entry("q", b"second")])
    assert storage.claim("slow", LEASE, 10) == ["q"]
    stale = storage.head("q")
    assert stale is not None
    time.sleep(LAPSE)
    assert other.claim("fast", LEASE, 10) == ["q"]
    fresh = other.head("q")
    assert fresh is not None and fresh.data == b"first"
    other.remove("q", fresh)
    storage.remove("q", stale)  # delivered again by the slow one: at least once
    assert drain(other, "q") == [b"second"]


# -- statistics -----------------------------------------------------------------------------


def test_queue_stats_counts_and_dates_each_queue(storage: Storage) -> None:
    assert storage.queue_stats() == {}
    before = time.time()
    storage.enqueue([Entry("a", b"1"), Entry("b", b"1")])
    time.sleep(0.02)
    middle = time.time()
    storage.enqueue([Entry("a", b"2"), Entry("a", b"3")])
    stats = storage.queue_stats()
    assert sorted(stats) == ["a", "b"]
    assert stats["a"][0] == 3 and stats["b"][0] == 1
    assert before <= stats["a"][1] <= middle
    item = storage.head("a")
    assert item is not None and stats["a"][1] == item.enqueued_at
    storage.remove("a", item)
    assert storage.queue_stats()["a"][0] == 2
    assert storage.queue_stats()["a"][1] >= middle
    drain(storage, "b")
    assert sorted(storage.queue_stats()) == ["a"], "an empty queue is not listed"


# -- races ----------------------------------------------------------------------------------


QUEUES = [f"race{n}" for n in range(6)]


@pytest.mark.parametrize("shared", [True, False], ids=["one-client", "a-client-each"])
def test_racing_threads_never_share_a_queue(
    backend: Backend, storage: Storage, shared: bool
) -> None:
    threads = 8
    clients = [storage if shared else backend.open() for _ in range(threads)]
    for _ in range(5):
        storage.enqueue([Entry(name, b"x") for name in QUEUES])
        start = threading.Barrier(threads)
        claimed: dict[int, list[str]] = {}

        def take(number: int, start: threading.Barrier, claimed: dict[int, list[str]]) -> None:
            start.wait(5)
            claimed[number] = clients[number].claim(f"owner{number}", 5.0, len(QUEUES))

        workers = [threading.Thread(target=take, args=(n, start, claimed)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(10)
        assert len(claimed) == threads, "a thread did not finish"
        every = [name for names in claimed.values() for name in names]
        assert sorted(every) == QUEUES, claimed
        for number, names in claimed.items():
            for name in names:
                drain(storage, name)
                storage.release(name, f"owner{number}")
        assert storage.queue_stats() == {}


def claim_in_a_child(url: str, owner: str, ready: Any, go: Any, answers: Any) -> None:
    """Run in a spawned process: open the storage, wait for ``go``, claim, answer."""
    storage = open_storage(url)
    storage.open()
    try:
        ready.set()
        go.wait(CHILD_DEADLINE)
        answers.put((owner, storage.claim(owner, 5.0, len(QUEUES))))
    finally:
        storage.close()


def enqueue_in_a_child(url: str, owner: str, ready: Any, go: Any, answers: Any) -> None:
    """Run in a spawned process: open the storage, wait for ``go``, queue ``COPIES`` copies
    into one queue one call at a time (as requests do), answer."""
    storage = open_storage(url)
    storage.open()
    try:
        ready.set()
        go.wait(CHILD_DEADLINE)
        for number in range(COPIES):
            storage.enqueue([Entry("shared", f"{owner}-{number}".encode())])
        answers.put((owner, COPIES))
    finally:
        storage.close()


COPIES = 200


def race(url: str, target: Callable[..., None]) -> dict[str, Any]:
    """Run ``target`` in two spawned processes, ``left`` and ``right``, started together;
    return their answers by owner (every child stopped by its PID, also on failure)."""
    context = multiprocessing.get_context("spawn")
    answers = context.Queue()
    go = context.Event()
    children = []
    try:
        for owner in ("left", "right"):
            ready = context.Event()
            child = context.Process(target=target, args=(url, owner, ready, go, answers))
            child.start()
            children.append(child)
            assert ready.wait(CHILD_DEADLINE), f"{owner} did not start"
        go.set()
        answered = dict(answers.get(timeout=CHILD_DEADLINE) for _ in children)
        for child in children:
            child.join(CHILD_DEADLINE)
            assert child.exitcode == 0
    finally:
        for child in children:
            if child.is_alive() and child.pid is not None:
                with suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                child.join(5)
        answers.close()
        answers.join_thread()
    return answered


def test_racing_processes_never_share_a_queue(backend: Backend, storage: Storage) -> None:
    storage.enqueue([Entry(name, b"x") for name in QUEUES])
    claimed = race(backend.url, claim_in_a_child)
    assert sorted(claimed) == ["left", "right"]
    assert sorted(claimed["left"] + claimed["right"]) == QUEUES, claimed


def test_racing_processes_queue_every_copy_each_in_its_order(
    backend: Backend, storage: Storage
) -> None:
    """Two workers queueing into one queue at once (SQLite: they take turns at the writer
    lock): nothing lost, and each one's copies in the order it queued them."""
    assert race(backend.url, enqueue_in_a_child) == {"left": COPIES, "right": COPIES}
    taken = [data.decode() for data in drain(storage, "shared")]
    assert len(taken) == 2 * COPIES
    for owner in ("left", "right"):
        assert [t for t in taken if t.startswith(owner)] == [
            f"{owner}-{n}" for n in range(COPIES)
        ]


def test_a_sqlite_write_waits_for_the_writer_lock_then_gives_up(tmp_path: Path) -> None:
    """SQLite's writers take turns at ``<file>-lock`` (a ``flock``): while another process
    holds it for longer than ``busy_timeout``, a write is refused as unavailable (a request
    then answers 503) and reads go on; once it is free, writes go through again."""
    import fcntl

    path = tmp_path / "queues.sqlite3"
    storage = SQLiteStorage(f"sqlite:///{path}", busy_timeout=0.2)
    storage.open()
    try:
        storage.enqueue([Entry("q", b"first")])
        holder = os.open(f"{path}-lock", os.O_RDWR)  # its own open file: as another process
        try:
            fcntl.flock(holder, fcntl.LOCK_EX)
            with pytest.raises(StorageUnavailable, match="write lock"):
                storage.enqueue([Entry("q", b"second")])
            with pytest.raises(StorageUnavailable, match="write lock"):
                storage.claim("one", LEASE, 10)
            assert lengths(storage) == {"q": 1}  # reads do not wait
        finally:
            os.close(holder)  # (releases the lock)
        storage.enqueue([Entry("q", b"second")])
        assert drain(storage, "q") == [b"first", b"second"]
    finally:
        storage.close()


# -- Redis down -----------------------------------------------------------------------------


CALLS: list[tuple[str, Callable[[Storage], object]]] = [
    ("enqueue", lambda s: s.enqueue([Entry("q", b"x")])),
    ("claim", lambda s: s.claim("one", LEASE, 10)),
    ("renew", lambda s: s.renew("q", "one", LEASE)),
    ("release", lambda s: s.release("q", "one")),
    ("head", lambda s: s.head("q")),
    ("remove", lambda s: s.remove("q", QueueItem(b"gone", b"x", 0.0, None, 0.0))),
    ("queue_stats", lambda s: s.queue_stats()),
]


@pytest.mark.parametrize("call", [call for _, call in CALLS], ids=[name for name, _ in CALLS])
def test_every_queue_call_says_unavailable_while_redis_is_stopped(
    tmp_path: Path, call: Callable[[Storage], object]
) -> None:
    with running(tmp_path / "redis") as server:
        from workflowhttp.hooks.redis import RedisStorage

        storage = RedisStorage(server.url, socket_timeout=0.5)
        storage.open()
        try:
            storage.enqueue([Entry("q", b"x")])  # the scripts are loaded; then it goes
            server.stop()
            with pytest.raises(StorageUnavailable):
                call(storage)
            # Back, empty: the scripts are loaded again without a word.
            server.restart()
            assert storage.enqueue([Entry("q", b"y")]) == 1
            assert storage.claim("one", LEASE, 10) == ["q"]
            assert drain(storage, "q") == [b"y"]
        finally:
            storage.close()


def test_a_foreign_value_at_a_redis_queue_head_reads_as_expired(tmp_path: Path) -> None:
    with running(tmp_path / "redis") as server:
        storage = open_storage(server.url)
        storage.open()
        try:
            with server.client() as client:
                client.rpush("workflowhttp:hooks:queue:q", b"\xc1 not msgpack")
            storage.enqueue([Entry("q", b"after")])
            item = storage.head("q")
            assert item is not None
            assert item.expires_at is not None and item.expires_at < time.time()
            storage.remove("q", item)
            assert drain(storage, "q") == [b"after"]
        finally:
            storage.close()


def test_maintenance_empties_a_write_ahead_log_grown_past_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workflowhttp.hooks.storage as storage_module

    monkeypatch.setattr(storage_module, "MAX_WAL", 64 * 1024)
    storage = SQLiteStorage(f"sqlite:///{tmp_path / 'queues.sqlite3'}")
    storage.open()
    try:
        for _ in range(20):
            storage.enqueue([Entry(f"q{n}", b"x" * 2000) for n in range(10)])
        wal = tmp_path / "queues.sqlite3-wal"
        assert wal.stat().st_size > 64 * 1024  # requests never checkpoint (PERF)
        storage.maintain()
        assert wal.stat().st_size == 0
        assert sum(length for length, _ in storage.queue_stats().values()) == 200
    finally:
        storage.close()


@pytest.mark.parametrize("limit", [0, -1], ids=["zero", "negative"])
def test_a_claim_of_no_queue_claims_none(storage: Storage, limit: int) -> None:
    storage.enqueue([Entry("a", b"1"), Entry("b", b"2")])
    assert storage.claim("me", LEASE, limit) == []
    assert sorted(storage.claim("other", LEASE, 5)) == ["a", "b"]


def test_coalescing_looks_at_the_queues_newest_copy(storage: Storage) -> None:
    # A queue shared by a reducedPropagation listener and a plain one (one X-Queue): the
    # plain copy after a pending notification is newer, so the next notification is queued.
    later = time.time() + 60
    storage.enqueue([Entry("shared", b"notify-1", not_before=later, coalesce=True)])
    storage.enqueue([Entry("shared", b"plain")])
    assert storage.enqueue([Entry("shared", b"notify-2", not_before=later, coalesce=True)]) == 1
    assert storage.enqueue([Entry("shared", b"notify-3", not_before=later, coalesce=True)]) == 0
    assert storage.queue_stats()["shared"][0] == 3


@pytest.mark.parametrize(
    "data, enqueued_at",
    [("text, not bytes", 1.0), (10**12, 1.0), (b"ok", "yesterday")],
    ids=["text", "a huge number", "a date as text"],
)
def test_a_foreign_row_at_a_sqlite_queue_head_reads_as_expired(
    tmp_path: Path, data: object, enqueued_at: object
) -> None:
    import sqlite3

    path = tmp_path / "queues.sqlite3"
    storage = SQLiteStorage(f"sqlite:///{path}")
    storage.open()
    try:
        storage.enqueue([Entry("q", b"placeholder")])
        with sqlite3.connect(path) as foreign:
            foreign.execute(
                "UPDATE workflowhttp_queue_items SET data = ?, enqueued_at = ?",
                (data, enqueued_at),
            )
        head = storage.head("q")
        assert head is not None and head.expires_at == 0.0 and head.data == b""
        storage.remove("q", head)
        assert storage.head("q") is None
        storage.queue_stats()  # no exception either
    finally:
        storage.close()


def test_a_writer_lock_file_that_cannot_be_opened_is_unavailable_not_an_error(
    tmp_path: Path,
) -> None:
    """A ``<file>-lock`` that cannot be opened (here a directory stands there) makes writes
    unavailable (a request answers 503), never an OSError that would be a 500."""
    path = tmp_path / "queues.sqlite3"
    (tmp_path / "queues.sqlite3-lock").mkdir()
    storage = SQLiteStorage(f"sqlite:///{path}")
    storage.open()
    try:
        with pytest.raises(StorageUnavailable, match="lock"):
            storage.enqueue([Entry("q", b"x")])
        assert lengths(storage) == {}  # reads go on
    finally:
        storage.close()
