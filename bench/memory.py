"""Memory kept per request: in process with tracemalloc, and a gunicorn worker's RSS.

In process: each app answers a request ``warmup`` times untraced (the harness's own request
loop, see ``bench/harness.py``), then ``tracemalloc`` starts, ``gc.collect()`` runs and a snapshot
is taken; ``requests`` more requests follow, ``gc.collect()`` again and a second snapshot. The sum
of the snapshot diff (tracemalloc's own allocations filtered out) divided by ``requests`` is the
memory retained per request: 0 means nothing a request allocates outlives it. Only memory
allocated during the traced requests counts; caches filled during the warm-up do not.

Under gunicorn: one sync worker serves the workflowhttp app; its ``VmRSS`` (from
``/proc/<pid>/status``) is read after a warm-up and again after ``requests`` sequential
``http.client`` requests cycling through the same three endpoints. RSS moves in pages and
includes whatever the allocator keeps for reuse, so small deltas are noise; steady growth is not.
"""

from __future__ import annotations

import gc
import http.client
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .endpoints import ENDPOINTS, Endpoint
from .harness import SUBJECT, Contender, build_plan
from .report import table
from .serve_targets import target
from .server import (
    ServerError,
    check,
    gunicorn_info,
    request,
    running,
    sigterm_as_exit,
    vm_rss_kib,
)

#: The endpoints measured (names from ``bench/endpoints.py``).
ENDPOINT_NAMES = ("hello", "user", "create")
#: Stop the gunicorn request loop after this many failed requests.
MAX_ERRORS = 100

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    warmup: int = 2_000
    requests: int = 10_000
    rss_framework: str = SUBJECT


@dataclass
class Retained:
    """What ``requests`` requests of one app to one endpoint left allocated."""

    framework: str
    endpoint: str
    requests: int
    bytes: int
    blocks: int
    top: list[str]  # the largest growing allocation sites, "file:line: +N B in M blocks"

    @property
    def per_request(self) -> float:
        return self.bytes / self.requests


@dataclass
class Rss:
    """A gunicorn worker's resident set size around a bounded run of requests."""

    framework: str
    target: str
    worker_pid: int
    warmup: int
    requests: int  # requests actually made after the warm-up
    errors: int
    before_kib: int
    after_kib: int
    seconds: float

    @property
    def delta_kib(self) -> int:
        return self.after_kib - self.before_kib


@dataclass
class Results:
    config: Config
    frameworks: list[str]
    endpoints: list[Endpoint]
    retained: list[Retained] = field(default_factory=list)
    rss: Rss | None = None
    rss_skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    discrepancies: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0


def run(frameworks: list[str], config: Config, progress: Progress) -> Results:
    """Measure retained bytes per request in process, then a gunicorn worker's RSS growth."""
    started = time.perf_counter()
    endpoints = [e for name in ENDPOINT_NAMES for e in ENDPOINTS if e.name == name]
    results = Results(config, list(frameworks), endpoints)
    _in_process(results, progress)
    progress(f"memory: in process took {time.perf_counter() - started:.1f} s")
    _under_gunicorn(results, progress)
    results.wall_seconds = round(time.perf_counter() - started, 1)
    return results


def _in_process(results: Results, progress: Progress) -> None:
    config = results.config
    plan = build_plan(results.frameworks, set(ENDPOINT_NAMES), extras=False)
    results.notes += [f"in process: {note}" for note in plan.notes]
    results.discrepancies += plan.discrepancies
    ignore_own = (tracemalloc.Filter(False, tracemalloc.__file__),)
    for group in plan.groups:
        for contender in group.contenders:
            progress(f"memory: {contender.label} {group.title}, tracemalloc")
            results.retained.append(_retained(contender, group.name, config, ignore_own))


def _retained(
    contender: Contender,
    endpoint: str,
    config: Config,
    filters: tuple[tracemalloc.Filter, ...],
) -> Retained:
    contender.time(config.warmup)
    gc.collect()
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.take_snapshot()
        contender.time(config.requests)  # its locals, the last answer included, die on return
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # Filtered only now: filtering compiles (and caches) a pattern, which must not be traced.
    diff = after.filter_traces(filters).compare_to(before.filter_traces(filters), "lineno")
    growing = sorted((s for s in diff if s.size_diff > 0), key=lambda s: -s.size_diff)
    top = [
        f"{stat.traceback[0].filename}:{stat.traceback[0].lineno}: "
        f"+{stat.size_diff} B in {stat.count_diff} blocks"
        for stat in growing[:3]
    ]
    return Retained(
        framework=contender.label,
        endpoint=endpoint,
        requests=config.requests,
        bytes=sum(stat.size_diff for stat in diff),
        blocks=sum(stat.count_diff for stat in diff),
        top=top,
    )


def _under_gunicorn(results: Results, progress: Progress) -> None:
    config = results.config
    framework = config.rss_framework
    if framework not in results.frameworks:
        results.rss_skipped = f"{framework} is not among the frameworks run"
        return
    try:
        info = gunicorn_info()
    except ServerError as ex:
        results.rss_skipped = str(ex)
        progress(f"memory: gunicorn RSS skipped: {ex}")
        return
    progress(f"memory: gunicorn with 1 worker serving {framework}")
    with (
        sigterm_as_exit(),
        tempfile.TemporaryDirectory(prefix="wfbench-") as logs,
        running([target(framework)], 1, Path(logs), info) as servers,
    ):
        server = servers[0]
        if server.error is not None:
            results.rss_skipped = server.error
            return
        wrong = [
            f"gunicorn {endpoint.title} [{framework}, RSS run]: " + "; ".join(problems)
            for endpoint in results.endpoints
            if (problems := check(server.port, endpoint))
        ]
        if wrong:
            results.discrepancies += wrong
            results.rss_skipped = "the server gave a wrong answer"
            return
        workers = server.worker_pids()
        if len(workers) != 1:
            results.rss_skipped = f"expected one worker process, found {workers}"
            return
        pid = workers[0]
        progress(f"memory: {config.warmup} warm-up requests to worker {pid}")
        _, warmup_errors = _hammer(server.port, results.endpoints, config.warmup)
        before = vm_rss_kib(pid)
        progress(f"memory: {config.requests} requests to worker {pid}")
        started = time.perf_counter()
        made, errors = _hammer(server.port, results.endpoints, config.requests)
        seconds = time.perf_counter() - started
        after = vm_rss_kib(pid)
        if server.worker_pids() != [pid]:
            results.notes.append(f"gunicorn worker {pid} was replaced during the RSS run")
        if warmup_errors:
            results.notes.append(f"gunicorn RSS run: {warmup_errors} warm-up requests failed")
        results.rss = Rss(
            framework, target(framework), pid, config.warmup, made, errors, before, after, seconds
        )


def _hammer(port: int, endpoints: list[Endpoint], count: int) -> tuple[int, int]:
    """Send ``count`` requests cycling through ``endpoints``; return (made, failed).

    A request fails when it raises or its status is not the expected one. The loop stops
    early after :data:`MAX_ERRORS` failures; ``made`` counts the requests actually sent.
    """
    made = errors = 0
    for index in range(count):
        endpoint = endpoints[index % len(endpoints)]
        made += 1
        try:
            answer = request(port, endpoint)
        except (OSError, http.client.HTTPException):
            errors += 1
        else:
            errors += answer.status_code != endpoint.status
        if errors >= MAX_ERRORS:
            break
    return made, errors


def _bytes(value: float) -> str:
    return f"{value:.2f} B" if abs(value) < 100 else f"{value:,.0f} B"


def markdown(results: Results) -> str:
    """Return the memory tables."""
    config = results.config
    lines = [f"## Memory retained per request ({results.wall_seconds} s)", ""]
    frameworks = [f for f in results.frameworks if any(r.framework == f for r in results.retained)]
    if results.retained:
        lines += [
            f"In process, `tracemalloc`: after {config.warmup:,} untraced warm-up requests, "
            f"the growth of traced memory over {config.requests:,} more (snapshot diff after "
            "`gc.collect()`), per request, then the total in bytes. 0 means nothing a request "
            "allocates outlives it.",
            "",
        ]
        rows = []
        for endpoint in results.endpoints:
            row = [f"`{endpoint.title}`"]
            for framework in frameworks:
                found = next(
                    (
                        r
                        for r in results.retained
                        if r.framework == framework and r.endpoint == endpoint.name
                    ),
                    None,
                )
                row.append(
                    "—"
                    if found is None
                    else f"{_bytes(found.per_request)} ({found.bytes:,} B total)"
                )
            rows.append(row)
        lines += table(["endpoint", *frameworks], "l" + "r" * len(frameworks), rows)
        lines.append("")
        sites = [
            f"{r.framework} `{r.endpoint}`: " + "; ".join(f"`{site}`" for site in r.top[:1])
            for r in results.retained
            if r.bytes > 0 and r.top
        ]
        if sites:
            lines += ["Largest growing allocation site where memory was retained:", ""]
            lines += [f"- {site}" for site in sites]
            lines.append("")

    lines += ["### Under gunicorn: one sync worker's VmRSS", ""]
    rss = results.rss
    if rss is None:
        lines += [f"Skipped: {results.rss_skipped or 'not run'}.", ""]
    else:
        lines += [
            f"`python -m gunicorn {rss.target}`, 1 sync worker; `VmRSS` of the worker "
            f"(`/proc/{rss.worker_pid}/status`) after {rss.warmup:,} warm-up requests and after "
            f"the requests counted below, sequential `http.client` requests cycling through "
            + ", ".join(f"`{e.title}`" for e in results.endpoints)
            + f" ({rss.seconds:.1f} s). RSS moves by whole pages; a delta of a few hundred kB "
            "is allocator noise, steady growth with the request count is a leak.",
            "",
        ]
        per_request = rss.delta_kib * 1024 / rss.requests if rss.requests else 0.0
        lines += table(
            ["app", "requests made", "failed", "RSS before", "RSS after", "delta", "per request"],
            "lrrrrrr",
            [
                [
                    rss.framework,
                    f"{rss.requests:,}",
                    str(rss.errors),
                    f"{rss.before_kib / 1024:.2f} MB",
                    f"{rss.after_kib / 1024:.2f} MB",
                    f"{rss.delta_kib / 1024:+.2f} MB",
                    f"{per_request:.1f} B",
                ]
            ],
        )
        lines.append("")
    for title, items in (("Notes", results.notes), ("Discrepancies", results.discrepancies)):
        if items:
            lines += [f"**{title}**", "", *(f"- {item}" for item in items), ""]
    return "\n".join(lines)


def as_json(results: Results) -> dict[str, Any]:
    """Return the memory results as a JSON-serialisable document."""
    rss = results.rss
    return {
        "config": {
            "warmup": results.config.warmup,
            "requests": results.config.requests,
            "rss_framework": results.config.rss_framework,
        },
        "endpoints": {e.name: e.title for e in results.endpoints},
        "in_process": [
            {
                "framework": r.framework,
                "endpoint": r.endpoint,
                "requests": r.requests,
                "retained_bytes": r.bytes,
                "retained_blocks": r.blocks,
                "bytes_per_request": r.per_request,
                "top_sites": r.top,
            }
            for r in results.retained
        ],
        "gunicorn_rss": None
        if rss is None
        else {
            "framework": rss.framework,
            "target": rss.target,
            "workers": 1,
            "worker_pid": rss.worker_pid,
            "warmup_requests": rss.warmup,
            "requests_made": rss.requests,
            "failed_requests": rss.errors,
            "vmrss_before_kib": rss.before_kib,
            "vmrss_after_kib": rss.after_kib,
            "delta_kib": rss.delta_kib,
            "delta_mb": rss.delta_kib / 1024,
            "seconds": rss.seconds,
        },
        "gunicorn_rss_skipped": results.rss_skipped,
        "wall_seconds": results.wall_seconds,
        "notes": results.notes,
        "discrepancies": results.discrepancies,
    }
