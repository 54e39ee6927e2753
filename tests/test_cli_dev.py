"""``workflowhttp dev``, run for real: werkzeug's reloader outlives a syntax error.

Each server is ``python -m workflowhttp dev <module>:app`` on a free port of 127.0.0.1, run from
a temporary directory holding the module, in its own process group. Every wait is bounded; the
group is stopped by the reloader's PID at the end (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from tests.servers import free_port
from workflowhttp.cli import LoadError
from workflowhttp.cli.development import error_app

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 20.0  # seconds for a (re)started server to give the awaited answer

VERSION = """
from workflowhttp import App, http


@http.GET("/")
def home() -> str:
    return "{text}"


@http.GET("/boom")
def boom() -> str:
    raise RuntimeError("kaboom")


app = App(controllers=[home, boom])
"""
BROKEN = "from workflowhttp import App\n\ndef home(:\n    pass\n"


class Dev:
    """A ``workflowhttp dev`` process: its reloader, whose child serves."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    def get(self, path: str) -> tuple[int, str, bytes]:
        """GET ``path``: status, content type and body."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type", ""), response.read()
        finally:
            connection.close()

    def wait_for(self, path: str, wanted: Callable[[int, bytes], bool]) -> tuple[int, str, bytes]:
        """GET ``path`` until ``wanted(status, body)``; fail once the process is gone or
        the deadline has passed."""
        give_up = time.monotonic() + DEADLINE
        last: object = None
        while True:
            assert self.process.poll() is None, f"dev exited ({last!r}):\n{self.output()}"
            try:
                answer = self.get(path)
            except (OSError, http.client.HTTPException) as ex:
                # The reloader is starting its next child, or stopped the last one while it
                # answered (IncompleteRead): ask again.
                last = ex
            else:
                if wanted(answer[0], answer[2]):
                    return answer
                last = answer
            assert time.monotonic() < give_up, f"still {last!r} after {DEADLINE}s:\n{self.output()}"
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text("utf-8", errors="replace")


def write(path: Path, text: str) -> None:
    """Write ``path`` with a modification time surely later than the one the reloader saw."""
    before = path.stat().st_mtime if path.exists() else 0.0
    path.write_text(text, "utf-8")
    later = max(time.time(), before + 1)
    os.utime(path, (later, later))


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Callable[..., Dev]]:
    """Start ``workflowhttp dev devapp:app *options`` from ``tmp_path``; stop it at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*options: str) -> Dev:
        port = free_port()
        command = ["-m", "workflowhttp", "dev", "devapp:app", "--port", str(port), *options]
        log = tmp_path / "dev.log"
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
            # A source rewritten within a second, at the same size, must not load a stale .pyc.
            PYTHONDONTWRITEBYTECODE="1",
        )
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, *command],
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: the reloader and its child
            )
        started.append(process)
        return Dev(process, port, log)

    yield start
    for process in started:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the group of ``process`` by its PID; SIGKILL it if it outlives 10 seconds."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    give_up = time.monotonic() + 10
    while time.monotonic() < give_up:  # the reloader's child, too
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"the children of dev {process.pid} outlived it")


# -- the tests ---------------------------------------------------------------------------------


def test_a_syntax_error_is_served_until_it_is_fixed(
    tmp_path: Path, dev: Callable[..., Dev]
) -> None:
    module = tmp_path / "devapp.py"
    write(module, VERSION.format(text="version one"))
    server = dev()
    assert server.wait_for("/", lambda status, body: status == 200)[2] == b"version one"

    write(module, BROKEN)
    _, content_type, body = server.wait_for("/", lambda status, body: status == 500)
    assert content_type == "text/plain; charset=utf-8"
    assert b"devapp.py:3: syntax error" in body, body
    assert b"def home(:" in body  # the line, from the traceback
    assert server.process.poll() is None
    assert "devapp.py:3: syntax error" in server.output()  # said on the console too

    write(module, VERSION.format(text="version two"))
    assert server.wait_for("/", lambda status, body: status == 200)[2] == b"version two"
    assert server.process.poll() is None


def test_an_import_error_is_served_until_it_is_fixed(
    tmp_path: Path, dev: Callable[..., Dev]
) -> None:
    module = tmp_path / "devapp.py"
    write(module, VERSION.format(text="one"))
    server = dev()
    server.wait_for("/", lambda status, body: status == 200)
    write(module, VERSION.format(text="two") + "\nundefined_name\n")
    body = server.wait_for("/", lambda status, body: status == 500)[2]
    assert b"importing devapp raised NameError: name 'undefined_name' is not defined" in body
    write(module, VERSION.format(text="three"))
    assert server.wait_for("/", lambda status, body: status == 200)[2] == b"three"


def test_debug_answers_500s_with_the_traceback(tmp_path: Path, dev: Callable[..., Dev]) -> None:
    write(tmp_path / "devapp.py", VERSION.format(text="debug"))
    server = dev("--debug")
    _, content_type, body = server.wait_for("/boom", lambda status, body: status == 500)
    assert content_type == "application/json"
    assert b'"error":"RuntimeError: kaboom"' in body
    assert b"Traceback (most recent call last)" in body


def test_dev_help_says_what_debug_does() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "workflowhttp", "dev", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "--debug answer 500s with the error and its traceback" in text
    for option in ("--access-log {auto,werkzeug,stream,off}", "--log-format {text,json}"):
        assert option in text


@pytest.mark.parametrize(
    ("remote", "shown"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("192.168.1.20", False),
        ("203.0.113.9", False),
        ("", False),
        ("not-an-address", False),
    ],
    ids=["loopback", "loopback-v6", "loopback-mapped", "lan", "internet", "none", "garbage"],
)
def test_the_load_error_is_shown_to_this_machine_only(remote: str, shown: bool) -> None:
    """``dev --host 0.0.0.0`` may be reached from elsewhere: they get no file or source."""
    try:
        raise SyntaxError("invalid syntax", ("/secret/app.py", 3, 5, "password = (", 3, 5))
    except SyntaxError as cause:
        error = LoadError("/secret/app.py:3: syntax error")
        error.__cause__ = cause
    answers: list[tuple[str, list[tuple[str, str]]]] = []
    body = b"".join(
        error_app(error)(
            {"REMOTE_ADDR": remote}, lambda status, headers: answers.append((status, headers))
        )
    )
    status, headers = answers[0]
    assert status == "500 Internal Server Error"
    assert ("Content-Type", "text/plain; charset=utf-8") in headers
    assert ("X-Content-Type-Options", "nosniff") in headers
    assert (b"/secret/app.py" in body, b"password" in body) == (shown, shown)
