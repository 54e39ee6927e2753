"""The event stream under a real gunicorn: threads per worker after the fork, none in the
master, and Prometheus metrics that add up over the workers.

The server runs ``python -m workflowhttp serve tests.apps.stream_app:app --workers 2`` on
127.0.0.1, in its own process group, with its own ``XDG_RUNTIME_DIR`` and a fresh
``PROMETHEUS_MULTIPROC_DIR``. It is waited for with a deadline and always stopped by its PID
(SIGTERM, then SIGKILL to its group). Processing is asynchronous: the metrics are scraped
until they add up, within a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import Server, serving, start

pytestmark = pytest.mark.gunicorn

APP = "tests.apps.stream_app:app"
WORKERS = 2
START_DEADLINE = 20.0  # seconds for the server to answer /health
METRICS_DEADLINE = 15.0  # seconds for the metrics to count every request
GRACEFUL_TIMEOUT = 3  # seconds, given to `serve --graceful-timeout`
STREAM_THREAD = "workflowhttp-st"  # "workflowhttp-stream-N" as the kernel shows it (15 bytes)


def thread_names(pid: int) -> list[str]:
    """The kernel's names of the process's threads (``/proc/<pid>/task/*/comm``)."""
    names = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:
            continue
    return names


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("gunicorn-stream")
    (directory / "metrics").mkdir()
    running = start(
        APP,
        directory,
        workers=WORKERS,
        graceful_timeout=GRACEFUL_TIMEOUT,
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory / "metrics")},
        deadline=START_DEADLINE,
    )
    with serving(running):
        yield running


def requests_counted(server: Server, route: str) -> float:
    """``workflowhttp_requests_total`` of ``route``, as /metrics adds it up over the workers."""
    answer = server.request("GET", "/metrics")
    assert answer.status == 200, answer.body[:300]
    total = 0.0
    for family in text_string_to_metric_families(answer.body.decode()):
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
        assert server.request("GET", "/health").status == 200
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
