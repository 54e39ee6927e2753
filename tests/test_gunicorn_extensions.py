"""Extensions under a real gunicorn: start() in each worker after the fork, stop() at exit."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import servers

pytestmark = pytest.mark.gunicorn


def test_each_worker_starts_and_stops_its_extensions(tmp_path: Path) -> None:
    log = tmp_path / "extension.log"
    server = servers.start(
        "tests.apps.extension_app:app",
        tmp_path / "server",
        workers=2,
        graceful_timeout=5,
        env={"EXTENSION_LOG": str(log)},
    )
    with servers.serving(server):
        workers = server.workers()
        assert len(workers) == 2
        for _ in range(6):
            assert server.request("GET", "/health").status == 200
    lines = log.read_text().split()
    started = {
        int(pid) for what, pid in zip(lines[::2], lines[1::2], strict=True) if what == "start"
    }
    stopped = {
        int(pid) for what, pid in zip(lines[::2], lines[1::2], strict=True) if what == "stop"
    }
    assert started == workers  # in the workers, never in the master
    assert server.process.pid not in started
    assert stopped == workers
