"""What describing an app costs its other requests: ``python -m bench.openapi_cost [--quick]``.

The issue's bar: an app with ``openapi=`` and tracing available (not active) serves ≥ 0.98x
the requests/s of the same app without, on every endpoint.

The apps are the benchmark's own (``bench/apps/workflowhttp_app.py``), each built twice: plain,
and with ``openapi=OpenAPI(...)`` (the document at ``/openapi.json``, Swagger UI at ``/docs``).
Every endpoint of ``bench/endpoints.py`` is requested on both: ``/hello``, ``/users/{id}``
(parametrised), ``/search``, a 404, ``POST /items``, and the last static and parametrised
route of the 200-route app.

Tracing needs nothing installed: ``TestClient(app).trace(...)`` (and ``workflowhttp trace``)
trace a copy of the app with instrumented listener tables (``workflowhttp.trace.traced_app``),
and the app itself is never touched. So "tracing available" is the app as it is; before the
timing, one request is traced on each app with OpenAPI and its listener table is checked to be
unchanged. Its document and docs page are requested once too (the document is built on first
request and kept), so what is timed is the app after someone looked at its docs.

Before any timing, both apps answer every request once through ``wsgiref.validate`` and the
answers are checked against the expected ones (``bench/endpoints.py``). Then the timing of
``bench/run.py`` (``bench.harness.run``): calibrated samples of back-to-back requests, the
objects alive after setup frozen out of the collector, the two apps of an endpoint sampled
round-robin with the first rotating every round. A sample is timed with the request thread's
CPU time (``time.thread_time_ns``: another process's load on a shared machine does not count),
or with ``--wall`` the wall time.

The ratio is the median over rounds of the paired ratio *plain time ÷ with-OpenAPI time* in
the same round: the with-OpenAPI app's requests/s relative to the plain app's (``1.00x`` costs
nothing, ``0.98x`` is the bar). ``±N%`` is half the interquartile range of the ratios. A second
plain app is timed alongside (``plain ÷ plain again``): two identical apps, so how far its
median strays from 1.00x is the run's noise floor, the size of a difference this run cannot
see. The last column counts the Python and C function calls of one request on each app
(``sys.setprofile``), a number the machine's load does not change. The exit status is 1 when
an answer was wrong. Timings are never asserted anywhere: this is a report.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from wsgiref.types import WSGIApplication

if __package__ in (None, ""):  # run as a script: make `bench` and `workflowhttp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.apps import APP_KINDS, workflowhttp_app
from bench.endpoints import ENDPOINTS, Endpoint, call, discrepancies
from bench.harness import Contender, Group, Plan, run
from bench.report import paired_ratios, rate_text, ratio_text, table, us_text
from workflowhttp import App
from workflowhttp.openapi import OpenAPI
from workflowhttp.testing import TestClient
from workflowhttp.trace import listener_table

GOAL = 0.98
DEFAULT_ROUNDS, DEFAULT_SECONDS = 30, 2.0
QUICK_ROUNDS, QUICK_SECONDS = 10, 1.0
PLAIN, DESCRIBED = "plain", "openapi"
#: A second plain app, timed like the others: its ratio to the first is the noise floor.
AGAIN = "plain again"


@dataclass
class Row:
    """One endpoint: the status each app answered, and the two contenders once checked."""

    endpoint: Endpoint
    statuses: dict[str, int | None]
    group: Group
    #: Variant → the Python and C function calls of one request (a count, not a time).
    calls: dict[str, tuple[int, int]] = field(default_factory=dict)

    def ratios(self, variant: str = DESCRIBED) -> list[float]:
        """Return *plain time ÷ variant time* of each round (the speed ratio)."""
        plain, other = self.group.contender(PLAIN), self.group.contender(variant)
        if plain is None or other is None or not plain.samples:
            return []
        return paired_ratios(plain, other)


@dataclass
class Measured:
    rows: list[Row]
    notes: list[str]
    discrepancies: list[str]


def build_apps() -> tuple[dict[str, dict[str, WSGIApplication]], list[str]]:
    """Return app kind → variant → app, and notes on what was checked on the OpenAPI ones."""
    apps: dict[str, dict[str, WSGIApplication]] = {}
    notes: list[str] = []
    for kind in APP_KINDS:
        plain = workflowhttp_app.make_app(kind)
        openapi = OpenAPI(title=f"bench {kind}", version="1.0")
        described = workflowhttp_app.make_app(kind, openapi=openapi)
        assert isinstance(described, App)
        notes += _use_once(kind, described)
        apps[kind] = {PLAIN: plain, DESCRIBED: described, AGAIN: workflowhttp_app.make_app(kind)}
    return apps, notes


def _use_once(kind: str, app: App) -> list[str]:
    """Request the document and the docs page, trace one request; return what happened."""
    client = TestClient(app)
    document = client.get("/openapi.json")
    page = client.get("/docs")
    before = listener_table(app)
    path = next(e.path for e in ENDPOINTS if e.app_kind == kind and e.status == 200)
    trace = client.trace("GET", path)
    untouched = listener_table(app) == before
    return [
        f"{kind} app with OpenAPI: GET /openapi.json {document.status_code} "
        f"({len(document.data)} bytes), GET /docs {page.status_code}; "
        f"TestClient(app).trace('GET', {path!r}) {trace.answer.status} through "
        f"{len(trace.steps)} states, the app's listener tables "
        + ("untouched" if untouched else "CHANGED")
    ]


def measure(rounds: int, seconds_per_round: float, clock: Callable[[], int]) -> Measured:
    """Build and check both apps, then time every endpoint on both, interleaved."""
    apps, notes = build_apps()
    plan = Plan()
    rows: list[Row] = []
    for endpoint in ENDPOINTS:
        group = Group(endpoint.name, endpoint.title, "variants", [])
        statuses: dict[str, int | None] = {}
        environ = endpoint.environ()
        for variant, app in apps[endpoint.app_kind].items():
            try:
                answer = call(app, environ, endpoint.request_body)
            except Exception as ex:  # report it, time the rest
                statuses[variant] = None
                problems = [f"raised {type(ex).__name__}: {ex}"]
            else:
                statuses[variant] = answer.status_code
                problems = discrepancies(
                    answer, endpoint.status, endpoint.media_type, endpoint.body
                )
            if problems:
                plan.discrepancies.append(f"{endpoint.title} [{variant}]: " + "; ".join(problems))
                continue
            body = endpoint.request_body
            group.contenders.append(Contender(variant, app, environ, body, clock=clock))
        plan.groups.append(group)
        rows.append(Row(endpoint, statuses, group))

    def progress(message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    run(plan, rounds, seconds_per_round, progress)
    for row in rows:
        row.calls = {c.label: c.calls_per_request() for c in row.group.contenders}
    return Measured(rows, notes, plan.discrepancies)


def _status(statuses: dict[str, int | None]) -> str:
    plain, described = statuses.get(PLAIN), statuses.get(DESCRIBED)
    return str(plain) if plain == described == statuses.get(AGAIN) else f"{plain} ≠ {described}"


def markdown(measured: Measured, rounds: int, seconds: float, clock_name: str) -> str:
    """Return the report: one row per endpoint, and whether the bar is met."""
    lines = [
        f"## OpenAPI and tracing available: {rounds} rounds x {seconds} s ({clock_name})",
        "",
        f"Python {sys.version.split()[0]}. Tracing installs nothing until a trace is asked for "
        "(`TestClient(app).trace` traces a copy of the app), so the second app differs from "
        "the first only by `openapi=OpenAPI(...)`.",
        "",
    ]
    rows: list[list[str]] = []
    lowest: float | None = None
    for row in measured.rows:
        plain, described = row.group.contender(PLAIN), row.group.contender(DESCRIBED)
        ratios = row.ratios()
        cells = [f"`{row.endpoint.title}`", _status(row.statuses)]
        for contender in (plain, described):
            if contender is None or not contender.samples:
                cells.append("n/a")
            else:
                ns = contender.median_ns
                cells.append(f"{rate_text(ns)} ({us_text(ns)})")
        cells.append(ratio_text(ratios))
        cells.append(ratio_text(row.ratios(AGAIN)))
        counted = [row.calls[v] for v in (PLAIN, DESCRIBED) if v in row.calls]
        same = len(counted) == 2 and counted[0] == counted[1]
        cells.append(" vs ".join(f"{p} + {c}" for p, c in counted) + (" (same)" if same else ""))
        rows.append(cells)
        if ratios:
            median = statistics.median(ratios)
            lowest = median if lowest is None else min(lowest, median)
    header = [
        "endpoint",
        "status",
        "plain req/s (µs)",
        "with openapi req/s (µs)",
        "ratio",
        "noise: plain ÷ plain again",
        "calls/request (Python + C)",
    ]
    lines += table(header, "lrrrrrr", rows)
    lines.append("")
    if lowest is not None:
        verdict = "met" if lowest >= GOAL and not measured.discrepancies else "NOT met"
        lines.append(f"lowest median ratio: {lowest:.3f}x (goal ≥ {GOAL:.2f}x: {verdict})")
    lines += ["", "Checked before timing:", *(f"- {note}" for note in measured.notes)]
    if measured.discrepancies:
        lines += ["", "**Discrepancies**:", *(f"- {p}" for p in measured.discrepancies)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.openapi_cost", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_ROUNDS} rounds x {QUICK_SECONDS} s"
    )
    parser.add_argument("--rounds", type=int, help=f"rounds (default {DEFAULT_ROUNDS})")
    parser.add_argument(
        "--seconds-per-round",
        type=float,
        help=f"time budget of one round, shared by all samples (default {DEFAULT_SECONDS})",
    )
    parser.add_argument("--wall", action="store_true", help="time wall time, not thread CPU")
    args = parser.parse_args(argv)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    seconds = args.seconds_per_round or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS)
    if rounds < 1 or seconds <= 0:
        raise SystemExit("--rounds and --seconds-per-round must be positive")
    clock: Callable[[], int] = time.perf_counter_ns if args.wall else time.thread_time_ns
    measured = measure(rounds, seconds, clock)
    clock_name = "wall time" if args.wall else "request thread CPU time"
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"$ python -m bench.openapi_cost {shown}".rstrip() + "\n")
    print(markdown(measured, rounds, seconds, clock_name))
    return 1 if measured.discrepancies else 0


if __name__ == "__main__":
    raise SystemExit(main())
