"""The workflow graph and its walker, without HTTP (the state machine knows nothing of IO).

:func:`workflowhttp.workflow.walk` runs on any object with the event's slots, so these tests
drive it with a tiny stand-in and hand-made listener tables.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import workflowhttp
from workflowhttp import (
    AccessDenied,
    ConfigurationError,
    HTTPError,
    NotFound,
    WorkflowError,
    WorkflowStalled,
)
from workflowhttp.workflow import ALLOWED, STATES, WorkflowLoop, draw, walk

# DESIGN.md §2, copied by hand: state → allowed next states.
DESIGN_TABLE: dict[str, set[str]] = {
    "request": {"route", "access_denied", "response"},
    "route": {"auth", "route_not_found", "method_not_allowed", "response"},
    "route_not_found": {"response"},
    "method_not_allowed": {"response"},
    "auth": {"resolve_parameters", "access_denied", "response"},
    "resolve_parameters": {"controller", "parameters_failed", "access_denied", "response"},
    "controller": {"response", "access_denied", "controller_error"},
    "access_denied": {"response"},
    "parameters_failed": {"response"},
    "controller_error": {"response"},
    "response": set(),
}
ERROR_SOURCES = ["request", "route", "auth", "resolve_parameters", "controller"]
FAILURE_STATES = [
    "route_not_found",
    "method_not_allowed",
    "access_denied",
    "parameters_failed",
    "controller_error",
]
# The happy path: every move a default request makes.
HAPPY_PATH = ["request", "route", "auth", "resolve_parameters", "controller", "response"]


class Stub:
    """The slots walk() needs, plus a log of what the listeners saw."""

    __slots__ = ("_next", "_stopped", "error", "error_state", "seen", "state")

    def __init__(self) -> None:
        self.state = ""
        self.error: BaseException | None = None
        self.error_state: str | None = None
        self._next: str | None = None
        self._stopped = False
        self.seen: list[Any] = []


Listener = Callable[[Any], Any]


def goto(target: str) -> Listener:
    def listener(event: Any) -> None:
        event._next = target

    return listener


def record(label: str) -> Listener:
    def listener(event: Any) -> None:
        event.seen.append((event.state, label))

    return listener


def raising(error: BaseException) -> Listener:
    def listener(event: Any) -> None:
        raise error

    return listener


def table(**extra: tuple[Listener, ...]) -> dict[str, tuple[Listener, ...]]:
    """The happy path's moves as listeners, with ``extra`` listeners run before them."""
    moves = dict(itertools.pairwise(HAPPY_PATH))
    listeners: dict[str, tuple[Listener, ...]] = {}
    for state in STATES:
        default = (goto(moves[state]),) if state in moves else ()
        if state in FAILURE_STATES:
            default = (goto("response"),)
        listeners[state] = (*extra.get(state, ()), *default)
    return listeners


def reach(state: str) -> dict[str, tuple[Listener, ...]]:
    """A table that walks to ``state`` (a failure state: by a detour) and then on to response."""
    listeners = table()
    source = {
        "route_not_found": "route",
        "method_not_allowed": "route",
        "access_denied": "auth",
        "parameters_failed": "resolve_parameters",
        "controller_error": "controller",
    }.get(state)
    if source is not None:
        listeners[source] = (goto(state),)
    return listeners


def states_seen(event: Stub) -> list[str]:
    return [state for state, label in event.seen if label == "enter"]


def entering() -> dict[str, tuple[Listener, ...]]:
    return {state: (record("enter"),) for state in STATES}


def merge(*tables: dict[str, tuple[Listener, ...]]) -> dict[str, tuple[Listener, ...]]:
    merged: dict[str, tuple[Listener, ...]] = {state: () for state in STATES}
    for one in tables:
        for state, listeners in one.items():
            merged[state] = (*merged[state], *listeners)
    return merged


# -- the graph -------------------------------------------------------------------------------


def test_states_are_the_design_states():
    assert set(STATES) == set(DESIGN_TABLE)
    assert STATES[0] == "request"


@pytest.mark.parametrize("state", list(DESIGN_TABLE), ids=list(DESIGN_TABLE))
def test_allowed_matches_the_design_table(state):
    assert set(ALLOWED[state]) == DESIGN_TABLE[state]


def test_allowed_has_no_extra_states():
    assert set(ALLOWED) == set(DESIGN_TABLE)


@pytest.mark.parametrize("state", [s for s in DESIGN_TABLE if s != "response"])
def test_every_non_terminal_state_may_reach_response(state):
    assert "response" in ALLOWED[state]


def test_response_is_terminal():
    assert not ALLOWED["response"]


def test_graph_is_acyclic():
    def visit(state: str, path: tuple[str, ...]) -> None:
        assert state not in path, f"cycle: {' → '.join((*path, state))}"
        for target in ALLOWED[state]:
            visit(target, (*path, state))

    visit("request", ())


def test_draw_returns_mermaid_text_with_every_state():
    text = draw()
    assert isinstance(text, str)
    assert "stateDiagram" in text
    for state in DESIGN_TABLE:
        assert re.search(rf"\b{state}\b", text), state


def test_draw_shows_the_edges_of_the_table():
    text = draw()
    assert re.search(r"request --> route\b", text)
    assert re.search(r"controller --> controller_error\b", text)


def test_only_the_workflow_module_imports_transitions():
    package = Path(workflowhttp.__file__).parent
    importing = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if re.search(r"^\s*(from|import)\s+transitions\b", path.read_text(), re.MULTILINE)
    )
    assert importing == ["workflow.py"]


def test_workflow_errors_are_workflow_errors():
    assert issubclass(WorkflowLoop, WorkflowError)
    assert issubclass(WorkflowStalled, WorkflowError)
    assert not issubclass(WorkflowError, HTTPError)


# -- walking ----------------------------------------------------------------------------------


def test_walk_visits_the_states_in_order():
    event = Stub()
    walk(event, merge(entering(), table()), max_hops=32)
    assert states_seen(event) == HAPPY_PATH
    assert event.state == "response"


def test_walk_runs_the_listeners_of_a_state_in_table_order():
    event = Stub()
    listeners = table(auth=(record("first"), record("second"), record("third")))
    walk(event, listeners, max_hops=32)
    assert event.seen == [("auth", "first"), ("auth", "second"), ("auth", "third")]


def test_walk_follows_the_scheduled_next_state():
    event = Stub()
    walk(event, merge(entering(), reach("route_not_found")), max_hops=32)
    assert states_seen(event) == ["request", "route", "route_not_found", "response"]


def test_walk_runs_every_listener_of_response_then_returns():
    event = Stub()
    walk(event, table(response=(record("a"), record("b"))), max_hops=32)
    assert event.seen == [("response", "a"), ("response", "b")]


def test_walk_resets_next_on_entering_a_state():
    seen_next: list[str | None] = []

    def look(event: Any) -> None:
        seen_next.append(event._next)

    event = Stub()
    walk(event, table(route=(look,), auth=(look,)), max_hops=32)
    assert seen_next == [None, None]


def test_stop_propagation_skips_the_rest_of_the_state_only():
    def schedule_and_stop(event: Any) -> None:
        event._next = "route"
        event._stopped = True

    def stopped_flag(event: Any) -> None:
        event.seen.append((event.state, f"stopped={event._stopped}"))

    event = Stub()
    listeners = table(route=(stopped_flag,))
    listeners["request"] = (schedule_and_stop, record("skipped"), goto("response"))
    walk(event, listeners, max_hops=32)
    assert ("request", "skipped") not in event.seen
    assert ("route", "stopped=False") in event.seen
    assert event.state == "response"


def test_stop_propagation_keeps_the_move_scheduled_before_it():
    def stop(event: Any) -> None:
        event._stopped = True

    event = Stub()
    listeners = merge(entering(), table())
    listeners["auth"] = (record("enter"), goto("access_denied"), stop, goto("resolve_parameters"))
    walk(event, listeners, max_hops=32)
    assert states_seen(event) == ["request", "route", "auth", "access_denied", "response"]


@pytest.mark.parametrize("state", [s for s in DESIGN_TABLE if s != "response"])
def test_a_state_whose_listeners_schedule_nothing_stalls(state):
    event = Stub()
    listeners = reach(state)
    listeners[state] = ()
    with pytest.raises(WorkflowStalled, match=re.escape(f"workflow stalled in state '{state}'")):
        walk(event, listeners, max_hops=32)
    assert event.state == state


def test_a_stall_after_stop_propagation_names_the_state():
    def stop(event: Any) -> None:
        event._stopped = True

    event = Stub()
    with pytest.raises(WorkflowStalled, match="workflow stalled in state 'auth'"):
        walk(event, table(auth=(stop,)), max_hops=32)


def test_walk_allows_exactly_max_hops_moves():
    event = Stub()
    walk(event, table(), max_hops=len(HAPPY_PATH) - 1)
    assert event.state == "response"


def test_one_move_more_than_max_hops_is_a_loop():
    event = Stub()
    with pytest.raises(WorkflowLoop, match=r"more than 4 moves"):
        walk(event, table(), max_hops=len(HAPPY_PATH) - 2)


@pytest.mark.parametrize("max_hops", [1, 2, 7])
def test_a_cycle_is_stopped_after_max_hops(max_hops):
    # next() forbids cycles; the walker guards against them all the same.
    entered: list[str] = []

    def back_to_request(event: Any) -> None:
        entered.append(event.state)
        event._next = "route" if event.state == "request" else "request"

    event = Stub()
    listeners = {state: (back_to_request,) for state in STATES}
    with pytest.raises(WorkflowLoop, match=rf"more than {max_hops} moves"):
        walk(event, listeners, max_hops=max_hops)
    assert len(entered) == max_hops + 1


@pytest.mark.parametrize("state", ERROR_SOURCES)
def test_an_exception_before_response_routes_to_controller_error(state):
    error = ValueError("boom")
    event = Stub()
    listeners = merge(entering(), table(**{state: (raising(error), record("skipped"))}))
    walk(event, listeners, max_hops=32)
    path = HAPPY_PATH[: HAPPY_PATH.index(state) + 1]
    assert states_seen(event) == [*path, "controller_error", "response"]
    assert event.error is error
    assert event.error_state == state
    assert (state, "skipped") not in event.seen


@pytest.mark.parametrize("state", ERROR_SOURCES)
@pytest.mark.parametrize(
    "error", [AccessDenied(), AccessDenied("keep out")], ids=["default", "message"]
)
def test_access_denied_raised_before_response_routes_to_access_denied(state, error):
    event = Stub()
    listeners = merge(entering(), table(**{state: (raising(error),)}))
    walk(event, listeners, max_hops=32)
    path = HAPPY_PATH[: HAPPY_PATH.index(state) + 1]
    assert states_seen(event) == [*path, "access_denied", "response"]
    assert event.error is error


@pytest.mark.parametrize("state", ERROR_SOURCES)
def test_an_http_error_routes_to_controller_error_with_the_error(state):
    error = NotFound("no such thing")
    event = Stub()
    walk(event, merge(entering(), table(**{state: (raising(error),)})), max_hops=32)
    assert states_seen(event)[-2:] == ["controller_error", "response"]
    assert event.error is error


def test_an_exception_replaces_a_move_scheduled_before_it():
    def schedule_then_fail(event: Any) -> None:
        event._next = "response"
        raise RuntimeError("late")

    event = Stub()
    walk(event, merge(entering(), table(auth=(schedule_then_fail,))), max_hops=32)
    assert states_seen(event)[-2:] == ["controller_error", "response"]


@pytest.mark.parametrize("state", FAILURE_STATES)
@pytest.mark.parametrize(
    "error",
    [ValueError("boom"), AccessDenied("no"), NotFound()],
    ids=["ValueError", "AccessDenied", "NotFound"],
)
def test_an_exception_in_a_failure_state_propagates(state, error):
    event = Stub()
    listeners = reach(state)
    listeners[state] = (raising(error), goto("response"))
    with pytest.raises(type(error)) as raised:
        walk(event, listeners, max_hops=32)
    assert raised.value is error
    assert event.state == state


@pytest.mark.parametrize(
    "error",
    [ValueError("boom"), AccessDenied("no"), NotFound()],
    ids=["ValueError", "AccessDenied", "NotFound"],
)
def test_an_exception_in_response_propagates(error):
    event = Stub()
    with pytest.raises(type(error)) as raised:
        walk(event, table(response=(raising(error),)), max_hops=32)
    assert raised.value is error
    assert event.state == "response"


@pytest.mark.parametrize(
    "error_class", [KeyboardInterrupt, SystemExit, GeneratorExit], ids=lambda c: c.__name__
)
@pytest.mark.parametrize("state", [*ERROR_SOURCES, "controller_error", "response"])
def test_base_exceptions_are_never_swallowed(error_class, state):
    error = error_class()
    event = Stub()
    listeners = table(**{state: (raising(error),)})
    if state == "controller_error":
        listeners = reach(state)
        listeners[state] = (raising(error),)
    with pytest.raises(error_class) as raised:
        walk(event, listeners, max_hops=32)
    assert raised.value is error
    assert event.state == state
    assert event.error is None


# -- more than one workflow, one engine ------------------------------------------------------


def test_the_proxy_workflow_is_declared_with_the_same_engine():
    from workflowhttp.workflow import PROXY_WORKFLOW, WORKFLOWS, proxy_workflow

    assert set(WORKFLOWS) == {"http", "proxy"}
    assert PROXY_WORKFLOW.states == (
        "transaction_started",
        "filter_request",
        "forward",
        "upstream_error",
        "filter_response",
        "transaction_ended",
    )
    assert PROXY_WORKFLOW.allowed["filter_request"] == {"forward", "filter_response"}
    assert PROXY_WORKFLOW.allowed["transaction_ended"] == frozenset()
    assert repr(proxy_workflow.on_forward) == "proxy_workflow.on_forward"
    text = draw(workflow="proxy")
    assert "transaction_started --> filter_request: next" in text
    assert "filter_request --> transaction_ended: error" in text


def test_walk_takes_the_workflow_to_walk():
    from workflowhttp.workflow import PROXY_WORKFLOW

    seen: list[str] = []

    def move(target):
        def listener(event):
            seen.append(event.state)
            if target:
                event._next = target

        return (listener,)

    listeners = {
        "transaction_started": move("filter_request"),
        "filter_request": move("filter_response"),  # forged: forward is skipped
        "forward": move("filter_response"),
        "upstream_error": move("filter_response"),
        "filter_response": move("transaction_ended"),
        "transaction_ended": move(None),
    }
    event = Stub()
    walk(event, listeners, 32, workflow=PROXY_WORKFLOW)
    assert seen == ["transaction_started", "filter_request", "filter_response", "transaction_ended"]


def test_an_exception_in_the_proxy_workflow_ends_the_transaction():
    from workflowhttp.workflow import PROXY_WORKFLOW

    seen: list[str] = []

    def boom(event):
        raise ValueError("no")

    listeners = {state: () for state in PROXY_WORKFLOW.states}
    listeners["transaction_started"] = (boom,)
    listeners["transaction_ended"] = (lambda event: seen.append(event.state),)
    event = Stub()
    walk(event, listeners, 32, workflow=PROXY_WORKFLOW)
    assert seen == ["transaction_ended"]
    assert isinstance(event.error, ValueError)
    assert event.error_state == "transaction_started"


def test_a_bare_app_listen_says_the_state_goes_first():
    # Fails on the old code: "unknown workflow state <function ...>".
    app = workflowhttp.App()
    with pytest.raises(ConfigurationError, match=r"state first.*not a bare @app.listen"):

        @app.listen
        def oops(event): ...
