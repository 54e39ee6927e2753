"""The request workflow: its states, its graph, and the walker that moves a request through it.

Every request starts in ``request`` and walks until it reaches ``response``::

    request → route → auth → resolve_parameters → controller → response
                 ↘ route_not_found / method_not_allowed     ↘ access_denied / parameters_failed /
                                                              controller_error → response

The ordering contract, stated once:

* **States and legal moves.** The graph below (``_GRAPH``) is declared once with the
  ``transitions`` package, which also draws it. At import it is compiled into plain tables
  (:data:`ALLOWED`, :data:`ERROR_ROUTES`); no ``transitions`` object exists per request.
  ``event.next(state)`` checks the target against :data:`ALLOWED` at the call site and raises
  :class:`~workflowhttp.errors.IllegalTransition` naming both states. ``send()`` schedules
  ``response``, which every non-terminal state may reach.
* **Listener order.** The listeners of a state run by ascending priority; equal priorities run
  in registration order. Users default to 0, the kernel's own listeners sit at 100, response
  rendering at -100 and the route fallback at 1000. ``stop_propagation()`` skips the rest of the
  current state's listeners only; a scheduled move still happens. The last valid ``next()``
  within a state wins. The kernel's listeners only act when nothing is scheduled yet.
* **Failure.** An exception raised by a listener in ``request``, ``route``, ``auth``,
  ``resolve_parameters`` or ``controller`` moves the request to ``controller_error`` with
  ``event.error`` set (``AccessDenied`` goes to ``access_denied`` instead): this error route
  exists from each of those states beside the edges of the table. An exception in a failure
  state or in ``response`` propagates out of :func:`walk`, and so do a stall (a state whose
  listeners scheduled nothing: :class:`~workflowhttp.errors.WorkflowStalled`) and a loop (more
  than ``max_hops`` moves: :class:`WorkflowLoop`); the app answers those with its last-resort
  500. ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` are not ``Exception``
  subclasses and are never caught.

This module knows nothing of HTTP: :func:`walk` runs on any object with the event's slots.
It is the only module that imports ``transitions``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from time import perf_counter
from typing import Any, Protocol

from transitions import Machine

from .errors import AccessDenied, ConfigurationError, WorkflowError, WorkflowStalled

__all__ = [
    "ALLOWED",
    "ERROR_ROUTES",
    "FAILURE_STATES",
    "STATES",
    "ListenerToken",
    "WorkflowLoop",
    "draw",
    "http_workflow",
    "walk",
]

REQUEST = "request"
ROUTE = "route"
ROUTE_NOT_FOUND = "route_not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
AUTH = "auth"
RESOLVE_PARAMETERS = "resolve_parameters"
CONTROLLER = "controller"
ACCESS_DENIED = "access_denied"
PARAMETERS_FAILED = "parameters_failed"
CONTROLLER_ERROR = "controller_error"
RESPONSE = "response"

# The graph of DESIGN.md §2: state → the states its listeners may schedule with next().
# One addition: ``request → access_denied``, so a listener or a global middleware that refuses
# a request before routing (an IP block list, a missing API key) says so with the same
# ``event.access_denied()`` as everywhere else, instead of an IllegalTransition (a 500).
_GRAPH: dict[str, tuple[str, ...]] = {
    REQUEST: (ROUTE, ACCESS_DENIED, RESPONSE),
    ROUTE: (AUTH, ROUTE_NOT_FOUND, METHOD_NOT_ALLOWED, RESPONSE),
    ROUTE_NOT_FOUND: (RESPONSE,),
    METHOD_NOT_ALLOWED: (RESPONSE,),
    AUTH: (RESOLVE_PARAMETERS, ACCESS_DENIED, RESPONSE),
    RESOLVE_PARAMETERS: (CONTROLLER, PARAMETERS_FAILED, ACCESS_DENIED, RESPONSE),
    CONTROLLER: (RESPONSE, ACCESS_DENIED, CONTROLLER_ERROR),
    ACCESS_DENIED: (RESPONSE,),
    PARAMETERS_FAILED: (RESPONSE,),
    CONTROLLER_ERROR: (RESPONSE,),
    RESPONSE: (),
}
# States whose listeners' exceptions are routed (drawn as the "error" trigger).
_ERROR_SOURCES = (REQUEST, ROUTE, AUTH, RESOLVE_PARAMETERS, CONTROLLER)


def _declare(machine_class: type[Any] = Machine, **options: Any) -> Any:
    """Declare the graph with ``transitions``: ``next`` edges, plus the ``error`` routes."""
    moves = [
        {"trigger": "next", "source": source, "dest": dest}
        for source, targets in _GRAPH.items()
        for dest in targets
    ]
    for source in _ERROR_SOURCES:
        for dest in (CONTROLLER_ERROR, ACCESS_DENIED):
            moves.append({"trigger": "error", "source": source, "dest": dest})
    states = [{"name": name, "final": name == RESPONSE} for name in _GRAPH]
    options.setdefault("model", None)
    return machine_class(
        states=states,
        transitions=moves,
        initial=REQUEST,
        auto_transitions=False,
        **options,
    )


def _compile(machine: Any) -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    """Compile the declared machine into plain tables, validating every edge."""
    known = set(machine.states)
    tables: dict[str, dict[str, set[str]]] = {"next": {}, "error": {}}
    for trigger, table in tables.items():
        for source, transitions in machine.events[trigger].transitions.items():
            for transition in transitions:
                if source not in known or transition.dest not in known:
                    raise ConfigurationError(f"workflow edge {source} → {transition.dest}")
                table.setdefault(source, set()).add(transition.dest)
    allowed = {state: frozenset(tables["next"].get(state, ())) for state in machine.states}
    errors = {state: frozenset(targets) for state, targets in tables["error"].items()}
    return allowed, errors


STATES: tuple[str, ...] = tuple(_GRAPH)
FAILURE_STATES = frozenset(
    {ROUTE_NOT_FOUND, METHOD_NOT_ALLOWED, ACCESS_DENIED, PARAMETERS_FAILED, CONTROLLER_ERROR}
)
ALLOWED, ERROR_ROUTES = _compile(_declare())


def draw(engine: str = "mermaid") -> Any:
    """Return the state diagram: Mermaid text, or a graphviz graph with ``engine="graphviz"``."""
    from transitions.extensions import GraphMachine

    machine = _declare(
        GraphMachine, model="self", graph_engine=engine, title="workflowhttp request workflow"
    )
    graph = machine.get_graph()
    return graph.draw(None) if engine == "mermaid" else graph


class WorkflowLoop(WorkflowError):
    """A request made more state moves than ``Limits.max_hops`` allows."""


class ListenerToken:
    """Names the event of one state, as in ``http_workflow.on_auth``."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"http_workflow.on_{self.state}"


class _HttpWorkflow:
    """The tokens of the workflow's events: ``http_workflow.on_<state>`` for every state."""

    states = STATES

    def __init__(self) -> None:
        for state in STATES:
            setattr(self, f"on_{state}", ListenerToken(state))

    def __getattr__(self, name: str) -> ListenerToken:
        # Only reached for unknown names: the known tokens are instance attributes.
        raise AttributeError(f"http_workflow has no event {name!r}; states are {STATES}")


http_workflow: Any = _HttpWorkflow()


def state_name(token: ListenerToken | str) -> str:
    """Return the state a token or state name stands for, or raise ``ConfigurationError``."""
    state = token.state if isinstance(token, ListenerToken) else token
    if state not in ALLOWED:
        raise ConfigurationError(f"unknown workflow state {state!r}; states are {STATES}")
    return state


class Walkable(Protocol):
    """What :func:`walk` needs of an event."""

    state: str
    error: BaseException | None
    error_state: str | None
    _next: str | None
    _stopped: bool


def walk(
    event: Walkable,
    listeners: Mapping[str, tuple[Callable[[Any], Any], ...]],
    max_hops: int,
    trace: list[Any] | None = None,
) -> None:
    """Walk ``event`` from ``request`` to the end of ``response``.

    ``trace``, when given, receives the state's name and ``perf_counter()`` on entering each
    state, and ``(listener, error)`` when a listener raises (the event stream's record of the
    request; flat, so recording allocates nothing).

    Raises:
        WorkflowStalled: a state's listeners scheduled no next state.
        WorkflowLoop: more than ``max_hops`` moves.
        Exception: whatever a listener of a failure state or of ``response`` raised.
    """
    state = REQUEST
    hops = 0
    listener = None
    while True:
        event.state = state
        event._next = None
        event._stopped = False
        if trace is not None:
            trace += (state, perf_counter())
        try:
            for listener in listeners[state]:
                listener(event)
                if event._stopped:
                    break
        except Exception as ex:
            if trace is not None:
                trace.append((listener, ex))
            if state not in ERROR_ROUTES:
                raise
            event.error = ex
            event.error_state = state
            event._next = ACCESS_DENIED if isinstance(ex, AccessDenied) else CONTROLLER_ERROR
        if state == RESPONSE:
            return
        target = event._next
        if target is None:
            raise WorkflowStalled(f"workflow stalled in state '{state}'")
        hops += 1
        if hops > max_hops:
            raise WorkflowLoop(f"workflow loop: more than {max_hops} moves, last in '{state}'")
        state = target
