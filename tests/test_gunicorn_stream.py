"""The event stream under a real gunicorn: threads per worker after the fork, none in the
master, and Prometheus metrics that add up over the workers.

The server runs ``python -m workflowhttp serve tests.apps.stream_app:app --workers 2`` on
127.0.0.1, in its own process group, with its own ``XDG_RUNTIME_DIR`` and a fresh
``PROMETHEUS_MULTIPROC_DIR``. It is waited for with a deadline and always stopped by its PID
(SIGTERM, then SIGKILL to its group). Processing is asynchronous: the metrics are scraped
until they add up, within a deadline.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.gunicorn

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.stream_app:app"
WORKERS = 2
START_DEADLINE = 20.0  # seconds for the server to answer /health
METRICS_DEADLINE = 15.0  # seconds for the metrics to count every request
GRACEFUL_TIMEOUT = 3  # seconds, given to `serve --graceful-timeout`
STREAM_THREAD = "workflowhttp-st"  # "workflowhttp-stream-N" as the kernel shows it (15 bytes)


class Server:
    """A gunicorn master started by this module, and how to talk to it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        """One GET on its own connection: ``(status, body)``."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def get_json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, body[:300]
        return json.loads(body)

    def workers(self) -> set[int]:
        """The PIDs of the master's children: its workers."""
        return children(self.process.pid)

    def output(self) -> str:
        return self.log.read_text("utf-8", errors="replace")


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.update(int(child) for child in (task / "children").read_text().split())
        except OSError:  # the task ended meanwhile
            continue
    return found


def thread_names(pid: int) -> list[str]:
    """The kernel's names of the process's threads (``/proc/<pid>/task/*/comm``)."""
    names = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:
            continue
    return names


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(directory: Path) -> Server:
    """Serve the stream app on a free port; return once /health answers."""
    (directory / "run").mkdir(parents=True)
    (directory / "metrics").mkdir()
    port = free_port()
    env = dict(os.environ)
    env.update(
        PROMETHEUS_MULTIPROC_DIR=str(directory / "metrics"),
        XDG_RUNTIME_DIR=str(directory / "run"),  # gunicorn's control socket: one per server
        PYTHONUNBUFFERED="1",
    )
    log = directory / "gunicorn.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workflowhttp",
                "serve",
                APP,
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(WORKERS),
                "--graceful-timeout",
                str(GRACEFUL_TIMEOUT),
            ],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: master and workers
        )
    server = Server(process, port, log)
    deadline = time.monotonic() + START_DEADLINE
    while True:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {process.returncode}:\n{server.output()}")
        try:
            if server.get("/health", timeout=2)[0] == 200 and len(server.workers()) == WORKERS:
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(server)
            raise AssertionError(f"gunicorn did not start in {START_DEADLINE}s:\n{server.output()}")
        time.sleep(0.1)


def stop(server: Server, timeout: float = GRACEFUL_TIMEOUT + 10) -> None:
    """SIGTERM the master by its PID; SIGKILL its process group if it outlives ``timeout``."""
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    raise AssertionError(f"workers of process group {process.pid} outlived their master")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start(tmp_path_factory.mktemp("gunicorn-stream"))
    try:
        yield running
    finally:
        stop(running)


def requests_counted(server: Server, route: str) -> float:
    """``workflowhttp_requests_total`` of ``route``, as /metrics adds it up over the workers."""
    status, body = server.get("/metrics")
    assert status == 200, body[:300]
    total = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "workflowhttp_requests_total" and sample.labels["route"] == route:
                assert sample.labels["status"] == "200", sample
                total += sample.value
    return total


# -- the tests ---------------------------------------------------------------------------------


def test_the_master_runs_no_stream_thread_before_or_after_requests(server: Server) -> None:
    master = server.process.pid
    assert not any(name.startswith(STREAM_THREAD) for name in thread_names(master))
    for _ in range(10):
        assert server.get("/health")[0] == 200
    assert not any(name.startswith(STREAM_THREAD) for name in thread_names(master))


def test_each_worker_runs_its_own_stream_threads_and_the_metrics_add_up(server: Server) -> None:
    master = server.process.pid
    before = requests_counted(server, "whoami")
    answers: list[dict[str, Any]] = []

    def ask(_: int) -> dict[str, Any]:
        return server.get_json("/whoami")  # type: ignore[no-any-return]

    # Requests from 4 threads until both workers have answered some (bounded).
    with ThreadPoolExecutor(max_workers=4) as pool:
        while len({answer["pid"] for answer in answers}) < WORKERS and len(answers) < 400:
            answers.extend(pool.map(ask, range(40), timeout=60))
    pids = {answer["pid"] for answer in answers}
    assert len(pids) == WORKERS, f"only {pids} answered {len(answers)} requests"
    assert pids == server.workers()
    assert master not in pids
    for answer in answers:
        assert answer["stream_threads"] == ["workflowhttp-stream-0", "workflowhttp-stream-1"]
    for pid in pids:
        assert sum(name.startswith(STREAM_THREAD) for name in thread_names(pid)) == 2, pid
    assert not any(name.startswith(STREAM_THREAD) for name in thread_names(master))

    expected = before + len(answers)
    deadline = time.monotonic() + METRICS_DEADLINE
    counted = requests_counted(server, "whoami")
    while counted < expected:
        assert time.monotonic() < deadline, f"counted {counted} of {expected}:\n{server.output()}"
        time.sleep(0.1)
        counted = requests_counted(server, "whoami")
    assert counted == expected
    time.sleep(0.2)  # nothing is counted twice
    assert requests_counted(server, "whoami") == expected
