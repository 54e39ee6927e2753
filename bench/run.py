"""Compare workflowhttp with a raw WSGI floor, Flask and Falcon, in process and interleaved.

Usage (from the repository root)::

    python bench/run.py                 # in process, about 1.5 minutes
    python bench/run.py --quick         # in process, about 10 seconds
    python bench/run.py --only hello,user --rounds 20 --json out.json
    python bench/run.py --all           # in process, under gunicorn + wrk, memory: < 4 minutes
    python bench/run.py --gunicorn-only # requests/s under a real gunicorn, about 1.5 minutes
    python bench/run.py --memory-only   # bytes retained per request, worker RSS: about 1 minute

See bench/README.md for what is measured and how to read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `workflowhttp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import memory, under_gunicorn
from bench.harness import FRAMEWORKS, GROUP_NAMES, build_plan, run
from bench.report import as_json, markdown

DEFAULT_ROUNDS, DEFAULT_SECONDS = 30, 3.0
QUICK_ROUNDS, QUICK_SECONDS = 8, 1.0
#: In-process rounds of `--all`, which also runs the gunicorn and memory parts (< 4 minutes).
ALL_ROUNDS = 10
#: Gunicorn rounds and seconds per wrk run: default, and with `--quick`.
GUNICORN_ROUNDS, GUNICORN_SECONDS = 3, 2
QUICK_GUNICORN_ROUNDS, QUICK_GUNICORN_SECONDS = 2, 1


def _names(values: list[str], allowed: tuple[str, ...], option: str) -> list[str]:
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        choices = ", ".join(allowed)
        raise SystemExit(f"{option}: unknown {', '.join(unknown)}; choose from {choices}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Interleaved WSGI benchmark of raw, flask, falcon and workflowhttp: in "
        "process (default), under gunicorn + wrk, and memory retained per request.",
    )
    parser.add_argument("--rounds", type=int, help=f"rounds of samples (default {DEFAULT_ROUNDS})")
    parser.add_argument(
        "--seconds-per-round",
        type=float,
        help=f"time budget of one round, shared by all samples (default {DEFAULT_SECONDS})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_ROUNDS} rounds of {QUICK_SECONDS} s unless given explicitly (~10 s)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="ENDPOINT",
        help="comparisons to run, repeatable or comma-separated: " + ", ".join(GROUP_NAMES),
    )
    parser.add_argument(
        "--frameworks",
        action="append",
        default=[],
        metavar="NAME",
        help="frameworks to load, repeatable or comma-separated (default: all of "
        + ", ".join(FRAMEWORKS)
        + ")",
    )
    parser.add_argument("--no-extras", action="store_true", help="skip the workflowhttp variants")
    parser.add_argument(
        "--gunicorn-stream",
        action="store_true",
        help="under gunicorn, also serve workflowhttp with an event stream (no-op processor of "
        "every event): column workflowhttp_stream, ratio wf/workflowhttp_stream = its cost",
    )
    parser.add_argument(
        "--check-only", action="store_true", help="check every answer, time nothing"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parts = parser.add_argument_group("gunicorn and memory (see bench/README.md)")
    mode = parts.add_mutually_exclusive_group()
    mode.add_argument(
        "--all",
        action="store_true",
        help=f"in process ({ALL_ROUNDS} rounds unless --rounds), then under gunicorn, then memory",
    )
    mode.add_argument(
        "--gunicorn-only", action="store_true", help="only requests/s under gunicorn + wrk"
    )
    mode.add_argument("--memory-only", action="store_true", help="only memory retained per request")
    parts.add_argument(
        "--gunicorn-rounds",
        metavar="N",
        type=int,
        help=f"wrk rounds per worker count (default {GUNICORN_ROUNDS}, "
        f"{QUICK_GUNICORN_ROUNDS} with --quick)",
    )
    parts.add_argument(
        "--gunicorn-seconds",
        metavar="S",
        type=int,
        help=f"seconds of one wrk run, whole seconds (default {GUNICORN_SECONDS}, "
        f"{QUICK_GUNICORN_SECONDS} with --quick)",
    )
    parts.add_argument(
        "--connections",
        metavar="N",
        type=int,
        default=under_gunicorn.Config.connections,
        help="wrk connections (default %(default)s)",
    )
    parts.add_argument(
        "--workers",
        metavar="LIST",
        default=",".join(map(str, under_gunicorn.Config.workers)),
        help="gunicorn worker counts, comma-separated (default %(default)s)",
    )
    parts.add_argument(
        "--memory-requests",
        metavar="N",
        type=int,
        default=memory.Config.requests,
        help="measured requests per app and endpoint (default %(default)s)",
    )
    parts.add_argument(
        "--memory-warmup",
        metavar="N",
        type=int,
        default=memory.Config.warmup,
        help="warm-up requests before measuring (default %(default)s)",
    )
    return parser.parse_args(argv)


def _gunicorn_config(args: argparse.Namespace) -> under_gunicorn.Config:
    try:
        workers = tuple(int(w) for w in args.workers.split(",") if w.strip())
    except ValueError:
        raise SystemExit(f"--workers: expected numbers like 1,2, got {args.workers!r}") from None
    rounds = args.gunicorn_rounds or (QUICK_GUNICORN_ROUNDS if args.quick else GUNICORN_ROUNDS)
    seconds = args.gunicorn_seconds or (QUICK_GUNICORN_SECONDS if args.quick else GUNICORN_SECONDS)
    if not workers or min(workers) < 1 or rounds < 1 or seconds < 1 or args.connections < 1:
        raise SystemExit("--workers, --gunicorn-rounds/-seconds and --connections must be >= 1")
    return under_gunicorn.Config(rounds, seconds, args.connections, workers)


def _memory_config(args: argparse.Namespace) -> memory.Config:
    if args.memory_requests < 1 or args.memory_warmup < 0:
        raise SystemExit("--memory-requests must be >= 1 and --memory-warmup >= 0")
    return memory.Config(warmup=args.memory_warmup, requests=args.memory_requests)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 1 when an app answered differently from the expected answer."""
    args = parse_args(argv)
    in_process = not (args.gunicorn_only or args.memory_only)
    served = args.all or args.gunicorn_only
    measure_memory = args.all or args.memory_only
    if args.check_only and not in_process:
        raise SystemExit("--check-only checks the in-process answers; drop --gunicorn/memory-only")
    rounds = args.rounds or (
        QUICK_ROUNDS if args.quick else ALL_ROUNDS if args.all else DEFAULT_ROUNDS
    )
    seconds = args.seconds_per_round or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS)
    if rounds < 1 or seconds <= 0:
        raise SystemExit("--rounds and --seconds-per-round must be positive")
    frameworks = _names(args.frameworks, FRAMEWORKS, "--frameworks") or list(FRAMEWORKS)
    only = set(_names(args.only, GROUP_NAMES, "--only")) or None
    gunicorn_config = _gunicorn_config(args) if served else None
    memory_config = _memory_config(args) if measure_memory else None

    def progress(message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    sections: list[str] = []
    document: dict[str, Any] = {}
    failed = False
    meta: dict[str, Any] = {}
    if in_process:
        plan = build_plan(frameworks, only, extras=not args.no_extras)
        for note in plan.notes:
            progress(f"note: {note}")
        for problem in plan.discrepancies:
            progress(f"DISCREPANCY: {problem}")
        checked = sum(len(group.contenders) for group in plan.groups)
        progress(f"{checked} answers checked, {len(plan.discrepancies)} discrepancies")
        if args.check_only:
            return 1 if plan.discrepancies else 0
        run(plan, rounds, seconds, progress)
        meta = {"rounds": rounds, "seconds_per_round": seconds}
        failed = bool(plan.discrepancies)
    meta |= {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "argv": sys.argv[1:] if argv is None else argv,
    }
    if in_process:
        meta["wall_seconds"] = round(time.perf_counter() - started, 1)
        sections.append(markdown(plan, meta))
        document = as_json(plan, meta)
    else:
        document = {"meta": meta}
    if gunicorn_config is not None:
        served_frameworks = frameworks + (["workflowhttp_stream"] if args.gunicorn_stream else [])
        served_results = under_gunicorn.run(served_frameworks, gunicorn_config, progress)
        sections.append(under_gunicorn.markdown(served_results))
        document["gunicorn"] = under_gunicorn.as_json(served_results)
        failed = failed or bool(served_results.discrepancies)
    if memory_config is not None:
        memory_results = memory.run(frameworks, memory_config, progress)
        sections.append(memory.markdown(memory_results))
        document["memory"] = memory.as_json(memory_results)
        failed = failed or bool(memory_results.discrepancies)
    total = round(time.perf_counter() - started, 1)
    meta["total_wall_seconds"] = total
    print("\n".join(sections))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        progress(f"wrote {args.json}")
    progress(f"done in {total} s")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # every gunicorn started has been stopped on the way out
        print("[bench] interrupted", file=sys.stderr)
        sys.exit(130)
