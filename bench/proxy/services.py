"""The processes of the proxy benchmark: nginx (upstream and proxy_pass), gunicorn, HARP.

Every process is a :class:`Service`: started in its own session (so its own process group, a
master and its workers), its output in a log file, listening on a port of 127.0.0.1 found free
just before. It is stopped by its PID: SIGTERM to the master, SIGKILL to its process group when
it does not exit in time, then a check that nothing of the group outlived the master. Every
service started is remembered until it is stopped, and :func:`stop_all` (registered with
``atexit`` as well as called in the bench's ``finally``) stops what is left.
"""

from __future__ import annotations

import atexit
import http.client
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from bench.server import HOST, GunicornInfo, free_ports, stop_process

ROOT = Path(__file__).resolve().parent.parent.parent
START_DEADLINE = 45.0  # seconds for a new service to answer (HARP takes a few seconds)
STOP_TIMEOUT = 10.0  # seconds after SIGTERM before SIGKILL
START_ATTEMPTS = 3  # a port taken between choosing and binding it: try another one

SHORT_BODY = b"Hello from the upstream.\n"
LARGE_SIZE = 64 * 1024
#: The 64 KiB body: a repeated printable pattern, so a truncated or shifted copy shows.
LARGE_BODY = (bytes(range(33, 127)) * (LARGE_SIZE // 94 + 1))[:LARGE_SIZE]
#: Body name -> (path, expected body).
BODIES: dict[str, tuple[str, bytes]] = {
    "short": ("/short", SHORT_BODY),
    "large": ("/large", LARGE_BODY),
}


#: A traceback's last line: ``package.module.SomeError: message``.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b")


class ServiceError(RuntimeError):
    """A service did not start or did not answer."""


_started: list[Service] = []


class Service:
    """One process (and its children) listening on ``127.0.0.1:port``."""

    def __init__(
        self,
        name: str,
        command: list[str],
        *,
        port: int,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.log = log
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        """Start the process without waiting for it; see :meth:`wait_ready`."""
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the master and its workers
            )
        _started.append(self)

    def log_text(self) -> str:
        try:
            return self.log.read_text("utf-8", errors="replace")
        except OSError:
            return ""

    def last_lines(self, lines: int = 6) -> str:
        """Return the last lines of the log on one line, for a note.

        When the log holds a traceback, its last exception line (gunicorn's own ``HaltServer``
        aside) is returned instead: that is why a worker failed to boot.
        """
        all_lines = [line.strip() for line in self.log_text().strip().splitlines()]
        causes = [
            line
            for line in all_lines
            if _EXCEPTION_LINE.match(line) and not line.startswith("gunicorn.errors.")
        ]
        return causes[-1] if causes else " | ".join(all_lines[-lines:])

    def wait_ready(self, path: str, deadline: float) -> None:
        """Return once ``GET path`` gets any HTTP answer; raise :class:`ServiceError` if not."""
        process = self.process
        if process is None:
            raise ServiceError(f"{self.name} was not started")
        while True:
            if process.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with {process.returncode}: {self.last_lines()}"
                )
            try:
                connection = http.client.HTTPConnection(HOST, self.port, timeout=5)
                try:
                    connection.request("GET", path)
                    connection.getresponse().read()
                    return
                finally:
                    connection.close()
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{self.name} did not answer within {START_DEADLINE:.0f} s: {self.last_lines()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM the master; SIGKILL its process group if it outlives :data:`STOP_TIMEOUT`."""
        if self.process is None:
            return
        stop_process(self.process, STOP_TIMEOUT)
        with suppress(ValueError):
            _started.remove(self)


def stop_all() -> None:
    """Stop every service still running, the last started first; report, never raise."""
    for service in reversed(list(_started)):
        try:
            service.stop()
        except BaseException as ex:  # keep stopping the others
            print(f"[bench.proxy] could not stop {service.name}: {ex}", file=sys.stderr)


atexit.register(stop_all)


def start(make: Callable[[int], Service], ready_paths: tuple[str, ...]) -> Service:
    """Start the service ``make(port)`` on a free port; return it once it answers.

    A service whose port was taken between choosing it and binding it is started again on
    another port (up to :data:`START_ATTEMPTS` tries). Raises :class:`ServiceError`, after
    stopping the process, when it cannot be started.
    """
    for attempt in range(1, START_ATTEMPTS + 1):
        service = make(free_ports(1)[0])
        service.launch()
        deadline = time.monotonic() + START_DEADLINE
        try:
            for path in ready_paths:
                service.wait_ready(path, deadline)
            return service
        except ServiceError:
            log = service.log_text()
            service.stop()
            if attempt < START_ATTEMPTS and "in use" in log:
                continue
            raise
    raise AssertionError("unreachable")


# -- nginx ------------------------------------------------------------------------------------


def find_nginx() -> str | None:
    """Return the path of the nginx executable (Debian puts it in /usr/sbin), or None."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def nginx_version(nginx: str) -> str:
    """Return the version ``nginx -v`` prints (``1.22.1``), or ``?``."""
    shown = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=30, check=False)
    text = (shown.stderr or shown.stdout).strip()
    return text.removeprefix("nginx version: ").removeprefix("nginx/") or "?"


@dataclass(frozen=True)
class NginxPorts:
    """The two server blocks of the one nginx: the upstream, and ``proxy_pass`` to it."""

    upstream: int
    proxy: int


def nginx_config(directory: Path, ports: NginxPorts, workers: int) -> str:
    """Return the nginx configuration of the upstream and of the ``proxy_pass`` contender.

    ``/short`` is answered with ``return 200`` (:data:`SHORT_BODY`), ``/large`` is a static file
    of 64 KiB. The proxy keeps up to 32 idle keep-alive connections to the upstream (HTTP/1.1,
    ``Connection`` cleared), and buffers enough to hold the large body in memory.
    """
    short = SHORT_BODY.decode("ascii").replace("\n", "\\n")
    return f"""\
worker_processes {workers};
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy_temp;
    fastcgi_temp_path {directory}/fastcgi_temp;
    uwsgi_temp_path {directory}/uwsgi_temp;
    scgi_temp_path {directory}/scgi_temp;

    server {{
        listen {HOST}:{ports.upstream};
        root {directory}/www;
        location = /short {{
            default_type text/plain;
            return 200 "{short}";
        }}
        location = /large {{
        }}
    }}

    upstream bench_upstream {{
        server {HOST}:{ports.upstream};
        keepalive 32;
    }}
    server {{
        listen {HOST}:{ports.proxy};
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
        }}
    }}
}}
"""


def start_nginx(nginx: str, directory: Path, workers: int) -> tuple[Service, NginxPorts]:
    """Write the configuration and the files in ``directory``, start nginx (not a daemon)."""
    www = directory / "www"
    www.mkdir(exist_ok=True)
    (www / "large").write_bytes(LARGE_BODY)
    # nginx's workers run as `nobody` when the master is root: let them read the files.
    for path in (directory, www):
        path.chmod(0o755)
    (www / "large").chmod(0o644)
    for attempt in range(1, START_ATTEMPTS + 1):
        upstream, proxy = free_ports(2)
        ports = NginxPorts(upstream, proxy)
        config = directory / "nginx.conf"
        config.write_text(nginx_config(directory, ports, workers))
        globals_ = f"daemon off; pid {directory}/nginx.pid; error_log {directory}/error.log warn;"
        command = [nginx, "-p", f"{directory}/", "-e", f"{directory}/error.log"]
        service = Service(
            "nginx",
            [*command, "-c", str(config), "-g", globals_],
            port=ports.upstream,
            log=directory / "nginx.out",
            cwd=directory,
        )
        service.launch()
        deadline = time.monotonic() + START_DEADLINE
        try:
            service.wait_ready("/short", deadline)
            service.port = ports.proxy
            service.wait_ready("/short", deadline)
            return service, ports
        except ServiceError as ex:
            error_log = _tail(directory / "error.log")
            service.stop()
            if attempt < START_ATTEMPTS and "in use" in error_log:
                continue
            raise ServiceError(f"{ex} | error.log: {error_log}") from ex
    raise AssertionError("unreachable")


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text("utf-8", errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


# -- gunicorn ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GunicornSettings:
    """The settings both gunicorn-served contenders get, identical for both."""

    workers: int
    worker_class: str  # "sync" or "gthread"
    threads: int  # gthread only

    def describe(self) -> str:
        threads = f", {self.threads} threads each" if self.worker_class == "gthread" else ""
        return f"{self.workers} {self.worker_class} workers{threads}"


def gunicorn_service(
    name: str,
    target: str,
    port: int,
    upstream: str,
    settings: GunicornSettings,
    info: GunicornInfo,
    directory: Path,
) -> Service:
    """Return (not started) ``python -m gunicorn ... target`` forwarding to ``upstream``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["BENCH_PROXY_UPSTREAM"] = upstream
    threads = ["--threads", str(settings.threads)] if settings.worker_class == "gthread" else []
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        *info.extra_options,
        "--worker-class",
        settings.worker_class,
        "--workers",
        str(settings.workers),
        *threads,
        "--bind",
        f"{HOST}:{port}",
        "--chdir",
        str(ROOT),
        "--graceful-timeout",
        "2",
        "--log-level",
        "warning",
        target,
    ]
    return Service(name, command, port=port, log=directory / f"{name}.log", env=env)


# -- HARP -------------------------------------------------------------------------------------

#: Run by the HARP venv's Python: ``harp server`` bound to 127.0.0.1 (see the module).
HARP_LAUNCHER = Path(__file__).resolve().parent / "harp_server.py"


def harp_service(python: Path, port: int, upstream: str, directory: Path) -> Service:
    """Return (not started) HARP proxying ``127.0.0.1:port`` to ``upstream``."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the venv's own packages only
    # HARP logs one line per request (hypercorn's access log) at `info` by default.
    for variable in (
        "LOGGING",
        "LOGGING_HARP",
        "LOGGING_HTTP",
        "LOGGING_PROXY",
        "LOGGING_HTTP_CLIENT",
    ):
        env[variable] = "warning"
    env["PYTHONWARNINGS"] = "ignore"
    command = [str(python), str(HARP_LAUNCHER), str(port), f"{upstream}/"]
    return Service("harp", command, port=port, log=directory / "harp.log", env=env, cwd=directory)
