"""Proxy benchmark: four reverse proxies in front of the same nginx upstream, driven by wrk.

Usage (from the repository root)::

    python -m bench.proxy --setup        # once: nginx + wrk (apt), HARP 0.8 in bench/.venv-harp
    python -m bench.proxy                # 5 rounds x 5 s per sample: about 4 minutes
    python -m bench.proxy --quick        # 3 rounds x 1 s: under a minute
    python -m bench.proxy --workers 1 --connections 16 --json bench/results/proxy.json
    python -m bench.proxy --check-only   # start everything, check the answers, time nothing
    python bench/proxy/run.py ...        # the same

One nginx serves the upstream (``/short``: a 25-byte body, ``/large``: a 64 KiB static file)
and, in a second server block, the C anchor: ``proxy_pass`` to it over keep-alive connections.
The contenders, all forwarding to that upstream on 127.0.0.1:

- ``nginx``: nginx's ``proxy_pass``;
- ``urllib3``: a bare WSGI function forwarding with one urllib3 ``PoolManager`` call, under
  gunicorn (the floor of any Python proxy, ``bench/proxy/targets.py:forward``);
- ``harp``: HARP 0.8 (``harp-proxy``), proxy and HTTP client only (``bench/proxy/harp_server.py``);
- ``workflowhttp``: ``App(controllers=[Proxy("/", [upstream], name="bench")])`` under gunicorn
  with the same settings as ``urllib3``; skipped with a note while ``workflowhttp.proxy``
  cannot be imported.

Every contender's answers are checked once (status 200, the exact body) before any timing; a
wrong one is listed under Discrepancies and not timed (exit status 1). Then each round runs
``wrk -t1 -c<N> -d<S>s`` once per body and contender, one at a time, the order rotating every
round. The table gives the median requests/s and the paired ratios (median over rounds of the
ratio within a round). Every process started is stopped by PID at exit, also on errors, Ctrl-C
and SIGTERM. See bench/README.md, section "Proxy benchmark".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `workflowhttp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.proxy import install, services
from bench.proxy.services import BODIES, GunicornSettings, Service, ServiceError
from bench.report import table
from bench.server import HOST, ServerError, find_wrk, gunicorn_info, run_wrk, sigterm_as_exit

CONTENDERS = ("nginx", "urllib3", "harp", "workflowhttp")
DEFAULT_ROUNDS, DEFAULT_SECONDS = 5, 5
QUICK_ROUNDS, QUICK_SECONDS = 3, 1
WARMUP_SECONDS = 1
#: (numerator, denominator, label, the issue's bar or None): paired ratios of requests/s.
RATIOS = (
    ("workflowhttp", "urllib3", "Proxy / urllib3", 0.8),
    ("workflowhttp", "harp", "Proxy / HARP", 4.0),
    ("urllib3", "harp", "urllib3 / HARP", None),
    ("nginx", "urllib3", "nginx / urllib3", None),
)
TITLES = {"short": "short (25 B)", "large": "large (64 KiB)"}

Progress = Callable[[str], None]


@dataclass
class Contender:
    """One proxy under test: what it is, where it listens, its samples per body."""

    name: str
    description: str = ""
    port: int = 0
    skipped: str | None = None  # why it is not timed
    rates: dict[str, list[float | None]] = field(default_factory=dict)  # body -> req/s per round
    errors: dict[str, int] = field(default_factory=dict)  # body -> wrk socket errors + non-2xx

    def median(self, body: str) -> float | None:
        values = [rate for rate in self.rates.get(body, []) if rate is not None]
        return statistics.median(values) if values else None


@dataclass
class Results:
    settings: dict[str, Any]
    versions: dict[str, str]
    contenders: dict[str, Contender]
    discrepancies: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    def ratios(self, numerator: str, denominator: str, body: str) -> list[float]:
        """Return the per-round ratios of requests/s, for the rounds both have a sample."""
        top, bottom = self.contenders.get(numerator), self.contenders.get(denominator)
        if top is None or bottom is None:
            return []
        return [
            a / b
            for a, b in zip(top.rates.get(body, []), bottom.rates.get(body, []), strict=False)
            if a is not None and b is not None and b > 0
        ]


# -- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.proxy",
        description="Requests/s of nginx proxy_pass, a bare urllib3 WSGI function, HARP 0.8 and "
        "workflowhttp's Proxy in front of the same nginx upstream, driven by wrk, interleaved.",
    )
    parser.add_argument("--setup", action="store_true", help="install nginx, wrk and HARP, exit")
    parser.add_argument("--rounds", type=int, help=f"rounds (default {DEFAULT_ROUNDS})")
    parser.add_argument(
        "--seconds",
        type=int,
        help=f"length of one wrk run, whole seconds (default {DEFAULT_SECONDS})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_ROUNDS} rounds of {QUICK_SECONDS} s unless given (under a minute)",
    )
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="gunicorn workers of both Python contenders, and nginx's worker_processes (default 2)",
    )
    parser.add_argument(
        "--worker-class",
        choices=("sync", "gthread"),
        default="sync",
        help="gunicorn worker class of both Python contenders (default sync)",
    )
    parser.add_argument(
        "--threads", type=int, default=4, help="threads per gthread worker (default 4)"
    )
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help="comma-separated subset of " + ", ".join(CONTENDERS) + " (default: all)",
    )
    parser.add_argument(
        "--harp-venv",
        type=Path,
        default=install.DEFAULT_HARP_VENV,
        help="the venv holding HARP 0.8 (default bench/.venv-harp)",
    )
    parser.add_argument(
        "--harp-python", help="with --setup: the Python 3.12 to build the venv with"
    )
    parser.add_argument("--check-only", action="store_true", help="check the answers, time nothing")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    args.seconds = args.seconds or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS)
    if min(args.rounds, args.seconds, args.connections, args.workers, args.threads) < 1:
        parser.error("--rounds, --seconds, --connections, --workers and --threads must be >= 1")
    names = [name.strip() for name in args.contenders.split(",") if name.strip()]
    unknown = sorted(set(names) - set(CONTENDERS))
    if unknown or not names:
        parser.error(f"--contenders: choose from {', '.join(CONTENDERS)}; got {args.contenders!r}")
    args.contenders = [name for name in CONTENDERS if name in names]
    return args


# -- the run ----------------------------------------------------------------------------------


def _versions(nginx: str, wrk: str) -> dict[str, str]:
    from importlib.metadata import version

    shown = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=30, check=False)
    words = (shown.stdout or shown.stderr).split()  # "wrk debian/4.1.0-3+b2 [epoll] ..."
    return {
        "python": platform.python_version(),
        "nginx": services.nginx_version(nginx),
        "wrk": words[1] if len(words) > 1 and words[0] == "wrk" else "?",
        "urllib3": version("urllib3"),
    }


def _proxy_import_error() -> str | None:
    """Return why ``workflowhttp.proxy.Proxy`` cannot be used yet, or None."""
    try:
        from workflowhttp.proxy import Proxy  # noqa: F401
    except Exception as ex:  # not written yet, or broken: the contender is skipped
        return f"`from workflowhttp.proxy import Proxy` failed ({type(ex).__name__}: {ex})"
    return None


def check_answers(contender: Contender) -> list[str]:
    """Request every body once; return how the answers differ from the upstream's."""
    import http.client

    problems = []
    for body_name, (path, expected) in BODIES.items():
        try:
            connection = http.client.HTTPConnection(HOST, contender.port, timeout=10)
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                status, body = response.status, response.read()
            finally:
                connection.close()
        except (OSError, http.client.HTTPException) as ex:
            problems.append(f"{contender.name} GET {path}: {type(ex).__name__}: {ex}")
            continue
        if status != 200 or body != expected:
            same = " (the same length, other bytes)" if len(body) == len(expected) else ""
            problems.append(
                f"{contender.name} GET {path} ({body_name}): status {status}, {len(body)} bytes"
                f"{same}; expected 200 and the upstream's {len(expected)} bytes"
            )
    return problems


def _start_contenders(
    args: argparse.Namespace,
    contenders: dict[str, Contender],
    directory: Path,
    upstream: str,
    progress: Progress,
) -> None:
    settings = GunicornSettings(args.workers, args.worker_class, args.threads)
    python_contenders = [
        ("urllib3", "bench.proxy.targets:forward"),
        ("workflowhttp", "bench.proxy.targets:workflowhttp_proxy"),
    ]
    wanted = [(name, target) for name, target in python_contenders if name in contenders]
    info = None
    if wanted:
        try:
            info = gunicorn_info()
        except ServerError as ex:
            for name, _ in wanted:
                contenders[name].skipped = str(ex)
    for name, target in wanted:
        contender = contenders[name]
        if contender.skipped or info is None:
            continue
        contender.description = f"gunicorn {info.version}, {settings.describe()}"
        progress(f"starting {name} under gunicorn ({settings.describe()})")

        def make(port: int, name: str = name, target: str = target) -> Service:
            assert info is not None
            return services.gunicorn_service(
                name, target, port, upstream, settings, info, directory
            )

        try:
            contender.port = services.start(make, ("/short",)).port
        except ServiceError as ex:
            contender.skipped = f"gunicorn did not start: {ex}"
    if "harp" in contenders and not contenders["harp"].skipped:
        harp = contenders["harp"]
        python = install.venv_python(args.harp_venv)
        progress("starting HARP")
        try:
            harp.port = services.start(
                lambda port: services.harp_service(python, port, upstream, directory),
                ("/short",),
            ).port
        except ServiceError as ex:
            harp.skipped = f"HARP did not start: {ex}"


def run(args: argparse.Namespace, progress: Progress) -> Results:
    """Start everything, check the answers, take the interleaved wrk samples, stop everything."""
    started = time.perf_counter()
    nginx, wrk = services.find_nginx(), find_wrk()
    if nginx is None or wrk is None:
        missing = " and ".join(name for name, path in (("nginx", nginx), ("wrk", wrk)) if not path)
        raise SystemExit(
            f"[bench.proxy] {missing} not installed: run `python -m bench.proxy --setup`"
        )
    versions = _versions(nginx, wrk)
    contenders = {name: Contender(name) for name in args.contenders}
    if "workflowhttp" in contenders:
        contenders["workflowhttp"].skipped = _proxy_import_error()
    if "harp" in contenders:
        contenders["harp"].skipped = install.harp_missing(args.harp_venv)
        if contenders["harp"].skipped is None:
            versions["harp-proxy"] = install.harp_version(args.harp_venv) or "?"
            contenders["harp"].description = (
                f"harp-proxy {versions['harp-proxy']}, one process (hypercorn, asyncio), "
                "applications http_client + proxy, no cache"
            )
    settings = {
        "rounds": args.rounds,
        "seconds": args.seconds,
        "connections": args.connections,
        "wrk": f"wrk -t1 -c{args.connections} -d{args.seconds}s --timeout 5s",
        "workers": args.workers,
        "worker_class": args.worker_class,
        "threads": args.threads if args.worker_class == "gthread" else None,
        "cpus": os.cpu_count(),
        "load_average_before": round(os.getloadavg()[0], 2),
    }
    results = Results(settings, versions, contenders)
    with (
        sigterm_as_exit(),
        tempfile.TemporaryDirectory(prefix="bench-proxy-") as temporary,
    ):
        directory = Path(temporary)
        try:
            progress(f"starting nginx (upstream and proxy_pass, {args.workers} worker processes)")
            try:
                ports = services.start_nginx(nginx, directory, args.workers)[1]
            except ServiceError as ex:  # no upstream: nothing can be measured
                raise SystemExit(f"[bench.proxy] nginx did not start: {ex}") from ex
            upstream = f"http://{HOST}:{ports.upstream}"
            if "nginx" in contenders:
                contenders["nginx"].port = ports.proxy
                contenders["nginx"].description = (
                    f"nginx {versions['nginx']} proxy_pass, {args.workers} worker processes, "
                    "keepalive 32 to the upstream"
                )
            _start_contenders(args, contenders, directory, upstream, progress)
            live = [c for c in contenders.values() if not c.skipped]
            for contender in live:
                problems = check_answers(contender)
                results.discrepancies += problems
                if problems:
                    contender.skipped = "wrong answers (see Discrepancies)"
            live = [c for c in live if not c.skipped]
            for contender in contenders.values():
                if contender.skipped:
                    progress(f"{contender.name}: SKIPPED, {contender.skipped}")
            if not args.check_only:
                _measure(args, results, live, wrk, progress)
        finally:
            services.stop_all()
    results.wall_seconds = round(time.perf_counter() - started, 1)
    settings["load_average_after"] = round(os.getloadavg()[0], 2)
    return results


def _measure(
    args: argparse.Namespace,
    results: Results,
    live: list[Contender],
    wrk: str,
    progress: Progress,
) -> None:
    def sample(contender: Contender, body: str, seconds: int) -> float | None:
        url = f"http://{HOST}:{contender.port}{BODIES[body][0]}"
        try:
            result = run_wrk(wrk, url, args.connections, seconds)
        except ServerError as ex:
            results.notes.append(f"{contender.name} {body}: {ex}")
            return None
        contender.errors[body] = contender.errors.get(body, 0) + result.errors
        return result.requests_per_second

    progress(f"warming up ({len(live)} contenders x {len(BODIES)} bodies x {WARMUP_SECONDS} s)")
    for contender in live:
        for body in BODIES:
            sample(contender, body, WARMUP_SECONDS)
            contender.errors.pop(body, None)  # warm-up errors (first connections) do not count
    for round_index in range(args.rounds):
        shift = round_index % len(live) if live else 0
        order = live[shift:] + live[:shift]
        for body in BODIES:
            for contender in order:
                rate = sample(contender, body, args.seconds)
                contender.rates.setdefault(body, []).append(rate)
        summary = ", ".join(
            f"{c.name} {c.rates['short'][-1] or 0:,.0f}/{c.rates['large'][-1] or 0:,.0f}"
            for c in live
        )
        progress(f"round {round_index + 1}/{args.rounds} (req/s short/large): {summary}")
    for contender in live:
        for body, errors in contender.errors.items():
            if errors:
                results.notes.append(
                    f"{contender.name} {body}: wrk counted {errors} socket errors or non-2xx"
                )


# -- the report -------------------------------------------------------------------------------


def _rate(contender: Contender, body: str) -> str:
    median = contender.median(body)
    if median is None:
        return "—"
    values = [rate for rate in contender.rates[body] if rate is not None]
    return f"{median:,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def _ratio(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):.2f}x [{min(values):.2f}-{max(values):.2f}]"


def bar_verdict(results: Results) -> str:
    """Say whether workflowhttp's Proxy meets the issue's bar on both bodies."""
    failed, unmeasured = [], []
    for numerator, denominator, label, bar in RATIOS:
        if bar is None:
            continue
        for body in BODIES:
            values = results.ratios(numerator, denominator, body)
            if not values:
                unmeasured.append(f"{label} {body}")
            elif statistics.median(values) < bar:
                failed.append(f"{label} {body} {statistics.median(values):.2f}x < {bar:.2f}x")
    if unmeasured:
        return "not measured (" + ", ".join(unmeasured) + ")"
    return "met" if not failed else "NOT met: " + "; ".join(failed)


def markdown(results: Results) -> str:
    """Return the human-readable report."""
    settings, versions = results.settings, results.versions
    threads = f", {settings['threads']} threads" if settings["threads"] else ""
    lines = [
        f"## Proxy benchmark: {settings['rounds']} rounds x {settings['seconds']} s per sample, "
        f"`{settings['wrk']}`, {settings['cpus']} CPUs",
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()),
        f"Python contenders: gunicorn, {settings['workers']} {settings['worker_class']} "
        f"workers{threads}, both the same.",
        "",
        "Median requests/s over the rounds (lowest-highest round):",
        "",
    ]
    rows = []
    for contender in results.contenders.values():
        if contender.skipped:
            rows.append([f"`{contender.name}`", f"skipped: {contender.skipped}", "—", "—"])
            continue
        rows.append(
            [
                f"`{contender.name}`",
                contender.description,
                *(_rate(contender, body) for body in BODIES),
            ]
        )
    lines += table(["contender", "what", *(TITLES[b] for b in BODIES)], "llrr", rows)
    lines += [
        "",
        "Paired ratios of requests/s: median over rounds of the ratio within a round "
        "[lowest-highest round]; > 1: the first one served more.",
        "",
    ]
    ratio_rows = [
        [
            label,
            *(_ratio(results.ratios(numerator, denominator, body)) for body in BODIES),
            f"≥ {bar:.2f}x" if bar is not None else "",
        ]
        for numerator, denominator, label, bar in RATIOS
    ]
    lines += table(["ratio", *(TITLES[b] for b in BODIES), "bar"], "lrrr", ratio_rows)
    lines += ["", f"The bar (≥ 0.8x urllib3 and ≥ 4x HARP on both bodies): {bar_verdict(results)}"]
    if results.discrepancies:
        lines += ["", "**Discrepancies** (not timed):", ""]
        lines += [f"- {problem}" for problem in results.discrepancies]
    if results.notes:
        lines += ["", "**Notes**:", ""]
        lines += [f"- {note}" for note in results.notes]
    lines += [
        "",
        f"Wall time: {results.wall_seconds:.0f} s. Load average (1 min) before and after: "
        f"{settings['load_average_before']:.2f}, {settings.get('load_average_after', 0):.2f} "
        "(the run itself keeps the cores busy; a load well above 0 before it means something "
        "else was running, and the numbers are noisy).",
    ]
    return "\n".join(lines)


def check_report(results: Results) -> str:
    """Return what ``--check-only`` found: per contender, answers right, wrong, or skipped."""
    lines = ["## Proxy benchmark: answers checked (nothing timed)", ""]
    for contender in results.contenders.values():
        verdict = f"skipped: {contender.skipped}" if contender.skipped else "answers right"
        lines.append(f"- `{contender.name}`: {verdict}")
    if results.discrepancies:
        lines += ["", "**Discrepancies**:", ""]
        lines += [f"- {problem}" for problem in results.discrepancies]
    return "\n".join(lines)


def as_json(results: Results) -> dict[str, Any]:
    return {
        "settings": results.settings,
        "versions": results.versions,
        "contenders": {
            name: {
                "description": contender.description,
                "skipped": contender.skipped,
                "requests_per_second": contender.rates,
                "median": {body: contender.median(body) for body in BODIES},
                "wrk_errors": contender.errors,
            }
            for name, contender in results.contenders.items()
        },
        "ratios": {
            label: {
                body: {
                    "per_round": results.ratios(numerator, denominator, body),
                    "median": (
                        statistics.median(values)
                        if (values := results.ratios(numerator, denominator, body))
                        else None
                    ),
                }
                for body in BODIES
            }
            | {"bar": bar}
            for numerator, denominator, label, bar in RATIOS
        },
        "bar": bar_verdict(results),
        "discrepancies": results.discrepancies,
        "notes": results.notes,
        "wall_seconds": results.wall_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or ``--setup``); return 1 when a contender answered wrongly."""
    args = parse_args(argv)
    if args.setup:
        return install.setup(args.harp_venv, args.harp_python)

    def progress(message: str) -> None:
        print(f"[bench.proxy] {message}", file=sys.stderr, flush=True)

    try:
        results = run(args, progress)
    except KeyboardInterrupt:  # every process started has been stopped on the way out
        progress("interrupted")
        return 130
    print(check_report(results) if args.check_only else markdown(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(as_json(results), indent=2) + "\n")
        progress(f"wrote {args.json}")
    return 1 if results.discrepancies else 0


if __name__ == "__main__":
    raise SystemExit(main())
