"""Helpers of the hardening tests: raw WSGI calls, and the linear-work assertion."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from typing import Any

from workflowhttp import App

SMALL = 1024
LARGE = 256 * 1024


def environ_for(path: str, method: str = "GET", body: bytes = b"", **extra: str) -> dict[str, Any]:
    """A WSGI environ for ``path`` (already decoded, as a server would pass it).

    ``extra`` are environ keys (``HTTP_COOKIE``, ``CONTENT_TYPE``, ``QUERY_STRING``...).
    """
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    environ.update(extra)
    return environ


def call(
    app: App, path: str, method: str = "GET", body: bytes = b"", **extra: str
) -> tuple[int, bytes]:
    """Send one request with ``path`` as PATH_INFO; return the status and the body."""
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)

    answer = app(environ_for(path, method, body, **extra), start_response)
    try:
        data = b"".join(answer)
    finally:
        close = getattr(answer, "close", None)
        if close is not None:
            close()
    return int(statuses[0][:3]), data


def best_time(run: Callable[[], Any], repeat: int = 5) -> float:
    """The fastest of ``repeat`` runs, in seconds (the least disturbed by the machine)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def assert_linear(
    hostile: Callable[[int], Any],
    benign: Callable[[int], Any],
    *,
    small: int = SMALL,
    large: int = LARGE,
    probe: int | None = None,
) -> None:
    """Assert that the work of ``hostile(size)`` grows linearly with ``size``.

    Time is the only measure available: the old scans' work is inside the C regex engine,
    where nothing can count it. So two ratios of timings in the same process, each with a
    generous factor, and no absolute limit:

    1. at the ``probe`` size (default ``small``), the hostile input costs about what a benign
       input of the same size costs (a backtracking scan is thousands of times slower: this
       fails fast, before the large input could take minutes);
    2. the ``large`` hostile input costs about ``large / small`` times the ``small`` one (a
       quadratic scan would cost ``(large / small) ** 2`` times).
    """
    probe = probe or small
    benign_probe = best_time(lambda: benign(probe))
    # Twice at most when it is slow (a pause of the machine is not the scan's fault).
    hostile_probe = best_time(lambda: hostile(probe), repeat=1)
    if hostile_probe > 50 * benign_probe:
        hostile_probe = min(hostile_probe, best_time(lambda: hostile(probe), repeat=1))
    assert hostile_probe < 50 * benign_probe, (
        f"hostile input of {probe} bytes costs {hostile_probe / benign_probe:.0f} times a "
        f"benign one"
    )
    hostile_small = best_time(lambda: hostile(small))
    hostile_large = best_time(lambda: hostile(large), repeat=3)
    ratio = hostile_large / hostile_small
    assert ratio < 8 * (large / small), f"{large} bytes cost {ratio:.0f} times {small} bytes"
