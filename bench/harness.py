"""Build the contenders, check their answers, then time them interleaved.

A *group* is one comparison: the frameworks answering one endpoint, or workflowhttp variants
(listeners, route counts) answering the same request. Every round gives each contender of each
group one *sample*: ``calls`` requests timed back to back with ``perf_counter_ns``. Within a
group the contenders run round-robin and the starting contender rotates each round, so machine
noise (a frequency change, a neighbour process) lands on all of them alike, and each round
yields a *paired* ratio between contenders measured seconds apart.

A request is: copy the prebuilt environ (plus a fresh ``wsgi.input`` for a body), call the app
with a no-op ``start_response``, iterate the result, close it. That harness work is included in
every contender's time, the raw floor's too.
"""

from __future__ import annotations

import gc
import importlib
import io
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from types import ModuleType
from typing import Literal
from wsgiref.types import WSGIApplication, WSGIEnvironment

from .apps import APP_KINDS, param_text, routes_app_paths, static_text
from .endpoints import ENDPOINTS, TEXT, build_environ, call, discrepancies

FRAMEWORKS = ("raw", "flask", "falcon", "workflowhttp")
SUBJECT = "workflowhttp"
ROUTE_COUNTS = (10, 100, 1000)
EXTRA_GROUPS = ("listeners", "scaling_static", "scaling_param")
GROUP_NAMES = tuple(endpoint.name for endpoint in ENDPOINTS) + EXTRA_GROUPS


def _write(data: bytes) -> None:
    pass


def _start_response(
    status: str, headers: list[tuple[str, str]], exc_info: object = None
) -> Callable[[bytes], None]:
    return _write


@dataclass
class Contender:
    """One app answering one request, and its samples (ns per request, one per round)."""

    label: str
    app: WSGIApplication
    environ: WSGIEnvironment
    request_body: bytes | None
    calls: int = 1
    samples: list[float] = field(default_factory=list)
    #: What a sample is timed with: wall time, or e.g. ``time.thread_time_ns`` (the request
    #: thread's CPU time, which another process's load on a shared machine does not count).
    clock: Callable[[], int] = time.perf_counter_ns

    def time(self, calls: int) -> int:
        """Send ``calls`` requests and return the elapsed nanoseconds.

        An app with a ``settle()`` (an event stream) is settled inside the timing: the work
        its threads do for these requests counts, and none of it spills into the next sample.
        """
        elapsed = self._time(calls)
        settle = getattr(self.app, "settle", None)
        if settle is None:
            return elapsed
        started = time.perf_counter_ns()
        settle()
        return elapsed + time.perf_counter_ns() - started

    def _time(self, calls: int) -> int:
        app = self.app
        clock = self.clock
        copy_environ = self.environ.copy
        start_response = _start_response
        body = self.request_body
        if body is None:
            started = clock()
            for _ in repeat(None, calls):
                result: Iterable[bytes] = app(copy_environ(), start_response)
                for _chunk in result:
                    pass
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            return clock() - started
        bytes_io = io.BytesIO
        started = clock()
        for _ in repeat(None, calls):
            environ = copy_environ()
            environ["wsgi.input"] = bytes_io(body)
            result = app(environ, start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return clock() - started

    def calls_per_request(self) -> tuple[int, int]:
        """Return the Python and the C function calls one request makes (``sys.setprofile``):
        a count, unlike a time, the same on a busy machine."""
        counts = {"call": 0, "c_call": 0}

        def count(frame: object, event: str, arg: object) -> None:
            if event in counts:
                counts[event] += 1

        self._time(1)  # warm: nothing made on first use is counted
        sys.setprofile(count)
        try:
            self._time(1)
        finally:
            sys.setprofile(None)
        return counts["call"], counts["c_call"]

    def calibrate(self, target_ns: int) -> float:
        """Warm up and return the estimated nanoseconds per request."""
        calls = 1
        while True:
            elapsed = self.time(calls)
            if elapsed >= target_ns:
                return elapsed / calls
            calls = max(calls * 2, int(calls * target_ns / max(elapsed, 1) * 1.1))

    @property
    def median_ns(self) -> float:
        return statistics.median(self.samples)


@dataclass
class Group:
    """One comparison, timed interleaved.

    ``kind == "frameworks"``: the same endpoint in every framework; ratios are speed ratios of
    workflowhttp against the others. ``kind == "variants"``: workflowhttp apps answering the
    same kind of request; ratios are costs relative to ``baseline`` (the first contender).
    """

    name: str
    title: str
    kind: Literal["frameworks", "variants"]
    contenders: list[Contender]
    row_titles: dict[str, str] = field(default_factory=dict)

    def contender(self, label: str) -> Contender | None:
        return next((c for c in self.contenders if c.label == label), None)

    @property
    def baseline(self) -> Contender | None:
        if self.kind == "frameworks":
            return self.contender(SUBJECT)
        return self.contenders[0] if self.contenders else None


@dataclass(frozen=True)
class Expected:
    status: int
    media_type: str | None
    body: str | None


@dataclass
class Plan:
    """The groups to time, with what went wrong while building and checking them."""

    groups: list[Group] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    discrepancies: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)


def _load(framework: str, plan: Plan) -> ModuleType | None:
    try:
        return importlib.import_module(f"bench.apps.{framework}_app")
    except Exception as ex:  # missing or half-written: note it, benchmark the others
        plan.notes.append(f"{framework}: skipped, cannot be imported ({type(ex).__name__}: {ex})")
        return None


def _build(
    label: str, factory: Callable[[], WSGIApplication], plan: Plan
) -> WSGIApplication | None:
    try:
        return factory()
    except Exception as ex:  # a broken app must not stop the other frameworks' run
        plan.notes.append(f"{label}: skipped, building the app failed: {type(ex).__name__}: {ex}")
        return None


def _checked(
    group: Group,
    label: str,
    app: WSGIApplication,
    endpoint_env: WSGIEnvironment,
    body: bytes | None,
    expected: Expected,
    plan: Plan,
) -> None:
    """Add the contender to ``group`` if its answer is the expected one."""
    try:
        answer = call(app, endpoint_env, body)
    except Exception as ex:  # report any failure as a discrepancy, keep benchmarking the rest
        problems = [f"raised {type(ex).__name__}: {ex}"]
    else:
        problems = discrepancies(answer, expected.status, expected.media_type, expected.body)
    if problems:
        plan.discrepancies.append(f"{group.title} [{label}]: " + "; ".join(problems))
        return
    group.contenders.append(Contender(label, app, endpoint_env, body))


def _framework_version(framework: str) -> str:
    if framework == "raw":
        return f"python {sys.version.split()[0]}"
    try:
        from importlib.metadata import version

        return version(framework)
    except Exception:  # not installed as a distribution, e.g. run from the source tree
        module = sys.modules.get(framework)
        return str(getattr(module, "__version__", "source tree"))


def build_plan(frameworks: Iterable[str], only: set[str] | None, extras: bool) -> Plan:
    """Import and build every app, check every answer once, and return the groups to time."""
    plan = Plan()
    wanted = only or set(GROUP_NAMES)
    apps: dict[str, dict[str, WSGIApplication]] = {}
    modules: dict[str, ModuleType] = {}
    for framework in frameworks:
        module = _load(framework, plan)
        if module is None:
            continue
        modules[framework] = module
        plan.versions[framework] = _framework_version(framework)
        built: dict[str, WSGIApplication] = {}
        for kind in APP_KINDS:
            if any(e.app_kind == kind and e.name in wanted for e in ENDPOINTS):
                app = _build(f"{framework} {kind} app", partial(module.make_app, kind), plan)
                if app is not None:
                    built[kind] = app
        apps[framework] = built

    for endpoint in ENDPOINTS:
        if endpoint.name not in wanted:
            continue
        group = Group(endpoint.name, endpoint.title, "frameworks", [])
        expected = Expected(endpoint.status, endpoint.media_type, endpoint.body)
        for framework, built in apps.items():
            if endpoint.app_kind in built:
                _checked(
                    group,
                    framework,
                    built[endpoint.app_kind],
                    endpoint.environ(),
                    endpoint.request_body,
                    expected,
                    plan,
                )
        plan.groups.append(group)

    subject = modules.get(SUBJECT)
    if extras and subject is not None:
        plan.groups += _extra_groups(subject, wanted, plan)
    return plan


def _extra_groups(module: ModuleType, wanted: set[str], plan: Plan) -> list[Group]:
    groups: list[Group] = []
    hello = next(e for e in ENDPOINTS if e.name == "hello")
    if "listeners" in wanted:
        group = Group("listeners", "workflowhttp: no-op listeners", "variants", [])
        expected = Expected(hello.status, hello.media_type, hello.body)
        variants = {
            "plain": partial(module.make_app, "main"),
            "3 listeners": module.make_listeners_app,
            "request-scoped service": module.make_scoped_service_app,
            "1 middleware": partial(module.make_middleware_app, 1),
            "5 middlewares": partial(module.make_middleware_app, 5),
            "stream, all events": partial(module.make_stream_app, every_event=True),
            "stream, RequestFinished": partial(module.make_stream_app, every_event=False),
        }
        group.row_titles = {
            "plain": hello.title,
            "3 listeners": f"{hello.title} + 3 no-op listeners",
            "request-scoped service": f"{hello.title} + a request-scoped service injected",
            "1 middleware": f"{hello.title} + 1 no-op middleware (in and out)",
            "5 middlewares": f"{hello.title} + 5 no-op middlewares (in and out)",
            "stream, all events": f"{hello.title} + stream, no-op processor, every event",
            "stream, RequestFinished": (
                f"{hello.title} + stream, no-op processor of RequestFinished"
            ),
        }
        for label, factory in variants.items():
            app = _build(f"workflowhttp {label} app", factory, plan)
            if app is not None:
                _checked(group, label, app, hello.environ(), None, expected, plan)
        groups.append(group)

    scaling = [name for name in ("scaling_static", "scaling_param") if name in wanted]
    if not scaling:
        return groups
    route_apps: dict[int, WSGIApplication] = {}
    for total in ROUTE_COUNTS:
        factory = partial(module.make_routes_app, total)
        app = _build(f"workflowhttp {total}-route app", factory, plan)
        if app is not None:
            route_apps[total] = app
    for name in scaling:
        what = "static" if name == "scaling_static" else "parametrised"
        group = Group(name, f"workflowhttp: last {what} route by route count", "variants", [])
        for total, app in route_apps.items():
            static_path, param_path = routes_app_paths(total)
            last = total // 2 - 1
            if name == "scaling_static":
                path, expected = static_path, Expected(200, TEXT, static_text(last))
            else:
                path, expected = param_path, Expected(200, TEXT, param_text(last, 42))
            label = f"{total} routes"
            group.row_titles[label] = f"GET {path}, {total} routes"
            _checked(group, label, app, build_environ("GET", path), None, expected, plan)
        groups.append(group)
    return groups


Progress = Callable[[str], None]


def run(plan: Plan, rounds: int, seconds_per_round: float, progress: Progress) -> None:
    """Calibrate every contender, then take ``rounds`` interleaved samples of each."""
    contenders = [c for group in plan.groups for c in group.contenders]
    if not contenders:
        return
    sample_ns = int(seconds_per_round * 1e9 / len(contenders))
    calibration_ns = max(5_000_000, min(sample_ns, 50_000_000))
    progress(f"calibrating {len(contenders)} contenders")
    for contender in contenders:
        per_call = contender.calibrate(calibration_ns)
        contender.calls = max(1, round(sample_ns / per_call))

    # Objects alive now (apps, routing tables, imported modules) are moved out of the
    # collector's reach so the collections inside samples cost the same for every framework.
    gc.collect()
    gc.freeze()
    try:
        for round_index in range(rounds):
            progress(f"round {round_index + 1}/{rounds}")
            for group in plan.groups:
                count = len(group.contenders)
                if not count:
                    continue
                shift = round_index % count
                for contender in group.contenders[shift:] + group.contenders[:shift]:
                    gc.collect()
                    elapsed = contender.time(contender.calls)
                    contender.samples.append(elapsed / contender.calls)
    finally:
        gc.unfreeze()
