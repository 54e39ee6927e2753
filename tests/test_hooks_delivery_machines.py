"""Listener hooks' delivery under real servers: a worker killed mid-delivery, and two machines.

``workflowhttp serve tests.apps.listeners_app:app`` (real gunicorn, 2 sync workers, on
127.0.0.1) queues a copy of every ``PUT /data/...`` for the listeners registered over HTTP and
delivers it to a real receiving server (``tests/receivers.py``):

* a worker is SIGKILLed while it delivers its queue to a slow receiver (its PID read from the
  queue's lease in the storage: the SQLite file, or the Redis key ``<prefix>lease:<queue>``):
  nothing is lost, the copy in flight is delivered again, and only after the lease lapsed;
* two servers share one redis-server and deliver four queues written through both: each
  queue has one consumer at a time (the receiver never sees two of its deliveries at once),
  every copy arrives once, in each writer's order.

Leases are short (:data:`LEASE`); every wait is bounded; every process is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import servers
from tests.receivers import Receiver, receiver
from tests.redis_server import running

pytestmark = pytest.mark.gunicorn

APP = "tests.apps.listeners_app:app"
PREFIX = "workflowhttp:hooks:"  # RedisStorage's default key prefix
LEASE = 2.0  # seconds a queue's lease lasts unrenewed (the app's LISTENERS_LEASE)
SLOW = 0.5  # seconds the receiver takes per delivery in the crash test
ITEMS = 20  # copies queued in the crash test
SOON = 1.5  # seconds for a registration to reach every worker (the design's 1 s, and margin)

#: ``lease_of(queue)``: the queue's lease as the storage holds it now: its owner
#: (``host:pid:random``, ``""`` for none) and the seconds before it lapses.
LeaseOf = Callable[[str], tuple[str, float]]


@contextmanager
def shared_storage(backend: str, directory: Path) -> Iterator[tuple[str, LeaseOf]]:
    """A fresh storage for the servers (a redis-server, or a SQLite file), and how to read a
    queue's lease in it."""
    if backend == "redis":
        with running(directory / "redis") as redis_server, redis_server.client() as client:

            def redis_lease(queue: str) -> tuple[str, float]:
                key = f"{PREFIX}lease:{queue}"
                owner, left = client.get(key), client.pttl(key)
                return (owner or b"").decode(), max(left, 0) / 1000

            yield redis_server.url, redis_lease
        return
    path = directory / "hooks.sqlite3"

    def sqlite_lease(queue: str) -> tuple[str, float]:
        if not path.exists():
            return "", 0.0
        with closing(sqlite3.connect(path, timeout=5)) as connection:
            try:
                rows = connection.execute(
                    "SELECT owner, lease_until FROM workflowhttp_queues WHERE queue = ?", (queue,)
                ).fetchall()
            except sqlite3.OperationalError:  # no table yet
                return "", 0.0
        if not rows:
            return "", 0.0
        owner, lease_until = rows[0]
        return str(owner), max(float(lease_until) - time.time(), 0.0)

    yield f"sqlite:///{path}", sqlite_lease


def serve(directory: Path, storage: str, sink: Receiver, workers: int = 2) -> servers.Server:
    """Start the listeners' app with ``workers`` workers on ``storage``, delivering to ``sink``."""
    return servers.start(
        APP,
        directory,
        workers=workers,
        graceful_timeout=3,
        env={
            "LISTENERS_STORAGE": storage,
            "LISTENERS_ALLOWED": f"{sink.url}/",
            "LISTENERS_LEASE": str(LEASE),
        },
    )


def register(
    server: servers.Server, sink: Receiver, resource: str, id: str, queue_key: str = ""
) -> str:
    """Register a ``before`` listener of ``PUT`` on ``resource`` delivering to ``sink``'s
    ``/in`` (with an ``x-test-queue: <queue_key>`` header rule when given); its queue's name."""
    spec: dict[str, Any] = {"destination": f"{sink.url}/in", "methods": ["PUT"], "type": "before"}
    if queue_key:
        spec["headers"] = [{"header": "x-test-queue", "value": queue_key}]
    answer = server.request("PUT", f"{resource}/_hooks/listeners/http/{id}", spec)
    assert answer.status == 200, answer
    queue = answer.json["queue"]
    assert isinstance(queue, str) and queue, answer.json
    return queue


def put(server: servers.Server, path: str, body: dict[str, Any]) -> None:
    answer = server.request("PUT", path, body)
    assert answer.status == 200, answer


def distinct(deliveries: list[dict[str, Any]]) -> set[bytes]:
    return {delivery["body"] for delivery in deliveries}


def seqs(deliveries: list[dict[str, Any]]) -> list[int]:
    return [json.loads(delivery["body"])["seq"] for delivery in deliveries]


def wait_until_gone(server: servers.Server, pid: int, timeout: float = 10.0) -> None:
    """Wait until the master reaped its killed worker ``pid``."""
    deadline = time.monotonic() + timeout
    while pid in server.workers():
        assert time.monotonic() < deadline, f"worker {pid} still there {timeout}s after SIGKILL"
        time.sleep(0.02)


# -- a worker killed mid-delivery -----------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_worker_killed_mid_delivery_loses_nothing_and_its_queue_resumes_after_the_lease(
    tmp_path: Path, backend: str
) -> None:
    with (
        receiver() as sink,
        shared_storage(backend, tmp_path) as (url, lease_of),
        servers.serving(serve(tmp_path / "server", url, sink)) as server,
    ):
        queue = register(server, sink, "/data/orders", "audit")
        time.sleep(SOON)  # the other worker knows the listener too
        sink.delay(SLOW)
        for seq in range(ITEMS):  # all queued before the first delivery is answered
            put(server, f"/data/orders/{seq}", {"seq": seq})

        sink.wait_for(3, timeout=10 + 3 * SLOW)  # the queue is being delivered
        owner, _ = lease_of(queue)
        assert owner.count(":") >= 2, f"no lease on {queue} while it is delivered: {owner!r}"
        pid = int(owner.split(":")[-2])
        workers = server.workers()
        assert pid in workers, (owner, workers)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        before = sink.snapshot()
        in_flight = before[-1]
        # The precondition: the kill came while the receiver was still answering the last
        # copy it got (the killed worker never saw that answer).
        assert killed_at - in_flight["at"] < SLOW, "the kill came too late to be mid-delivery"
        wait_until_gone(server, pid)
        dead_owner, left = lease_of(queue)  # the dead worker's lease, not renewed any more
        assert dead_owner in (owner, ""), (owner, dead_owner)
        left += time.monotonic() - killed_at  # seconds from the kill to the lapse

        deadline = time.monotonic() + ITEMS * SLOW + LEASE + 15
        while len(distinct(sink.snapshot())) < ITEMS:
            seen = sorted(set(seqs(sink.snapshot())))
            assert time.monotonic() < deadline, (
                f"only {len(seen)} of {ITEMS} copies delivered: {seen}\n{server.output()}"
            )
            time.sleep(0.05)
        time.sleep(SLOW + 0.5)  # nothing more arrives (a third copy would be a bug)
        seen = sink.snapshot()

    after = seen[len(before) :]
    # Nothing lost: every copy arrived; the one in flight arrived again after the takeover,
    # then the rest, in order; nothing else twice.
    assert seqs(before) == list(range(len(before))), seqs(seen)
    assert seqs(after) == list(range(len(before) - 1, ITEMS)), seqs(seen)
    assert after[0]["body"] == in_flight["body"]
    # Not before the killed worker's lease lapsed: the first delivery after the kill came no
    # sooner than the lease it still held then (renewed every third of LEASE, so at least
    # two thirds of it), and not much later either.
    resumed = after[0]["at"] - killed_at
    assert resumed >= min(left, LEASE * 2 / 3) - 0.1, (resumed, left)
    assert resumed >= LEASE * 0.6, (resumed, left)
    assert resumed <= left + 5.0, (resumed, left)
    assert sink.max_in_flight("") == 1  # one consumer at a time, the dead one included


# -- two machines on one Redis --------------------------------------------------------------

QUEUES = 4  # resources with a listener each
WRITERS = 2  # per resource
BURSTS = 3  # per writer, each of BURST writes at once, then a pause in which queues run empty
BURST = 3
WRITES = BURSTS * BURST  # per writer
FIRST = -1  # the writer of each queue's first copy (delivered slower than a lease)


def test_two_servers_on_one_redis_deliver_each_queue_with_one_consumer_at_a_time(
    tmp_path: Path,
) -> None:
    with (
        receiver() as sink,
        shared_storage("redis", tmp_path) as (url, lease_of),
        ExitStack() as stack,
    ):
        fleet = [
            stack.enter_context(servers.serving(serve(tmp_path / name, url, sink)))
            for name in ("one", "two")
        ]
        queues = {
            f"q{index}": register(fleet[index % 2], sink, f"/data/q{index}", "feed", f"q{index}")
            for index in range(QUEUES)
        }
        time.sleep(SOON)  # every worker of both servers knows every listener

        # Who holds each queue's lease, sampled while the queues are delivered.
        owners: dict[str, set[str]] = {key: set() for key in queues}
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.01):
                for key, queue in queues.items():
                    owner, _ = lease_of(queue)
                    if owner:
                        owners[key].add(owner)

        failures: list[BaseException] = []

        def write(key: str, writer: int) -> None:
            try:
                for seq in range(WRITES):
                    # Alternately through both machines, in bursts: the queues fill, then
                    # run empty and are handed from consumer to consumer.
                    server = fleet[(seq + writer) % 2]
                    put(server, f"/data/{key}/{writer}", {"writer": writer, "seq": seq})
                    if seq % BURST == BURST - 1:
                        time.sleep(0.4)
            except BaseException as ex:  # reported by the test's thread
                failures.append(ex)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        writers = [
            threading.Thread(target=write, args=(key, writer), daemon=True)
            for key in queues
            for writer in range(WRITERS)
        ]
        total = QUEUES * (2 + WRITERS * WRITES)
        try:
            # First each queue's first copy, answered after more than a lease: the consumers
            # must keep their leases (renewed) while the other workers, of both machines, see
            # the second copy queued behind it and look for queues to claim. Then the writers.
            sink.delay(LEASE * 1.25)
            for index, key in enumerate(queues):
                for seq in range(2):
                    server = fleet[(index + seq) % 2]
                    put(server, f"/data/{key}/first", {"writer": FIRST, "seq": seq})
            sink.wait_for(QUEUES, timeout=10)
            sink.delay(0.05)
            sink.wait_for(2 * QUEUES, timeout=10 + LEASE * 2)
            for thread in writers:
                thread.start()
            for thread in writers:
                thread.join(30)
            assert not failures, failures
            assert not any(thread.is_alive() for thread in writers), "a writer hung"
            sink.wait_for(total, timeout=30)
            time.sleep(0.5)  # nothing more arrives
        finally:
            sampling.set()
            sampler.join(5)
        seen = sink.snapshot()
        outputs = "\n".join(server.output() for server in fleet)

    assert len(seen) == total, (len(seen), outputs[-3000:])
    for key in queues:
        mine = [delivery for delivery in seen if delivery["key"] == key]
        bodies = [json.loads(delivery["body"]) for delivery in mine]
        # Every copy once (nobody died: at least once is exactly once here), the first first.
        assert bodies[:2] == [{"writer": FIRST, "seq": seq} for seq in range(2)], bodies
        assert sorted((b["writer"], b["seq"]) for b in bodies[2:]) == [
            (writer, seq) for writer in range(WRITERS) for seq in range(WRITES)
        ], bodies
        # The path below the resource appended to the destination's.
        assert [d["path"] for d in mine] == [
            "/in/first" if b["writer"] == FIRST else f"/in/{b['writer']}" for b in bodies
        ]
        # FIFO per writer.
        for writer in range(WRITERS):
            assert [b["seq"] for b in bodies if b["writer"] == writer] == list(range(WRITES))
        # One consumer at a time.
        assert sink.max_in_flight(key) == 1, (key, owners[key])
    # The queues were delivered by more than one worker (else nothing was shared).
    assert len(set().union(*owners.values())) >= 2, owners


# -- a worker paused past its lease ---------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "workers"),
    [("sqlite", 2), ("redis", 2), ("sqlite", 1), ("redis", 1)],
    ids=["sqlite-taken-over", "redis-taken-over", "sqlite-alone", "redis-alone"],
)
def test_a_worker_paused_past_its_lease_delivers_nothing_beside_another_consumer(
    tmp_path: Path, backend: str, workers: int
) -> None:
    # A worker frozen mid-delivery (SIGSTOP: a long GC pause, a VM descheduled) for longer
    # than its lease. With 2 workers the other takes the queue over; alone, the lease just
    # lapses and the worker claims its queue again when it runs. Either way, when it runs
    # again it must not deliver the queue beside another consumer: not beside the worker
    # that took over, not beside a second consumer of its own.
    with (
        receiver() as sink,
        shared_storage(backend, tmp_path) as (url, lease_of),
        servers.serving(serve(tmp_path / "server", url, sink, workers)) as server,
    ):
        queue = register(server, sink, "/data/orders", "audit")
        time.sleep(SOON)
        sink.delay(SLOW)
        for seq in range(ITEMS):
            put(server, f"/data/orders/{seq}", {"seq": seq})
        sink.wait_for(3, timeout=10 + 3 * SLOW)
        owner, _ = lease_of(queue)
        assert owner.count(":") >= 2, f"no lease on {queue} while it is delivered: {owner!r}"
        pid = int(owner.split(":")[-2])
        assert pid in server.workers(), owner
        os.kill(pid, signal.SIGSTOP)
        paused_at = time.monotonic()
        try:
            deadline = time.monotonic() + LEASE + 10
            while True:  # until the lease lapsed (and, with 2 workers, was taken over)
                holder, left = lease_of(queue)
                if holder != owner or left == 0:
                    break
                assert time.monotonic() < deadline, "the paused worker's lease never lapsed"
                time.sleep(0.02)
            time.sleep(SLOW * 1.5)  # the new consumer, if any, is mid-delivery
        finally:
            os.kill(pid, signal.SIGCONT)
            resumed_at = time.monotonic() - paused_at
        deadline = time.monotonic() + ITEMS * SLOW + LEASE + 15
        while len(distinct(sink.snapshot())) < ITEMS or lease_of(queue)[0]:
            assert time.monotonic() < deadline, sorted(set(seqs(sink.snapshot())))
            time.sleep(0.05)
        seen = sink.snapshot()

    # One consumer at a time, and nothing lost.
    timeline = [
        (seq, round(d["at"] - paused_at, 2)) for seq, d in zip(seqs(seen), seen, strict=True)
    ]
    assert sink.max_in_flight("") == 1, (
        f"resumed {resumed_at:.2f} s after the pause; (seq, arrival s after it): {timeline}"
    )
    assert sorted(set(seqs(seen))) == list(range(ITEMS))
