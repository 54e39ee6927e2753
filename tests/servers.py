"""Real gunicorn servers for the deployment tests: started, spoken to over HTTP, and stopped.

:func:`start` runs ``python -m workflowhttp serve <target>`` on 127.0.0.1 at a free port, in
its own process group, with its own ``XDG_RUNTIME_DIR`` and a log file, and returns once the
ready path answers 200 (and, when asked, every worker is up) within a deadline. :func:`stop`
stops it by its PID: SIGTERM, then SIGKILL to its group when it does not exit in time; no
worker of the group is left behind either way. ``with serving(start(...)) as server:`` stops
it when the block ends.

Imported by the tests as ``tests.servers``; what is particular to one test module (its app,
its environment, its threaded variants) stays in that module.
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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
START_DEADLINE = 20.0  # seconds for a server to answer its ready path


class Answer:
    """One HTTP exchange's result."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers  # names in lower case
        self.body = body

    @property
    def json(self) -> Any:
        assert self.headers.get("content-type") == "application/json", self.headers
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Answer {self.status} {self.body[:200]!r}>"


class Server:
    """A gunicorn master started by :func:`start`, and how to talk to it."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        port: int,
        directory: Path,
        graceful_timeout: float,
    ) -> None:
        self.process = process
        self.port = port
        self.directory = directory
        self.log = directory / "gunicorn.log"
        self.graceful_timeout = graceful_timeout

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Answer:
        """One request on its own connection (closed after it).

        ``body`` is sent as it is when it is bytes or a string, as JSON (with that content
        type) otherwise.
        """
        sent = dict(headers or {})
        payload: bytes | None = None
        if isinstance(body, (bytes, str)):
            payload = body.encode() if isinstance(body, str) else body
        elif body is not None:
            payload = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=payload, headers=sent)
            response = connection.getresponse()
            data = response.read()
            received = {name.lower(): value for name, value in response.getheaders()}
            return Answer(response.status, received, data)
        finally:
            connection.close()

    def get_json(self, path: str) -> Any:
        """GET ``path``, which must answer 200; its body, decoded from JSON."""
        answer = self.request("GET", path)
        assert answer.status == 200, answer.body[:300]
        return json.loads(answer.body)

    def workers(self) -> set[int]:
        """The PIDs of the master's children: its workers."""
        tasks = Path(f"/proc/{self.process.pid}/task")
        if not (tasks / str(self.process.pid) / "children").exists():
            # No /proc/<pid>/task/*/children (or no master any more): ask ps.
            listed = subprocess.run(
                ["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            return {int(pid) for pid in listed.stdout.split()}
        found: set[int] = set()
        for task in tasks.iterdir():
            try:
                found.update(int(child) for child in (task / "children").read_text().split())
            except OSError:  # the task ended meanwhile
                continue
        return found

    def output(self) -> str:
        return self.log.read_text("utf-8", errors="replace")


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Write raw ``data`` on a new connection; return all it receives until the server
    closes it (or resets it, or ``timeout`` seconds in all)."""
    received = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(data)
        while time.monotonic() < deadline:
            connection.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = connection.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
    return received


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(
    target: str,
    directory: Path,
    *options: str,
    workers: int,
    graceful_timeout: int,
    env: Mapping[str, str] | None = None,
    ready: str = "/health",
    deadline: float = START_DEADLINE,
    wait_for_workers: bool = True,
) -> Server:
    """Serve ``target`` (``module:app``) with ``workers`` workers on a free port.

    ``options`` are further ``serve`` options, ``env`` further environment variables. Return
    once ``ready`` answers 200 and, with ``wait_for_workers``, the master has all its workers;
    fail (with the server's log, and the server stopped) when that takes over ``deadline``
    seconds or the server exits.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "run").mkdir(exist_ok=True)
    port = free_port()
    environment = dict(os.environ)
    environment.update(
        # gunicorn >= 25.1 opens a control socket there: one per server, not one per user.
        XDG_RUNTIME_DIR=str(directory / "run"),
        PYTHONUNBUFFERED="1",
    )
    environment.update(env or {})
    with (directory / "gunicorn.log").open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workflowhttp",
                "serve",
                target,
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--graceful-timeout",
                str(graceful_timeout),
                *options,
            ],
            cwd=ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: master and workers
        )
    server = Server(process, port, directory, graceful_timeout)
    give_up = time.monotonic() + deadline
    while True:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {process.returncode}:\n{server.output()}")
        try:
            if server.request("GET", ready, timeout=2).status == 200 and (
                not wait_for_workers or len(server.workers()) == workers
            ):
                return server
        except OSError:
            pass
        if time.monotonic() > give_up:
            stop(server)
            raise AssertionError(f"gunicorn was not up within {deadline}s:\n{server.output()}")
        time.sleep(0.1)


def wait_for_exit(server: Server, timeout: float) -> int:
    """Wait for the (signalled) master to exit; its exit code. Fail the test, with the
    server's log, when it is still running after ``timeout`` seconds."""
    try:
        return server.process.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the master outlived its graceful timeout:\n{server.output()}")


@contextmanager
def serving(server: Server) -> Iterator[Server]:
    """``server``, stopped with :func:`stop` when the block ends, however it ends."""
    try:
        yield server
    finally:
        stop(server)


def stop(server: Server, timeout: float | None = None) -> int:
    """SIGTERM the master by its PID; SIGKILL its process group if it outlives ``timeout``
    (by default its graceful timeout and 10 seconds). Return its exit code."""
    if timeout is None:
        timeout = server.graceful_timeout + 10
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    _reap_group(process.pid)
    return process.returncode


def _reap_group(group: int) -> None:
    """Make sure no worker of the group outlives its master (killing any that would)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        return
    raise AssertionError(f"workers of process group {group} outlived their master")
