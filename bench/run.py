"""Compare workflowhttp with a raw WSGI floor, Flask and Falcon, in process and interleaved.

Usage (from the repository root)::

    python bench/run.py                 # about 1.5 minutes
    python bench/run.py --quick         # about 10 seconds
    python bench/run.py --only hello,user --rounds 20 --json out.json

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

if __package__ in (None, ""):  # run as a script: make `bench` and `workflowhttp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import FRAMEWORKS, GROUP_NAMES, build_plan, run
from bench.report import as_json, markdown

DEFAULT_ROUNDS, DEFAULT_SECONDS = 30, 3.0
QUICK_ROUNDS, QUICK_SECONDS = 8, 1.0


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
        description="Interleaved in-process WSGI benchmark: raw, flask, falcon, workflowhttp.",
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
        "--check-only", action="store_true", help="check every answer, time nothing"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 1 when an app answered differently from the others."""
    args = parse_args(argv)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    seconds = args.seconds_per_round or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS)
    if rounds < 1 or seconds <= 0:
        raise SystemExit("--rounds and --seconds-per-round must be positive")
    frameworks = _names(args.frameworks, FRAMEWORKS, "--frameworks") or list(FRAMEWORKS)
    only = set(_names(args.only, GROUP_NAMES, "--only")) or None

    def progress(message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    started = time.perf_counter()
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
    meta = {
        "rounds": rounds,
        "seconds_per_round": seconds,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "argv": sys.argv[1:] if argv is None else argv,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print(markdown(plan, meta))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(as_json(plan, meta), indent=2) + "\n")
        progress(f"wrote {args.json}")
    progress(f"done in {meta['wall_seconds']} s")
    return 1 if plan.discrepancies else 0


if __name__ == "__main__":
    sys.exit(main())
