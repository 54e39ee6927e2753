"""What a request costs state by state: ``python -m bench.per_state``.

Walks the benchmark app's requests through the workflow with the walker's ``trace`` (the
record the event stream uses) and reports the median time spent in each state, in µs, next to
the walk of six states with no-op listeners (the machinery alone). Timings are never asserted
anywhere: this is a report.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.apps.workflowhttp_app import make_app
from bench.endpoints import build_environ
from workflowhttp.events import HttpEvent
from workflowhttp.workflow import STATES, walk

REQUESTS = (
    ("GET /hello", "GET", "/hello", None),
    ("GET /users/123", "GET", "/users/123", None),
    ("POST /items", "POST", "/items", b'{"name": "widget", "price": 9.5}'),
)


def per_state(app: Any, method: str, path: str, body: bytes | None, count: int) -> dict[str, float]:
    """Return the median µs spent in each state over ``count`` requests."""
    spent: dict[str, list[float]] = {}
    template = build_environ(method, path, body=body)
    for _ in range(count):
        environ = dict(template)
        if body is not None:
            environ["wsgi.input"] = io.BytesIO(body)
        event = HttpEvent(app, environ)
        trace: list[Any] = []
        walk(event, app._listeners, 32, trace)
        ended = time.perf_counter()
        marks = [(trace[i], trace[i + 1]) for i in range(0, len(trace), 2)]
        for index, (state, entered) in enumerate(marks):
            left = marks[index + 1][1] if index + 1 < len(marks) else ended
            spent.setdefault(state, []).append((left - entered) * 1e6)
    return {state: statistics.median(values) for state, values in spent.items()}


class _Event:
    __slots__ = ("_next", "_stopped", "error", "error_state", "state")


def machinery(count: int) -> float:
    """Return the median µs of walking six states whose only listener schedules the next."""
    path = ["request", "route", "auth", "resolve_parameters", "controller", "response"]

    def scheduling(target: str | None) -> Any:
        def listener(event: Any) -> None:
            event._next = target

        return listener

    table: dict[str, tuple[Any, ...]] = {state: () for state in STATES}
    for state, target in zip(path, [*path[1:], None], strict=True):
        table[state] = (scheduling(target),)
    samples = []
    for _ in range(20):
        started = time.perf_counter()
        for _ in range(count // 20):
            walk(_Event(), table, 32)
        samples.append((time.perf_counter() - started) / (count // 20) * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    app = make_app("main")
    for _, method, path, body in REQUESTS:  # warm-up: caches, lazily built objects
        per_state(app, method, path, body, args.requests // 4)
    rows = [per_state(app, method, path, body, args.requests) for _, method, path, body in REQUESTS]
    states = [s for s in STATES if any(s in row for row in rows)]
    print("| state | " + " | ".join(title for title, *_ in REQUESTS) + " |")
    print("|:---|" + "---:|" * len(REQUESTS))
    for state in states:
        cells = [f"{row[state]:.2f} µs" if state in row else "" for row in rows]
        print(f"| `{state}` | " + " | ".join(cells) + " |")
    totals = [f"{sum(row.values()):.2f} µs" for row in rows]
    print("| **walk total** | " + " | ".join(totals) + " |")
    print()
    print(
        f"Machinery alone (six states, one scheduling listener each, no work): "
        f"{machinery(args.requests * 5):.2f} µs per request."
    )
    print("Times include the walker's own recording (two perf_counter() calls per state).")


if __name__ == "__main__":
    main()
