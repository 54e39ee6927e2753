"""The request trace: the path one request took through the workflow, listener by listener.

:func:`traced_app` returns a copy of an :class:`~workflowhttp.App` whose listener tables are
instrumented: a probe at the head of each state records that the state was entered, and each
listener is wrapped to record its priority, what it did and its time. The app itself is never
touched, so the trace costs nothing on the normal request path: only the copy's requests pay
for the wrappers. ``TestClient(app).trace(...)`` and ``workflowhttp trace`` use it.

What a listener did is read from the event around the call: the next state it scheduled
(``send()`` shows as ``send``), whether it stopped propagation, whether it raised (the
exception's type and message), and, in a terminal state, whether it replaced the response.
The proxy's transaction states appear too (the proxy walks ``event.app.workflow_listeners``,
which in the copy are the instrumented ones), after the ``controller`` step that ran them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from .events import Listener, Registration
from .workflow import RESPONSE, WORKFLOWS

if TYPE_CHECKING:
    from .app import App

__all__ = [
    "ListenerRun",
    "Trace",
    "TraceAnswer",
    "TraceStep",
    "listener_table",
    "traced_app",
]

BODY_HEAD = 512
"""How many bytes of the answer's body a trace keeps."""

_WORKFLOW_OF = {
    state: workflow.name for workflow in WORKFLOWS.values() for state in workflow.states
}


@dataclass(frozen=True)
class ListenerRun:
    """One listener's run in one state.

    Attributes:
        name: The listener's qualified name (``module.qualname``).
        priority: Its priority (``None`` if the app's registrations do not name it).
        microseconds: Its time, in µs.
        scheduled: The next state it scheduled, or ``None``.
        sent: Whether it answered (``send()``, or returning a response).
        stopped: Whether it stopped propagation.
        error: ``"Type: message"`` of the exception it raised, or ``None``.
        responded: Whether it set or replaced the event's response (in a terminal state).
    """

    name: str
    priority: int | None
    microseconds: float
    scheduled: str | None = None
    sent: bool = False
    stopped: bool = False
    error: str | None = None
    responded: bool = False

    @property
    def action(self) -> str:
        """What it did, in words: ``next(auth)``, ``send``, ``stop``, ``raise ...``, or ``-``."""
        parts = []
        if self.error is not None:
            parts.append(f"raise {self.error}")
        if self.sent:
            parts.append("send")
        elif self.scheduled is not None:
            parts.append(f"next({self.scheduled})")
        if self.responded and not self.sent:
            parts.append("response")
        if self.stopped:
            parts.append("stop")
        return ", ".join(parts) or "-"


@dataclass(frozen=True)
class TraceStep:
    """One state entered, with the listeners that ran there in order."""

    workflow: str
    state: str
    listeners: tuple[ListenerRun, ...]


@dataclass(frozen=True)
class TraceAnswer:
    """The answer: status, headers, the first :data:`BODY_HEAD` bytes and the body's size."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    size: int


@dataclass(frozen=True)
class Trace:
    """One request's path through the workflow, and its answer.

    Attributes:
        method: The request's method.
        path: The request's path.
        steps: Each state entered, in order (the proxy's transaction after ``controller``).
        answer: The answer.
        error: ``"Type: message"`` of the error the request ended with (a listener's
            exception, a stall, a loop), or ``None``.
    """

    method: str
    path: str
    steps: tuple[TraceStep, ...]
    answer: TraceAnswer
    error: str | None = None

    @property
    def states(self) -> tuple[str, ...]:
        """The states entered, in order."""
        return tuple(step.state for step in self.steps)

    def step(self, state: str) -> TraceStep:
        """Return the first step in ``state`` (``KeyError`` if the request never entered it)."""
        for step in self.steps:
            if step.state == state:
                return step
        raise KeyError(state)


@dataclass
class _Step:
    state: str
    runs: list[ListenerRun] = field(default_factory=list)


class Recorder:
    """What the instrumented listeners of one traced app write to."""

    def __init__(self) -> None:
        self.steps: list[_Step] = []
        self.event: Any = None  # the HTTP event of the last request

    def reset(self) -> None:
        """Forget the last request's record."""
        self.steps = []
        self.event = None

    def trace(self, method: str, path: str, answer: TraceAnswer) -> Trace:
        """Return the record of the last request as a :class:`Trace`."""
        steps = tuple(
            TraceStep(_WORKFLOW_OF[step.state], step.state, tuple(step.runs)) for step in self.steps
        )
        error = getattr(self.event, "error", None)
        return Trace(method, path, steps, answer, _describe(error) if error else None)


def _describe(error: BaseException) -> str:
    return f"{type(error).__qualname__}: {error}"


def listener_name(listener: Any) -> str:
    """Return ``module.qualname`` of a listener (its ``repr`` if it has no name)."""
    qualname = getattr(listener, "__qualname__", None)
    if qualname is None:
        return repr(listener)
    module = getattr(listener, "__module__", None)
    return f"{module}.{qualname}" if module else str(qualname)


def _registrations(app: App) -> list[Registration]:
    """The app's registrations, the kernel's included, as ``App._compile`` orders them."""
    return sorted(app._kernel + app._registrations, key=lambda r: (r.priority, r.sequence))


def listener_table(app: App, *, own: bool = False) -> dict[str, list[tuple[int | None, Listener]]]:
    """Return state → ``(priority, listener)`` in the order they run.

    ``own=True`` keeps only the app's own listeners (not the kernel's or the extensions').
    """
    priorities: dict[tuple[str, int], list[int]] = {}
    for registration in _registrations(app):
        key = (registration.state, id(registration.listener))
        priorities.setdefault(key, []).append(registration.priority)
    mine = {(r.state, id(r.listener)) for r in app._registrations}
    table: dict[str, list[tuple[int | None, Listener]]] = {}
    for state, listeners in app.workflow_listeners.items():
        rows = table[state] = []
        for function in listeners:
            key = (state, id(function))
            queue = priorities.get(key)
            priority = queue.pop(0) if queue else None
            if not own or key in mine:
                rows.append((priority, function))
    return table


def traced_app(app: App) -> tuple[App, Recorder]:
    """Return a copy of ``app`` whose listeners record what they do, and its recorder.

    The copy shares everything with ``app`` (router, container, extensions) but its listener
    tables; ``app`` itself is unchanged.
    """
    recorder = Recorder()
    instrumented: dict[str, tuple[Listener, ...]] = {}
    for state, rows in listener_table(app).items():
        instrumented[state] = (
            _probe(recorder, state),
            *(_wrap(recorder, state, priority, function) for priority, function in rows),
        )
    traced = _sharing(app)
    traced._listeners = instrumented
    return traced, recorder


class _Sharing:
    """Read every attribute an instance has not set from ``_shared_from``."""

    _shared_from: Any

    def __getattr__(self, name: str) -> Any:
        if name == "_shared_from":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self._shared_from, name)


_SHARING: dict[type[Any], type[Any]] = {}


def _sharing(app: App) -> App:
    """Return an app of ``app``'s class that reads every attribute it has not set from ``app``.

    PERF: not ``copy.copy(app)``. Copying reads ``app.__dict__``, and on CPython 3.11 that
    moves the app's attributes from inline values into a real dict for good: every later
    attribute read on ``app``'s own requests takes the slower path (about 5 % of a
    ``GET /hello``).
    """
    cls = type(app)
    sharing = _SHARING.get(cls)
    if sharing is None:
        namespace = {"__module__": cls.__module__}
        sharing = _SHARING[cls] = type(f"Traced{cls.__name__}", (_Sharing, cls), namespace)
    traced: App = object.__new__(sharing)
    traced._shared_from = app  # type: ignore[attr-defined]
    return traced


def _probe(recorder: Recorder, state: str) -> Listener:
    """A listener that records entering ``state`` (and the HTTP event, in the first state)."""
    first = state == WORKFLOWS["http"].initial

    def entered(event: Any) -> None:
        if first:
            recorder.event = event
        recorder.steps.append(_Step(state))

    return entered


def _wrap(recorder: Recorder, state: str, priority: int | None, function: Listener) -> Listener:
    """Wrap ``function`` to record its run in the current step."""
    name = listener_name(function)
    terminal = state == WORKFLOWS[_WORKFLOW_OF[state]].terminal

    def traced(event: Any) -> Any:
        step = recorder.steps[-1]  # taken now: a proxy walk inside adds steps of its own
        before_next = event._next
        before_response = getattr(event, "response", None)
        start = perf_counter_ns()
        try:
            value = function(event)
        except Exception as ex:
            micros = (perf_counter_ns() - start) / 1000
            step.runs.append(ListenerRun(name, priority, micros, error=_describe(ex)))
            raise
        micros = (perf_counter_ns() - start) / 1000
        scheduled = event._next if event._next != before_next else None
        changed = getattr(event, "response", None) is not before_response
        returned = value is not None and not terminal  # the walk sends what it returned
        sent = returned or (
            scheduled is not None
            and (scheduled == RESPONSE if hasattr(event, "result") else changed)
        )
        step.runs.append(
            ListenerRun(
                name,
                priority,
                micros,
                scheduled=RESPONSE if returned and scheduled is None else scheduled,
                sent=sent,
                stopped=bool(event._stopped),
                responded=terminal and (changed or value is not None),
            )
        )
        return value

    traced.__qualname__ = getattr(function, "__qualname__", name)
    traced.__wrapped__ = function  # type: ignore[attr-defined]
    return traced


def answer_of(status: int, headers: Iterable[tuple[str, str]], body: bytes) -> TraceAnswer:
    """Build a :class:`TraceAnswer`, keeping the body's head."""
    return TraceAnswer(status, tuple(headers), body[:BODY_HEAD], len(body))


# -- as text -----------------------------------------------------------------------------------


def escaped(text: str) -> str:
    """Return ``text`` with control and non-ASCII characters escaped (``\\n``, ``\\x1b``).

    SECURITY: a body, header or name printed to a terminal cannot emit escape sequences.
    """
    return text.encode("unicode_escape").decode("ascii")


def format_trace(trace: Trace) -> str:
    """Return the trace as a table (state, listener, priority, action, µs) and the answer."""
    rows = [("STATE", "LISTENER", "PRIORITY", "ACTION", "µs")]
    for step in trace.steps:
        state = step.state if step.workflow == "http" else f"  {step.state}"
        if not step.listeners:
            rows.append((state, "", "", "", ""))
        for index, run in enumerate(step.listeners):
            rows.append(
                (
                    state if index == 0 else "",
                    escaped(run.name),
                    "" if run.priority is None else str(run.priority),
                    escaped(run.action),
                    f"{run.microseconds:.1f}",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.rjust(width) if column == 4 else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.append("")
    lines.append(f"{trace.method} {escaped(trace.path)} → {trace.answer.status}")
    lines.extend(f"{escaped(name)}: {escaped(value)}" for name, value in trace.answer.headers)
    body = escaped(trace.answer.body.decode("utf-8", "backslashreplace"))
    more = trace.answer.size - len(trace.answer.body)
    lines.append("")
    lines.append(body + (f" … ({more} more bytes)" if more > 0 else ""))
    if trace.error is not None:
        lines.append("")
        lines.append(f"error: {escaped(trace.error)}")
    return "\n".join(lines)


def draw_listeners(app: App, workflow: str = "http") -> str:
    """Return the workflow's Mermaid diagram with the app's own listeners of each state in a
    note beside it, in the order they run, each as ``priority name``."""
    from .workflow import draw

    text = str(draw("mermaid", workflow=workflow)).rstrip("\n")
    notes = []
    table = listener_table(app, own=True)
    for state in WORKFLOWS[workflow].states:
        own = table.get(state, [])
        if not own:
            continue
        notes.append(f"  note right of {state}")
        notes.extend(f"    {priority} {escaped(listener_name(fn))}" for priority, fn in own)
        notes.append("  end note")
    return "\n".join([text, *notes])
