"""What the event stream costs a request, in process: ``python -m bench.stream_cost``.

Interleaved rounds of ``GET /hello`` on the benchmark's main app, without a stream and with a
stream whose no-op processor takes every event, or only ``RequestFinished``, or none of the
framework's events (``events = ()``: a processor of its own events only). One sample is
``--requests`` requests sent back to back (as ``bench/run.py`` sends them), then
``stream.flush()``, which returns once the shard threads have processed every one of them.
The variants run round-robin, the first one rotating every round.

Four costs per variant, each the median over rounds of the paired ratio *variant ÷ plain*
in the same round (``1.00x`` costs nothing; ``±N%`` is half the interquartile range):

- **settled**: wall time of the requests plus the flush, i.e. all the work the stream causes,
  on any thread (the GIL serialises it). This is the cost ``bench/run.py`` reports for its
  stream variants;
- **cpu**: the process's CPU time (``time.process_time()``, every thread) over the same span:
  the same work, but steadier on a shared machine, where other processes' load does not count;
- **request thread**: wall time until the last request returned, before the flush: what the
  requests themselves took, with the shard threads working beside them (and, under the GIL,
  taking turns with them);
- **request thread cpu**: the CPU time of the requests' own thread
  (``time.thread_time()``) over the same span: what the request path itself costs, the work
  the shard threads do meanwhile left out.

``--source DIR`` imports ``workflowhttp`` from ``DIR`` instead of this tree (for instance an
older checkout), so that before and after are measured with the same command::

    python -m bench.stream_cost                       # this tree
    python -m bench.stream_cost --source ../old-tree  # the same, on another tree's package

Timings are never asserted anywhere: this is a report.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from itertools import repeat
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(ROOT))

VARIANTS = ("plain", "stream, every event", "stream, RequestFinished", "stream, events = ()")


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> Any:
    return None


def _build(source: str | None) -> dict[str, tuple[Callable[..., Iterable[bytes]], Any]]:
    """Return each variant's app and stream (``None`` for the plain app)."""
    if source is not None:
        # Before anything imports workflowhttp: `bench` itself is already this tree's.
        sys.path.insert(0, str(Path(source).resolve()))
    from bench.apps import workflowhttp_app

    plain = workflowhttp_app.make_app("main")
    every = workflowhttp_app.make_stream_app(every_event=True)
    finished = workflowhttp_app.make_stream_app(every_event=False)
    quiet = workflowhttp_app.make_stream_app(every_event=False, framework_events=False)
    return {
        "plain": (plain, None),
        "stream, every event": (every, every.stream),  # type: ignore[attr-defined]
        "stream, RequestFinished": (finished, finished.stream),  # type: ignore[attr-defined]
        "stream, events = ()": (quiet, quiet.stream),  # type: ignore[attr-defined]
    }


def _sample(
    app: Callable[..., Iterable[bytes]], stream: Any, environ: dict[str, Any], calls: int
) -> tuple[int, int, int, int]:
    """Send ``calls`` requests, settle the stream; return (request ns, settled ns, cpu ns,
    request thread cpu ns)."""
    copy = environ.copy
    start_response = _start_response
    cpu = time.process_time_ns()
    own = time.thread_time_ns()
    started = time.perf_counter_ns()
    for _ in repeat(None, calls):
        result = app(copy(), start_response)
        for _chunk in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()
    requests = time.perf_counter_ns() - started
    own = time.thread_time_ns() - own
    if stream is not None:
        stream.flush(timeout=30)
    settled = time.perf_counter_ns() - started
    return requests, settled, time.process_time_ns() - cpu, own


def _spread(values: list[float]) -> float:
    if len(values) < 4:
        return 0.0
    quartiles = statistics.quantiles(values, n=4)
    return (quartiles[2] - quartiles[0]) / 2 / statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_cost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=50, help="rounds (default 50)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per sample")
    parser.add_argument("--source", help="import workflowhttp from this directory")
    args = parser.parse_args(argv)

    from bench.endpoints import build_environ

    apps = _build(args.source)
    import workflowhttp

    environ = dict(build_environ("GET", "/hello"))
    for app, stream in apps.values():  # warm up (and start the shard threads)
        _sample(app, stream, environ, args.requests)
    gc.collect()
    gc.freeze()
    samples: dict[str, list[tuple[int, int, int, int]]] = {name: [] for name in VARIANTS}
    for number in range(args.rounds):
        shift = number % len(VARIANTS)
        for name in VARIANTS[shift:] + VARIANTS[:shift]:
            app, stream = apps[name]
            gc.collect()
            samples[name].append(_sample(app, stream, environ, args.requests))

    where = Path(workflowhttp.__file__).resolve().parent.parent
    print(f"## GET /hello with an event stream: {args.rounds} rounds x {args.requests} requests")
    print(f"\nworkflowhttp from {where}, Python {sys.version.split()[0]}\n")
    print("| variant | settled µs/request | settled | cpu | request thread | request thread cpu |")
    print("|:---|---:|---:|---:|---:|---:|")
    base = samples["plain"]
    for name in VARIANTS:
        mine = samples[name]
        settled_us = statistics.median(s[1] for s in mine) / args.requests / 1000
        cells = [f"{settled_us:.2f}"]
        for index in (1, 2, 0, 3):
            ratios = [m[index] / b[index] for m, b in zip(mine, base, strict=True)]
            median = statistics.median(ratios)
            cells.append(f"{median:.2f}x ±{_spread(ratios) * 100:.0f}%")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for _, stream in apps.values():
        if stream is not None:
            stream.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
