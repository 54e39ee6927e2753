"""Requests/s of the four apps under a real gunicorn, driven by wrk, interleaved.

For each worker count (1, then 2), one gunicorn per framework is started on 127.0.0.1
(``bench.serve_targets:<framework>``, sync workers), checked over HTTP against the expected
answers, and warmed up. Then each round runs ``wrk -t1 -c<N> -d<S>s`` once per endpoint and
framework, one server at a time, the framework order rotating every round, so that each round
gives a paired ratio between frameworks measured seconds apart. The servers are stopped by PID
afterwards, also on errors and KeyboardInterrupt.

Sync workers answer one request per connection and close it (``Connection: close``), so wrk
reconnects for every request: keep-alive plays no part, and every request pays a TCP connect
and gunicorn's request parsing. wrk and gunicorn share the machine's cores, so the absolute
numbers depend on the machine; the paired ratios are what count.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .endpoints import ENDPOINTS, Endpoint
from .harness import SUBJECT
from .report import table
from .serve_targets import target
from .server import (
    GunicornInfo,
    ServerError,
    WrkResult,
    check,
    find_wrk,
    gunicorn_info,
    run_wrk,
    running,
    sigterm_as_exit,
)

#: The endpoints timed under gunicorn (names from ``bench/endpoints.py``).
ENDPOINT_NAMES = ("hello", "user")
#: The frameworks workflowhttp's requests/s is divided by, per round.
OTHERS = ("raw", "flask", "falcon", "workflowhttp_stream")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    """How long and how hard to drive the servers."""

    rounds: int = 3
    seconds: int = 2  # one wrk run; wrk takes whole seconds
    connections: int = 8
    workers: tuple[int, ...] = (1, 2)
    warmup_seconds: int = 1  # one wrk run per server before the rounds


@dataclass
class Cell:
    """One framework answering one endpoint with one worker count: a wrk run per round."""

    rates: list[float | None] = field(default_factory=list)  # requests/s; None: wrk failed
    requests: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        values = [rate for rate in self.rates if rate is not None]
        return statistics.median(values) if values else None


@dataclass
class Results:
    """Everything the gunicorn part measured, and what went wrong."""

    config: Config
    frameworks: list[str]
    endpoints: list[Endpoint]
    cells: dict[tuple[int, str, str], Cell] = field(default_factory=dict)  # workers, ep, fw
    gunicorn: str | None = None
    gunicorn_options: tuple[str, ...] = ()
    wrk: str | None = None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    discrepancies: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    def ratios(self, workers: int, endpoint: str, other: str) -> list[float]:
        """Return workflowhttp's requests/s ÷ ``other``'s, per round both have a result."""
        subject = self.cells.get((workers, endpoint, SUBJECT))
        rival = self.cells.get((workers, endpoint, other))
        if subject is None or rival is None:
            return []
        return [
            a / b
            for a, b in zip(subject.rates, rival.rates, strict=False)
            if a is not None and b is not None and b > 0
        ]


def run(frameworks: list[str], config: Config, progress: Progress) -> Results:
    """Start the servers, take the interleaved wrk samples, stop the servers."""
    started = time.perf_counter()
    endpoints = [e for name in ENDPOINT_NAMES for e in ENDPOINTS if e.name == name]
    results = Results(config, list(frameworks), endpoints)
    results.wrk = find_wrk()
    if results.wrk is None:
        results.skipped = "wrk is not installed (`apt-get install wrk`): gunicorn part skipped"
        progress(results.skipped)
        return results
    try:
        info = gunicorn_info()
    except ServerError as ex:
        results.skipped = f"{ex}: gunicorn part skipped"
        progress(results.skipped)
        return results
    results.gunicorn, results.gunicorn_options = info.version, info.extra_options
    with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="wfbench-") as logs:
        for workers in config.workers:
            _run_workers(results, info, workers, Path(logs), progress)
    results.wall_seconds = round(time.perf_counter() - started, 1)
    return results


def _run_workers(
    results: Results, info: GunicornInfo, workers: int, logs: Path, progress: Progress
) -> None:
    config, wrk = results.config, results.wrk
    assert wrk is not None
    progress(f"gunicorn: starting {len(results.frameworks)} servers with {workers} worker(s)")
    targets = [target(framework) for framework in results.frameworks]
    with running(targets, workers, logs, info) as servers:
        live: dict[tuple[str, str], int] = {}  # (endpoint, framework) -> port
        for framework, server in zip(results.frameworks, servers, strict=True):
            if server.error is not None:
                results.notes.append(f"{framework}, {workers} worker(s): skipped, {server.error}")
                continue
            for endpoint in results.endpoints:
                problems = check(server.port, endpoint)
                if problems:
                    results.discrepancies.append(
                        f"gunicorn {endpoint.title} [{framework}, {workers} worker(s)]: "
                        + "; ".join(problems)
                    )
                    continue
                live[endpoint.name, framework] = server.port
        # Every endpoint has answered once (the check); one wrk run on the first endpoint a
        # server answers correctly gets all its workers past their first requests.
        progress(f"gunicorn: warming up ({config.warmup_seconds} s per server)")
        warmed: set[str] = set()
        for (name, framework), port in live.items():
            if framework not in warmed:
                warmed.add(framework)
                endpoint = next(e for e in results.endpoints if e.name == name)
                _wrk(wrk, port, endpoint, config.connections, config.warmup_seconds)
        for round_index in range(config.rounds):
            progress(f"gunicorn: {workers} worker(s), round {round_index + 1}/{config.rounds}")
            for endpoint in results.endpoints:
                names = [f for f in results.frameworks if (endpoint.name, f) in live]
                if not names:
                    continue
                shift = round_index % len(names)
                for framework in names[shift:] + names[:shift]:
                    cell = results.cells.setdefault((workers, endpoint.name, framework), Cell())
                    port = live[endpoint.name, framework]
                    try:
                        result = _wrk(wrk, port, endpoint, config.connections, config.seconds)
                    except ServerError as ex:
                        results.notes.append(
                            f"{framework} {endpoint.title}, {workers} worker(s), "
                            f"round {round_index + 1}: {ex}"
                        )
                        cell.rates.append(None)
                        cell.requests.append(0)
                        cell.errors.append(0)
                        continue
                    cell.rates.append(result.requests_per_second)
                    cell.requests.append(result.requests)
                    cell.errors.append(result.errors)
                    if result.errors:
                        results.notes.append(
                            f"{framework} {endpoint.title}, {workers} worker(s), round "
                            f"{round_index + 1}: wrk counted {result.errors} errors "
                            f"(socket {result.socket_errors}, non-2xx {result.non_2xx})"
                        )


def _wrk(wrk: str, port: int, endpoint: Endpoint, connections: int, seconds: int) -> WrkResult:
    path = f"{endpoint.path}?{endpoint.query}" if endpoint.query else endpoint.path
    return run_wrk(wrk, f"http://127.0.0.1:{port}{path}", connections, seconds)


def _ratio(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f}x"
    return f"{statistics.median(values):.2f}x ({min(values):.2f} to {max(values):.2f})"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}/s"


def markdown(results: Results) -> str:
    """Return the gunicorn tables (or why there are none)."""
    config = results.config
    lines = [
        f"## Under gunicorn: sync workers, `wrk -t1 -c{config.connections} -d{config.seconds}s`, "
        f"{config.rounds} rounds",
        "",
    ]
    if results.skipped:
        return "\n".join([*lines, f"Skipped: {results.skipped}.", ""])
    options = " ".join(results.gunicorn_options) or "no extra options"
    lines += [
        f"gunicorn {results.gunicorn} ({options}), wrk at `{results.wrk}`, "
        f"{results.wall_seconds} s. One server per framework on 127.0.0.1, driven one at a "
        "time, framework order rotating every round. Median requests/s over the rounds; "
        "`wf/X` is the median over rounds of the paired ratio workflowhttp req/s ÷ X req/s "
        "(> 1: workflowhttp served more), lowest and highest round in brackets. Sync workers "
        "close every connection, so each request includes a TCP connect and gunicorn's own "
        "HTTP handling; wrk shares the cores with gunicorn, so compare the ratios, not the "
        "absolute numbers.",
        "",
    ]
    frameworks = results.frameworks
    others = [o for o in OTHERS if o in frameworks]
    header = ["workers", "endpoint", *frameworks, *(f"wf/{o}" for o in others)]
    rows = []
    for workers in config.workers:
        for endpoint in results.endpoints:
            cells = [results.cells.get((workers, endpoint.name, f)) for f in frameworks]
            if not any(cells):
                continue
            row = [str(workers), f"`{endpoint.title}`"]
            row += [_rate(cell.median if cell else None) for cell in cells]
            row += [_ratio(results.ratios(workers, endpoint.name, o)) for o in others]
            rows.append(row)
    lines += table(header, "rl" + "r" * (len(header) - 2), rows)
    lines.append("")
    for title, items in (("Notes", results.notes), ("Discrepancies", results.discrepancies)):
        if items:
            lines += [f"**{title}**", "", *(f"- {item}" for item in items), ""]
    return "\n".join(lines)


def as_json(results: Results) -> dict[str, Any]:
    """Return every wrk result, median and paired ratio as a JSON-serialisable document."""
    config = results.config
    cells = []
    for (workers, name, framework), cell in results.cells.items():
        cells.append(
            {
                "workers": workers,
                "endpoint": name,
                "framework": framework,
                "requests_per_second": cell.rates,
                "requests": cell.requests,
                "errors": cell.errors,
                "median_requests_per_second": cell.median,
            }
        )
    ratios = []
    for workers in config.workers:
        for endpoint in results.endpoints:
            for other in OTHERS:
                values = results.ratios(workers, endpoint.name, other)
                if values:
                    ratios.append(
                        {
                            "workers": workers,
                            "endpoint": endpoint.name,
                            "ratio": f"workflowhttp_rps / {other}_rps",
                            "per_round": values,
                            "median": statistics.median(values),
                        }
                    )
    return {
        "config": {
            "rounds": config.rounds,
            "seconds": config.seconds,
            "connections": config.connections,
            "workers": list(config.workers),
            "warmup_seconds": config.warmup_seconds,
            "worker_class": "sync",
            "wrk_threads": 1,
        },
        "gunicorn": results.gunicorn,
        "gunicorn_options": list(results.gunicorn_options),
        "wrk": results.wrk,
        "skipped": results.skipped,
        "endpoints": {e.name: e.title for e in results.endpoints},
        "frameworks": results.frameworks,
        "wall_seconds": results.wall_seconds,
        "cells": cells,
        "ratios": ratios,
        "notes": results.notes,
        "discrepancies": results.discrepancies,
    }
