"""The request workflow: its states, its graph, and the walker that moves a request through it.

Every request starts in ``request`` and walks until it reaches ``response``::

    request → route → auth → resolve_parameters → controller → response
                 ↘ route_not_found / method_not_allowed     ↘ access_denied / parameters_failed /
                                                              controller_error → response

The ordering contract, stated once:

* **States and legal moves.** The graph below (``_HTTP_GRAPH``) is declared once with the
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
from typing import TYPE_CHECKING, Any, Protocol

from transitions import Machine

from .errors import AccessDenied, ConfigurationError, WorkflowLoop, WorkflowStalled

__all__ = [
    "ALLOWED",
    "ALL_STATES",
    "ERROR_ROUTES",
    "HTTP_WORKFLOW",
    "PROXY_WORKFLOW",
    "STATES",
    "WORKFLOWS",
    "ListenerToken",
    "Workflow",
    "WorkflowLoop",  # defined in errors, with the other workflow errors; imported from here too
    "draw",
    "http_workflow",
    "proxy_workflow",
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
_HTTP_GRAPH: dict[str, tuple[str, ...]] = {
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

# The proxy's transaction (DESIGN.md §7). send() in transaction_started or filter_request
# forges the answer (straight to filter_response); an exception raised by a listener ends the
# transaction (transaction_ended still runs) and is re-raised into the HTTP workflow.
TRANSACTION_STARTED = "transaction_started"
FILTER_REQUEST = "filter_request"
FORWARD = "forward"
UPSTREAM_ERROR = "upstream_error"
FILTER_RESPONSE = "filter_response"
TRANSACTION_ENDED = "transaction_ended"

_PROXY_GRAPH: dict[str, tuple[str, ...]] = {
    TRANSACTION_STARTED: (FILTER_REQUEST, FILTER_RESPONSE),
    FILTER_REQUEST: (FORWARD, FILTER_RESPONSE),
    FORWARD: (FILTER_RESPONSE, UPSTREAM_ERROR),
    UPSTREAM_ERROR: (FILTER_RESPONSE,),
    FILTER_RESPONSE: (TRANSACTION_ENDED,),
    TRANSACTION_ENDED: (),
}


class Workflow:
    """One declared graph, compiled into plain tables.

    Attributes:
        name: ``"http"`` or ``"proxy"`` (the tokens are ``<name>_workflow.on_<state>``).
        states: The state names, the initial one first and the terminal one last.
        allowed: state → the states ``next()`` may schedule from it.
        error_routes: state → the states an exception raised there may be routed to; a state
            without an entry lets the exception propagate out of :func:`walk`.
    """

    __slots__ = (
        "name",
        "graph",
        "states",
        "initial",
        "terminal",
        "error_sources",
        "error_targets",
        "allowed",
        "error_routes",
    )

    def __init__(
        self,
        name: str,
        graph: dict[str, tuple[str, ...]],
        *,
        error_sources: tuple[str, ...],
        error_targets: tuple[tuple[type[BaseException], str], ...],
    ) -> None:
        self.name = name
        self.graph = graph
        self.states: tuple[str, ...] = tuple(graph)
        self.initial = self.states[0]
        self.terminal = self.states[-1]
        self.error_sources = error_sources
        # (exception class, target) pairs, the first that matches wins.
        self.error_targets = error_targets
        self.allowed, self.error_routes = _compile(_declare(self))

    def error_target(self, error: BaseException) -> str:
        """Return the state an exception raised in an error source moves to."""
        for kind, target in self.error_targets:
            if isinstance(error, kind):
                return target
        raise error

    def __repr__(self) -> str:
        return f"<Workflow {self.name}: {' → '.join(self.states)}>"


def _declare(workflow: Workflow, machine_class: type[Any] = Machine, **options: Any) -> Any:
    """Declare the graph with ``transitions``: ``next`` edges, plus the ``error`` routes."""
    moves = [
        {"trigger": "next", "source": source, "dest": dest}
        for source, targets in workflow.graph.items()
        for dest in targets
    ]
    targets = list(dict.fromkeys(target for _, target in workflow.error_targets))
    for source in workflow.error_sources:
        for dest in targets:
            moves.append({"trigger": "error", "source": source, "dest": dest})
    states = [{"name": name, "final": name == workflow.terminal} for name in workflow.graph]
    options.setdefault("model", None)
    return machine_class(
        states=states,
        transitions=moves,
        initial=workflow.initial,
        auto_transitions=False,
        **options,
    )


def _compile(machine: Any) -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    """Compile the declared machine into plain tables, validating every edge."""
    known = set(machine.states)
    tables: dict[str, dict[str, set[str]]] = {"next": {}, "error": {}}
    for trigger, table in tables.items():
        event = machine.events.get(trigger)
        if event is None:
            continue
        for source, transitions in event.transitions.items():
            for transition in transitions:
                if source not in known or transition.dest not in known:
                    raise ConfigurationError(f"workflow edge {source} → {transition.dest}")
                table.setdefault(source, set()).add(transition.dest)
    allowed = {state: frozenset(tables["next"].get(state, ())) for state in machine.states}
    errors = {state: frozenset(targets) for state, targets in tables["error"].items()}
    return allowed, errors


HTTP_WORKFLOW = Workflow(
    "http",
    _HTTP_GRAPH,
    error_sources=(REQUEST, ROUTE, AUTH, RESOLVE_PARAMETERS, CONTROLLER),
    error_targets=((AccessDenied, ACCESS_DENIED), (Exception, CONTROLLER_ERROR)),
)
PROXY_WORKFLOW = Workflow(
    "proxy",
    _PROXY_GRAPH,
    error_sources=(TRANSACTION_STARTED, FILTER_REQUEST, FORWARD, UPSTREAM_ERROR, FILTER_RESPONSE),
    error_targets=((Exception, TRANSACTION_ENDED),),
)
WORKFLOWS: dict[str, Workflow] = {w.name: w for w in (HTTP_WORKFLOW, PROXY_WORKFLOW)}
"""Every declared workflow by name. State names are unique across them."""

STATES: tuple[str, ...] = HTTP_WORKFLOW.states
ALL_STATES: tuple[str, ...] = tuple(s for w in WORKFLOWS.values() for s in w.states)
ALLOWED = HTTP_WORKFLOW.allowed
ERROR_ROUTES = HTTP_WORKFLOW.error_routes
PROXY_ALLOWED = PROXY_WORKFLOW.allowed
_WORKFLOW_OF: dict[str, Workflow] = {s: w for w in WORKFLOWS.values() for s in w.states}
if len(_WORKFLOW_OF) != len(ALL_STATES):
    raise ConfigurationError("state names must be unique across workflows")


def draw(engine: str = "mermaid", workflow: str = "http") -> Any:
    """Return a workflow's state diagram: Mermaid text, or a graphviz graph
    (``engine="graphviz"``); ``workflow`` is ``"http"`` (default) or ``"proxy"``."""
    from transitions.extensions import GraphMachine

    try:
        declared = WORKFLOWS[workflow]
    except KeyError:
        raise ConfigurationError(
            f"unknown workflow {workflow!r}; workflows are {tuple(WORKFLOWS)}"
        ) from None
    title = (
        "workflowhttp request workflow"
        if workflow == "http"
        else (f"workflowhttp {workflow} workflow")
    )
    machine = _declare(declared, GraphMachine, model="self", graph_engine=engine, title=title)
    graph = machine.get_graph()
    return graph.draw(None) if engine == "mermaid" else graph


class ListenerToken:
    """Names the event of one state, as in ``http_workflow.on_auth``."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"{_WORKFLOW_OF[self.state].name}_workflow.on_{self.state}"


class _Tokens:
    """The tokens of a workflow's events: ``<name>_workflow.on_<state>`` for every state.

    Subclasses declare each token as an annotation, so a type checker catches a typo
    (``http_workflow.on_auht``); at import the annotations are checked against the
    workflow's states, so the two cannot drift apart.
    """

    def __init__(self, workflow: Workflow) -> None:
        self.states = workflow.states
        self._name = workflow.name
        declared = {name for name in type(self).__annotations__ if name.startswith("on_")}
        wanted = {f"on_{state}" for state in workflow.states}
        if declared != wanted:
            raise ConfigurationError(
                f"{type(self).__name__} declares {sorted(declared ^ wanted)} wrongly"
            )
        for state in workflow.states:
            setattr(self, f"on_{state}", ListenerToken(state))

    if not TYPE_CHECKING:  # at run time, a helpful error; to a type checker, no such names

        def __getattr__(self, name: str) -> ListenerToken:
            # Only reached for unknown names: the known tokens are instance attributes.
            raise AttributeError(
                f"{self._name}_workflow has no event {name!r}; states are {self.states}"
            )


class HttpWorkflowEvents(_Tokens):
    """``http_workflow``: the tokens of the request workflow's states."""

    on_request: ListenerToken
    on_route: ListenerToken
    on_route_not_found: ListenerToken
    on_method_not_allowed: ListenerToken
    on_auth: ListenerToken
    on_resolve_parameters: ListenerToken
    on_controller: ListenerToken
    on_access_denied: ListenerToken
    on_parameters_failed: ListenerToken
    on_controller_error: ListenerToken
    on_response: ListenerToken


class ProxyWorkflowEvents(_Tokens):
    """``proxy_workflow``: the tokens of the proxy transaction's states."""

    on_transaction_started: ListenerToken
    on_filter_request: ListenerToken
    on_forward: ListenerToken
    on_upstream_error: ListenerToken
    on_filter_response: ListenerToken
    on_transaction_ended: ListenerToken


http_workflow = HttpWorkflowEvents(HTTP_WORKFLOW)
proxy_workflow = ProxyWorkflowEvents(PROXY_WORKFLOW)


def state_name(token: ListenerToken | str) -> str:
    """Return the state a token or state name stands for, or raise ``ConfigurationError``."""
    state = token.state if isinstance(token, ListenerToken) else token
    if not isinstance(state, str) and callable(state):
        name = getattr(state, "__qualname__", repr(state))
        raise ConfigurationError(
            f"{name} was given where a state belongs: subscribe with "
            f"@app.listen(http_workflow.on_auth) (the state first), not a bare @app.listen"
        )
    if state not in _WORKFLOW_OF:
        raise ConfigurationError(f"unknown workflow state {state!r}; states are {ALL_STATES}")
    return state


class Walkable(Protocol):
    """What :func:`walk` needs of an event."""

    state: str
    error: BaseException | None
    error_state: str | None
    _next: str | None
    _stopped: bool

    def returned(self, listener: Any, value: Any) -> None:
        """Handle a value a listener returned (a listener's result is never ignored)."""


def walk(
    event: Walkable,
    listeners: Mapping[str, tuple[Callable[[Any], Any], ...]],
    max_hops: int,
    trace: list[Any] | None = None,
    workflow: Workflow = HTTP_WORKFLOW,
) -> None:
    """Walk ``event`` through ``workflow`` from its first state to the end of its last.

    ``trace``, when given, receives the state's name and ``perf_counter()`` on entering each
    state, and ``(listener, error)`` when a listener raises (the event stream's record of the
    request; flat, so recording allocates nothing).

    Raises:
        WorkflowStalled: a state's listeners scheduled no next state.
        WorkflowLoop: more than ``max_hops`` moves.
        Exception: whatever a listener of a state without an error route raised.
    """
    state = workflow.initial
    terminal = workflow.terminal
    error_routes = workflow.error_routes
    hops = 0
    listener = None
    while True:
        event.state = state
        event._next = None
        event._stopped = False
        if trace is not None:
            trace.append(state)  # PERF: two appends cost less than += of a pair
            trace.append(perf_counter())
        try:
            for listener in listeners[state]:
                value = listener(event)
                if value is not None:  # never ignored: see the event's returned()
                    event.returned(listener, value)
                if event._stopped:
                    break
        except Exception as ex:
            if trace is not None:
                trace.append((listener, ex))
            if state not in error_routes:
                raise
            event.error = ex
            event.error_state = state
            event._next = workflow.error_target(ex)
        if state == terminal:
            return
        target = event._next
        if target is None:
            raise WorkflowStalled(f"workflow stalled in state '{state}'")
        hops += 1
        if hops > max_hops:
            raise WorkflowLoop(f"workflow loop: more than {max_hops} moves, last in '{state}'")
        state = target
