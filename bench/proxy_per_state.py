"""The proxy's own cost per state of its transaction workflow, in process.

Usage (from the repository root)::

    python -m bench.proxy_per_state            # 2000 transactions, about 10 seconds

A gunicorn upstream (``tests.apps.echo_upstream``, one gthread worker, keep-alive) is started
on 127.0.0.1; the app is ``App(controllers=[Proxy("/", upstream)])``. A listener at the lowest
priority of each proxy state records ``perf_counter()`` on entering it: the time between two
entries is the time spent in the earlier state (``forward`` includes the upstream's answer, the
others are the proxy's own work). Medians in µs, and the whole request for comparison.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from werkzeug.test import EnvironBuilder

from workflowhttp import App
from workflowhttp.proxy import Proxy
from workflowhttp.workflow import PROXY_WORKFLOW

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait(port: int, deadline: float = 15.0) -> None:
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the upstream did not listen on {port} within {deadline}s")


def measure(count: int) -> dict[str, float]:
    port = _free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "1", "--threads", "4",
         "--keep-alive", "30", "-b", f"127.0.0.1:{port}", "tests.apps.echo_upstream:app"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        _wait(port)
        app = App(controllers=[Proxy("/", f"http://127.0.0.1:{port}")])
        marks: list[tuple[str, float]] = []
        for state in PROXY_WORKFLOW.states:
            app.listen(state, lambda event: marks.append((event.state, time.perf_counter())),
                       priority=-(10**9))  # fmt: skip
        environ = EnvironBuilder("/echo/1?x=1").get_environ()
        spent: dict[str, list[float]] = {s: [] for s in PROXY_WORKFLOW.states}
        spent["request"] = []
        for index in range(count + 200):
            marks.clear()
            copy: dict[str, Any] = dict(environ)
            copy["wsgi.input"] = io.BytesIO()
            started = time.perf_counter()
            body = app(copy, lambda status, headers, exc_info=None: None)
            b"".join(body)
            close = getattr(body, "close", None)
            if close is not None:
                close()
            ended = time.perf_counter()
            if index < 200:  # warm-up
                continue
            for (state, at), (_, following) in zip(marks, [*marks[1:], ("", ended)], strict=True):
                spent[state].append(following - at)
            spent["request"].append(ended - started)
        return {state: statistics.median(times) * 1e6 for state, times in spent.items() if times}
    finally:
        os.killpg(upstream.pid, signal.SIGTERM)
        upstream.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy_per_state")
    parser.add_argument("--count", type=int, default=2000, help="measured transactions")
    args = parser.parse_args(argv)
    medians = measure(args.count)
    print("| state | median µs |")
    print("|---|---:|")
    for state, value in medians.items():
        label = state if state != "request" else "**whole request** (upstream included)"
        print(f"| {label} | {value:.1f} |")
    print("\n(`transaction_ended` includes writing the answer back through the HTTP workflow.)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
