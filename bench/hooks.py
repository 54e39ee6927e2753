"""What route hooks cost, in process: ``python -m bench.hooks`` (``--quick``: about 10 s).

The issue's bar: an app with :class:`~workflowhttp.hooks.Hooks` and 1 000 registered route
hooks stays ≥ 0.9x the same app without hooks on a request no hook matches, and a hooked
request costs the proxy's cost plus ≤ 5 µs of matching.

The apps are the benchmark's main app (``bench/apps/workflowhttp_app.py``: ``/hello`` and the
others) plus a destination route ``/target/{rest:path}``; the hooked ones add
``Hooks(storage="sqlite:///<temp dir>/...")``. The 1 000 hooks are ``/svc/<n>``,
``/svc/<n>/items``, ... ``/svc/<n>/items/v1/all/x`` (depth 2 to 6 by ``n % 5``), each forwarding
to the local destination ``/target/<n>``: 999 written through the storage, one registered over
HTTP (``PUT /svc/1/items/_hooks/route``, which reloads the index).

1. **No hook matches**: ``GET /hello`` and ``GET /nope/x/y`` (a 404) on the plain app, on the
   app with ``Hooks`` and no hook, and on the app with 1 000 hooks: speed relative to the plain
   app (``plain time ÷ time``, the median of the paired ratios of the rounds). Goal ≥ 0.90x.
2. **Matching alone** (best of the repetitions, µs per call, the loop included):
   ``hooks.registry.routes.find(method, path, environ)`` with 1 000 hooks, hooked and not
   (goal ≤ 5 µs); the whole route listener of ``Hooks`` (with a stand-in event); the app's
   router with and without the hooks' registration routes; one full reload of the index.
3. **A hooked request end to end**: ``GET /svc/501/items/42`` hooked to ``/target/501``
   (answered in process) against ``GET /target/501/42`` called directly: the difference is the
   hook, the proxy transaction and the in-process dispatch. Then the same transaction hooked
   and through a plain ``Proxy`` on the app without hooks, both upstreams answering in process
   (the proxy's ``dispatch``, no socket): hooked = proxy + matching, read off without network
   noise. Last (skipped with ``--no-upstream``), both against a real gunicorn upstream on
   127.0.0.1 (``tests.apps.echo_upstream``, gthread, keep-alive), noisier by far.

Times are the request thread's CPU time (``time.thread_time_ns()``: another process's load on
a shared machine does not count), wall time against the gunicorn upstream. The variants of a
part are sampled round-robin, the first rotating every round. ``±N%`` is half the
interquartile range of the ratios, ``±N`` that of the differences. Timings are never asserted
anywhere: this is a report.
"""

from __future__ import annotations

import argparse
import gc
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
from werkzeug.datastructures import Headers  # noqa: E402

from bench.apps.workflowhttp_app import MAIN_CONTROLLERS  # noqa: E402
from bench.endpoints import build_environ  # noqa: E402
from bench.harness import Contender  # noqa: E402
from bench.server import HOST, free_ports, stop_process  # noqa: E402
from workflowhttp import App, http  # noqa: E402
from workflowhttp.hooks import Hooks, Record, RouteSpec  # noqa: E402
from workflowhttp.proxy import Proxy, ProxyEvent  # noqa: E402
from workflowhttp.proxy.events import UpstreamResponse  # noqa: E402
from workflowhttp.testing import TestClient  # noqa: E402
from workflowhttp.workflow import FILTER_RESPONSE  # noqa: E402

HOOKS = 1000
#: The hook registered over HTTP (and, with an upstream, forwarding to it).
HTTP_HOOK = 1
#: The hook whose proxy answers from :func:`canned` (and the plain Proxy's base path).
CANNED_HOOK = 2
CANNED_BODY = b'{"canned": true}'
_SEGMENTS = ("items", "v1", "all", "x")

WSGIApp = Callable[..., Iterable[bytes]]
Variant = tuple[str, WSGIApp, dict[str, Any]]


@http.GET("/target/{rest:path}")
def target(rest: str) -> str:
    """The local destination of every hook."""
    return f"target {rest}"


def resource(number: int) -> str:
    """Return the resource of hook ``number``: ``/svc/<n>`` and 0 to 4 more segments."""
    return "/".join(("", "svc", str(number), *_SEGMENTS[: number % 5]))


def canned(event: ProxyEvent) -> None:
    """An upstream answering in process (a proxy's ``dispatch``): no socket, no noise."""
    headers = Headers([("Content-Type", "application/json")])
    headers["Content-Length"] = str(len(CANNED_BODY))
    event.response = UpstreamResponse(200, headers, iter((CANNED_BODY,)), 1 << 20)
    event.next(FILTER_RESPONSE)


class StandIn:
    """The little of an :class:`~workflowhttp.HttpEvent` the hooks' route listener reads."""

    __slots__ = ("environ", "_next", "route")

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self._next = None
        self.route: Any = None

    def route_found(self, route: Any, found: Any = None) -> None:
        self.route = route


# -- timing ---------------------------------------------------------------------------------


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> Any:
    return None


def _sample(app: WSGIApp, environ: dict[str, Any], calls: int) -> tuple[int, int]:
    """Call ``app`` ``calls`` times with a copy of ``environ``; return the nanoseconds of
    wall time and of this thread's CPU time."""
    copy = environ.copy
    start_response = _start_response
    cpu = time.thread_time_ns()
    started = time.perf_counter_ns()
    for _ in repeat(None, calls):
        result = app(copy(), start_response)
        for _chunk in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return time.perf_counter_ns() - started, time.thread_time_ns() - cpu


def _answer(app: WSGIApp, environ: dict[str, Any]) -> tuple[str, bytes]:
    """Return the status line and body ``app`` answers ``environ`` with."""
    status: list[str] = []

    def start_response(line: str, headers: list[tuple[str, str]], exc_info: object = None) -> Any:
        status.append(line)

    result = app(environ.copy(), start_response)
    body = b"".join(result)
    close = getattr(result, "close", None)
    if close is not None:
        close()
    return status[0], body


def interleaved(
    variants: list[Variant], rounds: int, calls: int, *, wall: bool = False
) -> dict[str, list[float]]:
    """Return each variant's samples (µs per request), sampled round-robin: the request
    thread's CPU time (steady on a shared machine: another process's load does not count),
    or with ``wall`` the wall time (for a socket, where the waiting is the point)."""
    for _, app, environ in variants:  # warm up
        _sample(app, environ, max(calls // 4, 10))
    samples: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for number in range(rounds):
        shift = number % len(variants)
        for name, app, environ in variants[shift:] + variants[:shift]:
            ns = _sample(app, environ, calls)[0 if wall else 1]
            samples[name].append(ns / calls / 1000)
    return samples


def best_us(call: Callable[[], Any], count: int, repetitions: int) -> float:
    """Return the best over ``repetitions`` of the µs (this thread's CPU time) per call of
    ``count`` calls."""
    best = float("inf")
    for _ in range(repetitions):
        started = time.thread_time_ns()
        for _ in repeat(None, count):
            call()
        best = min(best, (time.thread_time_ns() - started) / count)
    return best / 1000


def _half_iqr(values: list[float]) -> float:
    if len(values) < 4:
        return 0.0
    quartiles = statistics.quantiles(values, n=4)
    return (quartiles[2] - quartiles[0]) / 2


def speed(mine: list[float], base: list[float]) -> tuple[float, float]:
    """Return the median of ``base ÷ mine`` over the rounds, and its relative spread."""
    ratios = [b / m for m, b in zip(mine, base, strict=True)]
    median = statistics.median(ratios)
    return median, _half_iqr(ratios) / median


def difference(mine: list[float], base: list[float]) -> tuple[float, float]:
    """Return the median of ``mine - base`` (µs) over the rounds, and its spread."""
    differences = [m - b for m, b in zip(mine, base, strict=True)]
    return statistics.median(differences), _half_iqr(differences)


# -- the apps -------------------------------------------------------------------------------


@dataclass
class Apps:
    controllers: list[Any]
    plain: App
    empty: App
    empty_hooks: Hooks
    hooked: App
    hooks: Hooks
    upstream: str | None


def _record(number: int, destination: str) -> Record:
    spec = msgspec.json.encode(RouteSpec(destination=destination))
    return Record("route", resource(number), "", spec, time.time() + 3600)


def register(client: TestClient, hooks: Hooks, http_destination: str) -> None:
    """Register the 1 000 hooks: all but one through the storage, that one over HTTP."""
    for number in range(HOOKS):
        if number != HTTP_HOOK:
            hooks.storage.put(_record(number, f"/target/{number}"))
    answer = client.put(
        f"{resource(HTTP_HOOK)}/_hooks/route", json={"destination": http_destination}
    )
    if answer.status_code != 200:
        raise SystemExit(f"registering a hook answered {answer.status_code}: {answer.text}")
    if len(hooks.registry.routes) != HOOKS:
        raise SystemExit(f"the index holds {len(hooks.registry.routes)} hooks, not {HOOKS}")


def build(stack: ExitStack, upstream: str | None) -> Apps:
    """Build and start the apps (stopped when ``stack`` closes); register the hooks."""
    directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    controllers = [*MAIN_CONTROLLERS, target]
    plain = App(controllers=controllers)
    empty_hooks = Hooks(storage=f"sqlite:///{directory}/empty.sqlite3")
    empty = App(controllers=controllers, extensions=[empty_hooks])
    allowed = [f"{upstream}/svc/"] if upstream else []
    hooks = Hooks(storage=f"sqlite:///{directory}/hooks.sqlite3", allowed_destinations=allowed)
    hooked = App(controllers=controllers, extensions=[hooks])
    for app in (plain, empty):
        stack.enter_context(TestClient(app))
    client = stack.enter_context(TestClient(hooked))
    register(client, hooks, f"{upstream}{resource(HTTP_HOOK)}" if upstream else "/target/1")
    return Apps(controllers, plain, empty, empty_hooks, hooked, hooks, upstream)


@contextmanager
def echo_upstream() -> Iterator[str]:
    """A gunicorn ``tests.apps.echo_upstream`` on 127.0.0.1 (gthread, keep-alive)."""
    (port,) = free_ports(1)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "1", "--threads", "4",
         "--keep-alive", "30", "-b", f"{HOST}:{port}", "tests.apps.echo_upstream:app"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        give_up = time.monotonic() + 15
        while True:
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > give_up or process.poll() is not None:
                    raise SystemExit("the echo upstream did not start") from None
                time.sleep(0.05)
        yield f"http://{HOST}:{port}"
    finally:
        stop_process(process, 10)


# -- the parts ------------------------------------------------------------------------------


def no_match(apps: Apps, rounds: int, calls: int) -> None:
    """Part 1: requests no hook matches, on the three apps."""
    variants: list[Variant] = []
    for path in ("/hello", "/nope/x/y"):
        environ = dict(build_environ("GET", path))
        assert _answer(apps.plain, environ)[0] == _answer(apps.hooked, environ)[0]
        variants += [
            (f"GET {path}|plain", apps.plain, environ),
            (f"GET {path}|Hooks, no hook", apps.empty, environ),
            (f"GET {path}|Hooks, {HOOKS} hooks", apps.hooked, environ),
        ]
    samples = interleaved(variants, rounds, calls)
    print(f"### 1. No hook matches ({rounds} rounds x {calls} requests; goal ≥ 0.90x)\n")
    print("| request | app | µs/request | speed vs plain | calls/request (Python + C) |")
    print("|:---|:---|---:|---:|---:|")
    lowest = float("inf")
    for name, app, environ in variants:
        request, app_name = name.split("|")
        python_calls, c_calls = Contender(name, app, environ, None).calls_per_request()
        mine = samples[name]
        cell = "1.00x"
        if app_name != "plain":
            ratio, spread = speed(mine, samples[f"{request}|plain"])
            lowest = min(lowest, ratio)
            cell = f"{ratio:.2f}x ±{spread * 100:.0f}%"
        median = statistics.median(mine)
        counted = f"{python_calls} + {c_calls}"
        print(f"| {request} | {app_name} | {median:.2f} | {cell} | {counted} |")
    print(f"\nlowest: {lowest:.2f}x ({'met' if lowest >= 0.9 else 'NOT met'})\n")


def matching(apps: Apps, count: int, repetitions: int) -> None:
    """Part 2: ``find``, the route listener, the router, a reload."""
    index = apps.hooks.registry.routes
    cases = (
        ("/svc/501/items/42", "hooked, hook at depth 3"),
        ("/svc/500/items/v1/all/x/y", "hooked, hook at depth 2, path depth 7 (every depth)"),
        ("/svc/504/items/v1/all/x/y", "hooked, hook at depth 6"),
        ("/hello", "not hooked, depth 1 (no lookup)"),
        ("/nope/x/y", "not hooked, depth 3"),
        ("/nope/a/b/c/d/e/f", "not hooked, depth 7 (every depth)"),
    )
    print(f"### 2. Matching alone (best of {repetitions} x {count} calls)\n")
    print(f"`hooks.registry.routes.find(method, path, environ)` with {HOOKS} hooks (goal ≤ 5 µs):")
    print("\n| path | case | µs/call |")
    print("|:---|:---|---:|")
    worst = 0.0
    for path, case in cases:
        environ = dict(build_environ("GET", path))
        found = index.find("GET", path, environ)
        if (found is not None) != case.startswith("hooked"):
            raise SystemExit(f"find({path!r}) gave {found!r}")
        cost = best_us(lambda p=path, e=environ: index.find("GET", p, e), count, repetitions)
        worst = max(worst, cost)
        print(f"| `{path}` | {case} | {cost:.2f} |")
    print(f"\nhighest: {worst:.2f} µs ({'met' if worst <= 5 else 'NOT met'})")

    print(
        "\nWhere a request no hook matches spends it: the hooks' whole route listener "
        "(`Hooks._on_route`,\na stand-in event: the registration check, decoding the path, "
        "`find`) and the app's router\n(`app.router.match`; the hooks add their registration "
        "routes `/{resource:path}/_hooks/route`):\n"
    )
    print("| path | listener, no hook | listener, 1000 hooks | router, plain | router, Hooks |")
    print("|:---|---:|---:|---:|---:|")
    for path in ("/hello", "/nope/x/y"):
        environ = dict(build_environ("GET", path))
        cells = []
        for extension in (apps.empty_hooks, apps.hooks):
            listener, event = extension._on_route, StandIn(environ)
            listener(event)  # type: ignore[arg-type]
            assert event.route is None
            cost = best_us(lambda f=listener, e=event: f(e), count, repetitions)
            cells.append(f"{cost:.2f}")
        for app in (apps.plain, apps.hooked):
            match = app.router.match
            cells.append(f"{best_us(lambda m=match, p=path: m('GET', p), count, repetitions):.2f}")
        print(f"| `{path}` | " + " | ".join(cells) + " |")
    empty_call = best_us(lambda: None, count, repetitions)
    reload = min(best_us(apps.hooks.registry.reload, 1, 1) for _ in range(5))
    print(
        f"\n(An empty call in the same loop: {empty_call:.2f} µs.) In the background, one full "
        f"reload of the\n{HOOKS} hooks, which each worker's registry thread does every "
        f"{apps.hooks.registry.reload_interval:g} s, takes {reload / 1000:.1f} ms.\n"
    )


def _row(label: str, mine: list[float], base: list[float] | None) -> str:
    cell = ""
    if base is not None:
        more, spread = difference(mine, base)
        cell = f"{more:+.1f} ±{spread:.1f}"
    return f"| {label} | {statistics.median(mine):.1f} | {cell} |"


def end_to_end(stack: ExitStack, apps: Apps, rounds: int, calls: int, quick: bool) -> None:
    """Part 3: a hooked request against the direct one and against a plain Proxy."""
    hooked = apps.hooked
    local = dict(build_environ("GET", "/svc/501/items/42"))
    direct = dict(build_environ("GET", "/target/501/42"))
    assert _answer(hooked, local) == _answer(hooked, direct) == ("200 OK", b"target 501/42")
    samples = interleaved(
        [("plain", apps.plain, direct), ("direct", hooked, direct), ("hooked", hooked, local)],
        rounds,
        calls,
    )
    print(f"### 3. A hooked request end to end ({rounds} rounds x {calls} requests)\n")
    print("| request (app) | µs/request | more than direct (µs) |")
    print("|:---|---:|---:|")
    print(_row("`GET /target/501/42` (plain)", samples["plain"], samples["direct"]))
    print(_row(f"`GET /target/501/42` ({HOOKS} hooks)", samples["direct"], None))
    label = f"`GET /svc/501/items/42` → `/target/501/42` ({HOOKS} hooks)"
    print(_row(label, samples["hooked"], samples["direct"]))

    # The same transaction hooked and through a plain Proxy, the upstream answered in process.
    base_path = resource(CANNED_HOOK)
    proxy = Proxy(base_path, "http://127.0.0.1:9")
    proxy.dispatch = canned
    proxied = App(controllers=[*apps.controllers, proxy])
    stack.enter_context(TestClient(proxied))
    hook = apps.hooks.registry.routes.routes[base_path]
    hook.proxy.dispatch = canned  # kept by every reload while its record is unchanged
    through = dict(build_environ("GET", f"{base_path}/42"))
    assert _answer(hooked, through) == _answer(proxied, through) == ("200 OK", CANNED_BODY)
    samples = interleaved([("Proxy", proxied, through), ("hook", hooked, through)], rounds, calls)
    print(
        f"\nThe same transaction hooked and through `Proxy({base_path!r}, ...)` on the app "
        f"without hooks,\nboth upstreams answering in process (no socket), `GET {base_path}/42`:\n"
    )
    print("| app | µs/request | more than Proxy (µs) |")
    print("|:---|---:|---:|")
    print(_row("plain app + `Proxy`", samples["Proxy"], None))
    print(_row(f"{HOOKS} hooks, the hook on `{base_path}`", samples["hook"], samples["Proxy"]))

    if apps.upstream is None:
        return
    base_path = resource(HTTP_HOOK)
    proxied = App(controllers=[*apps.controllers, Proxy(base_path, apps.upstream + base_path)])
    stack.enter_context(TestClient(proxied))
    through = dict(build_environ("GET", f"{base_path}/42"))
    assert _answer(hooked, through)[0] == _answer(proxied, through)[0] == "200 OK"
    upstream_rounds, upstream_calls = max(rounds // 3, 4), 100 if quick else 200
    variants = [("Proxy", proxied, through), ("hook", hooked, through)]
    samples = interleaved(variants, upstream_rounds, upstream_calls, wall=True)
    print(
        f"\nThe same against the gunicorn upstream on 127.0.0.1 ({upstream_rounds} rounds x "
        f"{upstream_calls} requests, wall time),\n`GET {base_path}/42`:\n"
    )
    print("| app | µs/request | more than Proxy (µs) |")
    print("|:---|---:|---:|")
    print(_row("plain app + `Proxy`", samples["Proxy"], None))
    print(_row(f"{HOOKS} hooks, the hook on `{base_path}`", samples["hook"], samples["Proxy"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hooks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run (about 10 s)")
    parser.add_argument("--rounds", type=int, help="rounds (default 40; 10 with --quick)")
    parser.add_argument("--no-upstream", action="store_true", help="skip the gunicorn upstream")
    args = parser.parse_args(argv)
    quick = args.quick
    rounds = args.rounds or (10 if quick else 40)
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"$ python -m bench.hooks {shown}".rstrip())
    print(f"\nPython {sys.version.split()[0]}, {HOOKS} route hooks\n")
    with ExitStack() as stack:
        upstream = None if args.no_upstream else stack.enter_context(echo_upstream())
        apps = build(stack, upstream)
        gc.collect()
        gc.freeze()
        no_match(apps, rounds, 1000 if quick else 2000)
        matching(apps, *((20_000, 5) if quick else (100_000, 7)))
        end_to_end(stack, apps, rounds, 300 if quick else 1000, quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
