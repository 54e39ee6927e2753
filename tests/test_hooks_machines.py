"""Two machines, simulated: two ``workflowhttp serve`` processes (real gunicorn, 2 sync workers
each, on two free ports of 127.0.0.1) sharing one registry, a redis-server or one SQLite file.

A route hook registered through one server is applied by every worker of both within a second,
and an unregistration likewise; each answer names the worker (its PID) that gave it. Then the
SQLite file's own faults: a foreign row is skipped and logged, and a change made between a
worker's first load and its first poll is not missed.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests import servers
from tests.redis_server import running
from workflowhttp import App, http
from workflowhttp.hooks import Entry, Hooks, Record, SQLiteStorage
from workflowhttp.testing import TestClient

pytestmark = pytest.mark.gunicorn

SOON = 1.0  # the bound for a change to reach every worker of every machine
HOLD = 100  # ms each probe holds its worker, so that the other probe reaches the other one


@contextmanager
def shared_storage(backend: str, directory: Path) -> Iterator[str]:
    """The URL of a fresh registry both servers share: a redis-server, or a SQLite file."""
    if backend == "redis":
        with running(directory / "redis") as redis_server:
            yield redis_server.url
    else:
        yield f"sqlite:///{directory}/hooks.sqlite3"


def probe(server: servers.Server) -> list[tuple[int, str]]:
    """Send two requests for ``/data/x`` to ``server`` at once; return who answered each:
    ``(pid, "hook")`` when a hook forwarded it, ``(pid, "app")`` when the app's route did.
    Each holds its sync worker, so the two usually reach the two workers."""
    answers: list[tuple[int, str]] = []

    def one() -> None:
        body = server.get_json(f"/data/x?hold={HOLD}")
        assert body["rest"] == "x", body
        answers.append((body["pid"], body["who"]))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(answers) == 2, "a probe failed (see the output above)"
    return answers


def every_worker_answers(
    fleet: list[servers.Server], who: str, since: float, within: float
) -> float:
    """Probe every server until each of its workers answered as ``who``; return the seconds
    that took from ``since``. Fail when it takes longer than ``within``."""
    workers = {server.port: server.workers() for server in fleet}
    assert all(len(pids) == 2 for pids in workers.values()), workers
    waiting = {(server.port, pid) for server in fleet for pid in workers[server.port]}
    while waiting:
        if time.monotonic() - since > within:
            pytest.fail(f"workers {sorted(waiting)} did not answer as the {who} within {within}s")
        for server in fleet:
            for pid, answered in probe(server):
                assert pid in workers[server.port], (pid, workers)
                if answered == who:
                    waiting.discard((server.port, pid))
    return time.monotonic() - since


@pytest.mark.parametrize("backend", ["redis", "sqlite"])
def test_a_change_through_one_server_applies_in_every_worker_of_the_other_within_a_second(
    tmp_path: Path, backend: str
) -> None:
    with shared_storage(backend, tmp_path) as url, ExitStack() as stack:
        fleet = [
            stack.enter_context(
                servers.serving(
                    servers.start(
                        "tests.apps.hooks_app:app",
                        tmp_path / name,
                        workers=2,
                        graceful_timeout=3,
                        env={"HOOKS_STORAGE": url},
                    )
                )
            )
            for name in ("one", "two")
        ]
        one, two = fleet
        every_worker_answers(fleet, "app", time.monotonic(), within=5.0)  # nothing hooked yet

        answer = one.request("PUT", "/data/_hooks/route", {"destination": "/target"})
        assert answer.status == 200, answer
        every_worker_answers(fleet, "hook", time.monotonic(), within=SOON)
        listed = two.get_json("/_hooks/routes")["routes"]
        assert [route["resource"] for route in listed] == ["/data"]

        answer = two.request("DELETE", "/data/_hooks/route")
        assert answer.status == 200, answer
        every_worker_answers(fleet, "app", time.monotonic(), within=SOON)
        assert one.get_json("/_hooks/routes") == {"routes": []}


# -- the SQLite file's own faults -----------------------------------------------------------


@http.GET("/plain")
def plain() -> dict[str, bool]:
    return {"plain": True}


@http.ANY("/target/{rest:path}")
def target(rest: str) -> dict[str, str]:
    return {"target": rest}


# (the row's values, whether the registry logs it: a readable row is a hook, not a fault)
FOREIGN_ROWS = [
    pytest.param("'route', '/bad', '', -1, NULL", True, id="spec-a-negative-number"),
    pytest.param("'route', '/bad', '', 1000000000000, NULL", True, id="spec-a-huge-number"),
    pytest.param("'route', '/bad', '', 1.5, NULL", True, id="spec-a-float"),
    pytest.param("'route', '/bad', '', 'not json', NULL", True, id="spec-text-not-json"),
    pytest.param("'route', '/bad', '', x'ff00', NULL", True, id="spec-binary"),
    pytest.param(
        "'route', 5, '', '{\"destination\": \"/target\"}', NULL", True, id="resource-a-number"
    ),
    pytest.param("CAST(x'ff' AS TEXT), '/bad', '', '{}', NULL", True, id="kind-not-utf8"),
    pytest.param("'foreign', '/bad', '', '{}', NULL", True, id="unknown-kind"),
    pytest.param(
        "'route', CAST(x'2fff' AS TEXT), '', '{\"destination\": \"/target\"}', NULL",
        False,
        id="resource-not-utf8",
    ),
    pytest.param(
        "'route', '/bad', '', '{\"destination\": \"/target\"}', 'tomorrow'",
        False,
        id="expiry-text",  # read as expired: never applies
    ),
]


@pytest.mark.parametrize(("row", "logged"), FOREIGN_ROWS)
def test_a_foreign_row_in_the_sqlite_file_is_skipped_and_logged(
    tmp_path: Path, row: str, logged: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="workflowhttp.hooks")
    path = tmp_path / "hooks.sqlite3"
    hooks = Hooks(storage=f"sqlite:///{path}", poll_interval=0.05)
    with TestClient(App(controllers=[plain, target], extensions=[hooks])) as client:
        assert client.put("/data/_hooks/route", json={"destination": "/target"}).status_code == 200
        with sqlite3.connect(path) as foreign:  # another program writes to the file
            foreign.execute(f"INSERT INTO workflowhttp_hooks VALUES ({row})")
        foreign.close()
        # The registry reads it at its next poll (another connection's commit), and then:
        assert client.put("/probe/_hooks/route", json={"destination": "/target"}).status_code == 200
        if logged:
            began = time.monotonic()
            while not any("skipped" in record.getMessage() for record in caplog.records):
                assert time.monotonic() - began < 3.0, "the foreign row was never read"
                time.sleep(0.02)
        assert client.get("/plain").json == {"plain": True}
        assert client.get("/data/x").json == {"target": "x"}
        assert client.get("/bad/x").status_code == 404
        assert client.get("/_hooks/routes").status_code == 200
        assert client.get("/data/_hooks/route").status_code == 200
        # And the index still follows the file: a registration applies, an unregistration too.
        assert client.put("/more/_hooks/route", json={"destination": "/target"}).status_code == 200
        assert client.get("/more/y").json == {"target": "y"}
        assert client.delete("/data/_hooks/route").status_code == 200
        assert client.get("/data/x").status_code == 404
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


@contextmanager
def two_handles(tmp_path: Path) -> Iterator[tuple[SQLiteStorage, SQLiteStorage]]:
    """Two open handles on one SQLite file, as two workers have: a follower and a writer."""
    url = f"sqlite:///{tmp_path}/hooks.sqlite3"
    follower, writer = SQLiteStorage(url), SQLiteStorage(url)
    follower.open()
    writer.open()
    try:
        yield follower, writer
    finally:
        follower.close()
        writer.close()


def test_the_first_poll_reports_a_change_made_since_the_load(tmp_path: Path) -> None:
    # A worker loads its index, then polls; another process's write in between must not wait
    # for the next full reload.
    with two_handles(tmp_path) as (follower, writer):
        assert follower.records() == []  # the load
        writer.put(Record("route", "/data", "", json.dumps({"destination": "/x"}).encode(), None))
        assert follower.wait_for_change(0.01) is True  # the first poll
        assert follower.wait_for_change(0.01) is False  # nothing since
        writer.delete("route", "/data", "")
        assert follower.wait_for_change(0.01) is True


def test_copies_queued_by_another_worker_are_no_change_to_the_hooks(tmp_path: Path) -> None:
    # Under load every request to a hooked resource commits a copy: the other workers must not
    # reload their index for each (PRAGMA data_version counts every commit).
    with two_handles(tmp_path) as (follower, writer):
        assert follower.wait_for_change(0.01) is True  # the first poll
        writer.enqueue([Entry("listener-hook-x", b"copy")])
        assert follower.wait_for_change(0.01) is False
        writer.put(Record("route", "/data", "", json.dumps({"destination": "/x"}).encode(), None))
        writer.enqueue([Entry("listener-hook-x", b"copy")])
        assert follower.wait_for_change(0.01) is True
        writer.sweep()
        assert follower.wait_for_change(0.01) is False  # nothing expired: nothing changed
