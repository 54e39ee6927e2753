"""Real gunicorn servers on 127.0.0.1 for the bench, and the wrk load generator.

A :class:`Gunicorn` is ``python -m gunicorn <target>`` with sync workers on an ephemeral free
port of 127.0.0.1, started in its own session (so its own process group: master and workers),
with its output in a log file. It is stopped by its PID: SIGTERM to the master, SIGKILL to its
process group when it does not exit in time, then a check that no worker outlived the master.
Callers stop every server they start in a ``finally`` (see :func:`running`), so an error or a
KeyboardInterrupt never leaves one behind; :func:`sigterm_as_exit` turns a SIGTERM sent to the
bench into the same clean-up.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from .endpoints import Answer, Endpoint, discrepancies

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
START_DEADLINE = 30.0  # seconds for a new server to answer its first request
GRACEFUL_TIMEOUT = 2  # seconds, gunicorn's --graceful-timeout
STOP_TIMEOUT = GRACEFUL_TIMEOUT + 8.0  # seconds after SIGTERM before SIGKILL
WRK_PATHS = ("wrk", "/usr/bin/wrk", "/usr/local/bin/wrk")


class ServerError(RuntimeError):
    """A server did not start, or wrk did not give a result."""


def find_wrk() -> str | None:
    """Return the path of the ``wrk`` executable, or None when it is not installed."""
    for candidate in WRK_PATHS:
        found = shutil.which(candidate)
        if found:
            return found
    return None


@dataclass(frozen=True)
class GunicornInfo:
    """The installed gunicorn: its version and the options every server gets."""

    version: str
    extra_options: tuple[str, ...]


def gunicorn_info() -> GunicornInfo:
    """Return the installed gunicorn's version and options, or raise :class:`ServerError`.

    ``--no-control-socket`` is added when the installed gunicorn knows it (25.1 and later):
    otherwise every server started here would take over the same per-user control socket
    (``$XDG_RUNTIME_DIR/gunicorn.ctl`` or ``~/.gunicorn/gunicorn.ctl``) and the first one to
    stop would delete it under the others.
    """
    try:
        from importlib.metadata import version

        installed = version("gunicorn")
    except Exception as ex:  # not installed: the gunicorn parts are skipped with a note
        raise ServerError(f"gunicorn is not installed ({type(ex).__name__}: {ex})") from ex
    try:
        shown = subprocess.run(
            [sys.executable, "-m", "gunicorn", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as ex:
        raise ServerError(f"`python -m gunicorn --help` failed: {ex}") from ex
    if shown.returncode != 0:
        raise ServerError(f"`python -m gunicorn --help` exited with {shown.returncode}")
    extra = ("--no-control-socket",) if "--no-control-socket" in shown.stdout else ()
    return GunicornInfo(installed, extra)


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct ports of 127.0.0.1 that were free a moment ago."""
    probes: list[socket.socket] = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probes.append(probe)
            probe.bind((HOST, 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


class Gunicorn:
    """One gunicorn master (plus its sync workers) serving ``target`` on 127.0.0.1."""

    def __init__(self, target: str, workers: int, log: Path, info: GunicornInfo) -> None:
        self.target = target
        self.workers = workers
        self.log = log
        self.info = info
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        #: Why the server could not be started, or None once it answers.
        self.error: str | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerError(f"{self.target} was not started")
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def launch(self, port: int) -> None:
        """Start the master on ``port``, without waiting for it; see :meth:`wait_ready`."""
        self.port = port
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            *self.info.extra_options,
            *self.worker_options(),
            "--bind",
            f"{HOST}:{port}",
            "--chdir",
            str(ROOT),
            "--graceful-timeout",
            str(GRACEFUL_TIMEOUT),
            "--log-level",
            "warning",
            self.target,
        ]
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the master and its workers
            )

    def worker_options(self) -> list[str]:
        """The gunicorn options choosing the workers (``workers`` sync workers)."""
        return ["--worker-class", "sync", "--workers", str(self.workers)]

    def output(self, lines: int = 15) -> str:
        """Return the last ``lines`` lines of the server's log."""
        try:
            text = self.log.read_text("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def last_lines(self, lines: int = 5) -> str:
        """Return the last lines of the log on one line, for a note."""
        return " | ".join(self.output(lines).splitlines())

    def wait_ready(self, deadline: float) -> None:
        """Return once the server answers HTTP; raise :class:`ServerError` if it cannot."""
        process = self.process
        if process is None:
            raise ServerError(f"{self.target} was not started")
        while True:
            if process.poll() is not None:
                raise ServerError(
                    f"gunicorn {self.target} exited with {process.returncode}: {self.last_lines()}"
                )
            try:
                connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
                try:
                    connection.request("GET", "/")
                    connection.getresponse().read()
                    return
                finally:
                    connection.close()
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise ServerError(
                    f"gunicorn {self.target} did not answer within {START_DEADLINE:.0f} s: "
                    f"{self.last_lines()}"
                )
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        """Return the PIDs of the master's child processes (its workers)."""
        pid = self.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text()
            return [int(child) for child in children.split()]
        except OSError:  # no /proc/<pid>/task/<pid>/children: scan every process's parent
            found = []
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                # The command name (field 2) is in parentheses and may contain spaces.
                fields = stat[stat.rfind(")") + 2 :].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
            return sorted(found)

    def stop(self) -> None:
        """SIGTERM the master; SIGKILL its process group if it outlives :data:`STOP_TIMEOUT`."""
        if self.process is not None:
            stop_process(self.process, STOP_TIMEOUT)


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM ``process``; SIGKILL its group if it outlives ``timeout``; reap the group."""
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(process.pid)
            process.wait(10)
    reap_group(process.pid)


def kill_group(group: int) -> None:
    """SIGKILL every process of ``group`` (nothing when it is gone)."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


def reap_group(group: int) -> None:
    """Make sure nothing of the group outlives its master (SIGKILL whatever would)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    kill_group(group)


@contextmanager
def running(
    targets: list[str], workers: int, log_dir: Path, info: GunicornInfo
) -> Iterator[list[Gunicorn]]:
    """Start one server per target (concurrently), yield them once they answer, stop them all.

    A server that cannot be started is stopped and yielded with its :attr:`Gunicorn.error` set;
    the others are still usable. A server whose port was taken between choosing it and binding
    it is started again on another port (up to three attempts). Every server started here is
    stopped on the way out, whatever happened in the ``with`` block.
    """
    servers = [
        Gunicorn(target, workers, log_dir / f"{target.rsplit(':', 1)[-1]}-w{workers}.log", info)
        for target in targets
    ]
    try:
        pending = list(servers)
        for attempt in range(1, 4):
            for server, port in zip(pending, free_ports(len(pending)), strict=True):
                server.launch(port)
            deadline = time.monotonic() + START_DEADLINE
            retry = []
            for server in pending:
                try:
                    server.wait_ready(deadline)
                except ServerError as ex:
                    server.stop()
                    if attempt < 3 and "already in use" in server.output():
                        retry.append(server)
                    else:
                        server.error = str(ex)
            if not retry:
                break
            pending = retry
        yield servers
    finally:
        for server in servers:
            try:
                server.stop()
            except BaseException as ex:  # keep stopping the others; report, never hide
                print(f"[bench] could not stop gunicorn {server.target}: {ex}", file=sys.stderr)


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn a SIGTERM sent to the bench into SystemExit, so ``finally`` blocks stop servers."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def request(port: int, endpoint: Endpoint, timeout: float = 10.0) -> Answer:
    """Send ``endpoint``'s request over HTTP and return the answer (one connection)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        path = f"{endpoint.path}?{endpoint.query}" if endpoint.query else endpoint.path
        headers = {"Content-Type": "application/json"} if endpoint.request_body else {}
        connection.request(endpoint.method, path, body=endpoint.request_body, headers=headers)
        response = connection.getresponse()
        body = response.read()
        return Answer(f"{response.status} {response.reason}", response.getheaders(), body)
    finally:
        connection.close()


def check(port: int, endpoint: Endpoint) -> list[str]:
    """Return how the server's answer to ``endpoint`` differs from the expected one."""
    try:
        answer = request(port, endpoint)
    except (OSError, http.client.HTTPException) as ex:
        return [f"request failed: {type(ex).__name__}: {ex}"]
    return discrepancies(answer, endpoint.status, endpoint.media_type, endpoint.body)


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run reported."""

    requests_per_second: float
    requests: int
    seconds: float
    socket_errors: dict[str, int]
    non_2xx: int

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values()) + self.non_2xx


_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.MULTILINE)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wrk(output: str) -> WrkResult:
    """Parse wrk's summary; raise :class:`ServerError` when it has no requests/s line."""
    rate, total = _RATE.search(output), _TOTAL.search(output)
    if rate is None or total is None:
        raise ServerError(f"no result in wrk's output: {output.strip()[-300:]!r}")
    socket_errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    found = _SOCKET.search(output)
    if found is not None:
        socket_errors = dict(zip(socket_errors, map(int, found.groups()), strict=True))
    non_2xx = _NON_2XX.search(output)
    return WrkResult(
        requests_per_second=float(rate.group(1)),
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * _UNITS[total.group(3)],
        socket_errors=socket_errors,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def run_wrk(
    wrk: str, url: str, connections: int, seconds: int, script: Path | None = None
) -> WrkResult:
    """Run ``wrk -t1 -c<connections> -d<seconds>s url`` and return its summary.

    ``script``: a wrk Lua file (``-s``), e.g. one that makes every request a PUT with a body.
    """
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as ex:  # subprocess.run has killed it
        raise ServerError(f"wrk did not finish within {seconds + 30} s") from ex
    if done.returncode != 0:
        raise ServerError(f"wrk exited with {done.returncode}: {done.stderr.strip()[-300:]}")
    return parse_wrk(done.stdout)


def vm_rss_kib(pid: int) -> int:
    """Return the resident set size of process ``pid`` in KiB (``VmRSS`` of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ServerError(f"no VmRSS in /proc/{pid}/status")
