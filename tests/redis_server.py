"""A real redis-server for the hooks' Redis tests: started on 127.0.0.1, stopped by its PID.

:func:`running` starts Debian's ``redis-server`` on a free port with no persistence (nothing
saved, no append-only file, its files in the test's directory), returns once it answers
``PING``, and stops it when the block ends. :meth:`RedisServer.stop` and
:meth:`RedisServer.restart` take it down and bring it back on the same port, for the fault
tests. Never a mock: the point is the real server's behaviour.

When ``redis-server`` (or the ``redis`` package) is missing, the test is skipped, unless
``WORKFLOWHTTP_REQUIRE_REDIS=1`` (set by ``.ci/run``), where it fails instead.

Imported by the tests as ``tests.redis_server``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.servers import free_port

START_DEADLINE = 10.0  # seconds for redis-server to answer PING
STOP_DEADLINE = 5.0  # seconds for it to exit on SIGTERM before SIGKILL


def unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it where Redis is required (CI)."""
    if os.environ.get("WORKFLOWHTTP_REQUIRE_REDIS") == "1":
        pytest.fail(f"{reason} (WORKFLOWHTTP_REQUIRE_REDIS=1)")
    pytest.skip(reason)


def redis_module() -> Any:
    """The ``redis`` package (the ``redis`` extra), or skip/fail as :func:`unavailable` says."""
    try:
        import redis
    except ImportError:
        unavailable("the redis package is not installed: pip install 'workflowhttp[redis]'")
    return redis


class RedisServer:
    """One redis-server process on 127.0.0.1, and how to reach it."""

    def __init__(self, executable: str, directory: Path, port: int) -> None:
        self.executable = executable
        self.directory = directory
        self.port = port
        self.log = directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it on :attr:`port`; return once it answers ``PING`` (fail with its log if
        it exits or does not answer within :data:`START_DEADLINE`)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.directory.mkdir(parents=True, exist_ok=True)
        options = {
            "--bind": "127.0.0.1",
            "--port": str(self.port),
            "--save": "",  # no snapshots, no append-only file: nothing outlives the test
            "--appendonly": "no",
            "--dir": str(self.directory),
            "--daemonize": "no",
            "--logfile": str(self.log),
        }
        self.process = subprocess.Popen(
            [self.executable, *(word for pair in options.items() for word in pair)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        give_up = time.monotonic() + START_DEADLINE
        while not self.answers():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"redis-server exited with {self.process.returncode}:\n{self.output()}"
                )
            if time.monotonic() > give_up:
                self.stop()
                raise AssertionError(f"redis-server did not answer PING:\n{self.output()}")
            time.sleep(0.02)

    def answers(self) -> bool:
        """Whether it answers ``PING`` with ``PONG`` now."""
        try:
            return self.command(b"PING", timeout=1).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, name: bytes, timeout: float = 5.0) -> bytes:
        """Send one argument-less command on a new connection; the start of its reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as connection:
            connection.sendall(b"*1\r\n$%d\r\n%s\r\n" % (len(name), name))
            return connection.recv(256)

    def stop(self) -> None:
        """Stop it by its PID: SIGTERM, then SIGKILL when it does not exit in time."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGCONT)  # a frozen server handles SIGTERM once thawed
        try:
            process.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                process.kill()
            process.wait(STOP_DEADLINE)

    def restart(self, *, keep_data: bool = False) -> None:
        """Stop it (when running) and start it again on the same port: empty, or with the
        data it held (``keep_data``: a ``SAVE`` just before it stops, loaded at the start)."""
        snapshot = self.directory / "dump.rdb"
        if keep_data:
            assert self.command(b"SAVE").startswith(b"+OK"), "SAVE failed"
        self.stop()
        if not keep_data:
            snapshot.unlink(missing_ok=True)
        self.start()

    def freeze(self) -> None:
        """SIGSTOP it: connections are accepted by the kernel but nothing answers (a hung
        server, unlike a stopped one that refuses connections)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT it after :meth:`freeze`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def client(self) -> Any:
        """A new redis-py client on it (close it, or use it in a ``with`` block)."""
        return redis_module().Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def output(self) -> str:
        try:
            return self.log.read_text("utf-8", errors="replace")
        except OSError:
            return "(no log)"


@contextmanager
def running(directory: Path) -> Iterator[RedisServer]:
    """A started :class:`RedisServer` with its files in ``directory``, stopped at the end.

    Skips the test (fails it under ``WORKFLOWHTTP_REQUIRE_REDIS=1``) when ``redis-server`` or
    the ``redis`` package is missing.
    """
    redis_module()
    executable = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin")
    if executable is None:
        unavailable("redis-server is not installed (Debian: apt-get install redis-server)")
    server = RedisServer(executable, directory, free_port())
    try:
        try:
            server.start()
        except AssertionError:
            # Another process may have taken the free port meanwhile: one more try.
            server.port = free_port()
            server.start()
        yield server
    finally:
        server.stop()
