"""The request's trail: what a request's thread records, and the typed events built from it.

Owns the trail's layout (:data:`_Trail`), the little the request's thread does with it at
the end (:func:`_free_failures`, and :func:`_trail_event_types` when it is dropped), which
event types a processor wants (:func:`_wanted`), and :class:`_Builder`, which turns a trail
into those events in the shard's thread. Plain functions and objects: no threads, no
queues; imports the stream's events and never the stream itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..middleware.runners import middleware_step
from ..numbers import parse_int
from .events import (
    ListenerFailed,
    RequestFailed,
    RequestFinished,
    RequestStarted,
    StateEntered,
    StreamEvent,
    Traffic,
)

if TYPE_CHECKING:
    from ..events import HttpEvent

# The stream's one logger, whichever of its modules logs: what users configure.
logger = logging.getLogger("workflowhttp.stream")

_Trail = list[Any]
"""A request's record, as queued: ``[request_id, started, state, entered, state, entered,
..., end]``. Each state's name is followed by the ``perf_counter()`` it was entered at and,
when a listener of that state raised, by ``(listener, exception)`` (``(name,
description)`` once :func:`_free_failures` ran); ``end`` is ``(ended, status, bytes_out,
route, method, path, client, content_length)``, plus ``error`` (the description of the
exception that decided the answer, or ``None``) when something failed."""

_FRAMEWORK_EVENTS = (
    RequestStarted,
    StateEntered,
    ListenerFailed,
    RequestFailed,
    Traffic,
    RequestFinished,
)


# -- on the request's thread -----------------------------------------------------------------


def _free_failures(trail: list[Any], event: HttpEvent) -> str | None:
    """Replace each ``(listener, exception)`` the walker put in ``trail`` by ``(name,
    description)``; return the description of ``event.error`` (what decided the answer)."""
    for index in range(2, len(trail)):
        entry = trail[index]
        if entry.__class__ is tuple:
            listener, failure = entry
            trail[index] = (_listener_name(listener, failure, event), _describe(failure))
    return None if event.error is None else _describe(event.error)


def _listener_name(listener: Any, error: BaseException, event: HttpEvent | None) -> str:
    """Return the qualified name of the listener that raised ``error``.

    The kernel runs middleware steps inside its own listeners (the incoming chains in
    ``request`` and ``auth``, the outgoing one in ``response``): for those the name is the
    step that raised, ``"Audit.incoming"``, which the middleware runner noted on the event
    (:func:`workflowhttp.middleware.runners.run_incoming`). Each failure is looked up by its own
    error, so an incoming and an outgoing step that both raised are both named.
    """
    step = middleware_step(listener)
    noted = None if event is None else event._middleware_failures
    if step and noted:
        wanted = id(error)
        for failed, name in reversed(noted):
            if failed == wanted and name.endswith(step):
                return name
    return getattr(listener, "__qualname__", None) or repr(listener)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _trail_event_types(trail: list[Any]) -> dict[str, int]:
    """Count a dropped request's events by type, as if they had all been built."""
    recorded = trail[2:-1]
    end = trail[-1]
    return {
        "RequestStarted": 1,
        "StateEntered": sum(1 for entry in recorded if entry.__class__ is str),
        "ListenerFailed": sum(1 for entry in recorded if entry.__class__ is tuple),
        "RequestFailed": int(len(end) > 8 and end[8] is not None),
        "Traffic": 1,
        "RequestFinished": 1,
    }


# -- in the shard's thread -------------------------------------------------------------------


def _wanted(processor: Any) -> tuple[type, ...] | None:
    """Return the event types ``processor`` asks for (``None``: all of them).

    Raises:
        ConfigurationError: ``events`` is not a tuple/set/frozenset of StreamEvent classes
            (a list such as ``self.events = []`` is more likely a processor's own record).
    """
    wanted = getattr(processor, "events", None)
    if wanted is None:
        return None
    if not isinstance(wanted, (tuple, set, frozenset)) or not all(
        isinstance(kind, type) and issubclass(kind, StreamEvent) for kind in wanted
    ):
        raise ConfigurationError(
            f"{type(processor).__qualname__}.events must be a tuple of StreamEvent classes "
            f"(the types it wants), not {wanted!r}"
        )
    return tuple(wanted)


def _bytes_in(content_length: str | None) -> int:
    """Return the announced body length, 0 when absent or malformed."""
    if not content_length:
        return 0
    try:
        # SECURITY: "²" passes str.isdigit() and then fails int(), and thousands of digits
        # fail int() too: the one client-number parser, never a bare int() on a header.
        return parse_int(content_length.strip(" \t"), signed=False)
    except ValueError:  # the request checks refused it, so nothing was read
        return 0


def _processor_failed(event: StreamEvent) -> None:
    logger.exception("stream processor failed on %s", type(event).__name__)


class _Builder:
    """Turns trails into the typed events one processor wants and gives them to it, in their
    documented order (in its shard).

    PERF: the flags are decided once per shard, and each event goes to the processor as it
    is built (no list of a request's events). A request that nothing failed in takes the
    fast path: its trail strictly alternates state names and times, sliced apart at C speed.
    """

    __slots__ = (
        "offset",
        "any",
        "started",
        "entered",
        "failed",
        "decided",
        "traffic",
        "finished",
    )

    def __init__(self, wanted: tuple[type, ...] | None, offset: float) -> None:
        def wants(kind: type) -> bool:
            return wanted is None or any(issubclass(kind, chosen) for chosen in wanted)

        self.offset = offset  # turns perf_counter() times into wall-clock ones
        # The module's names, looked up now: tests put spies there.
        self.started = wants(RequestStarted)
        self.entered = wants(StateEntered)
        self.failed = wants(ListenerFailed)
        self.decided = wants(RequestFailed)
        self.traffic = wants(Traffic)
        self.finished = wants(RequestFinished)
        self.any = any(wants(kind) for kind in _FRAMEWORK_EVENTS)

    def deliver(self, trail: list[Any], process: Callable[[StreamEvent], Any]) -> None:
        """Build the request's events and give each to ``process``, in their order."""
        request_id = trail[0]
        started = trail[1]
        end = trail[-1]
        if len(end) == 8:
            ended, status, bytes_out, route, method, path, client, content_length = end
            error = None
            failed = False
        else:
            ended, status, bytes_out, route, method, path, client, content_length, error = end
            failed = True
        method = method or ""  # a WSGI server may leave PATH_INFO out (the app's root)
        path = path or ""
        offset = self.offset
        if self.started:
            event: StreamEvent = RequestStarted(request_id, method, path, client, started + offset)
            try:
                process(event)
            except Exception:
                _processor_failed(event)
        last = len(trail) - 1  # the end's index: the states are in between
        spent: dict[str, float] = {}
        # A listener's failure is one more entry in the trail: then take the general path.
        # (``failed`` is decided on the request path from ``event.error``/``error_state``;
        # the parity check also catches a failure whose listener cleared both.)
        if failed or last & 1:
            spent = self._walk_trail(process, request_id, trail, last, ended)
        elif last > 2:  # names and times alternate: one loop, no lookups
            entered = self.entered
            timed = self.finished
            name = trail[2]
            since = trail[3]
            if entered:
                event = StateEntered(request_id, name, since + offset)
                try:
                    process(event)
                except Exception:
                    _processor_failed(event)
            for index in range(4, last, 2):
                entry = trail[index + 1]
                if timed:
                    spent[name] = entry - since
                name = trail[index]
                since = entry
                if entered:
                    event = StateEntered(request_id, name, entry + offset)
                    try:
                        process(event)
                    except Exception:
                        _processor_failed(event)
            if timed:
                spent[name] = ended - since
                if len(spent) * 2 < last - 2:  # a state entered twice: add its visits up
                    spent = self._walk_trail(None, request_id, trail, last, ended)
        if error is not None and self.decided:
            event = RequestFailed(request_id, error, status)
            try:
                process(event)
            except Exception:
                _processor_failed(event)
        if self.traffic:
            event = Traffic(request_id, _bytes_in(content_length), bytes_out)
            try:
                process(event)
            except Exception:
                _processor_failed(event)
        if self.finished:
            event = RequestFinished(
                request_id,
                method,
                path,
                None if route is None else route.name,
                status,
                ended - started,
                spent,
                ended + offset,
            )
            try:
                process(event)
            except Exception:
                _processor_failed(event)

    def _walk_trail(
        self,
        process: Callable[[StreamEvent], Any] | None,
        request_id: str,
        trail: list[Any],
        last: int,
        ended: float,
    ) -> dict[str, float]:
        """The general path: give ``process`` (unless ``None``) the ``StateEntered`` and
        ``ListenerFailed`` events of ``trail`` (its entries between the start and the end, at
        ``last``); return each state's seconds."""
        entered = process is not None and self.entered
        failed = process is not None and self.failed
        offset = self.offset
        spent: dict[str, float] = {}
        state = current = ""
        since = 0.0
        event: StreamEvent
        for index in range(2, last):
            entry = trail[index]
            kind = entry.__class__
            if kind is str:
                state = entry
            elif kind is float:
                if entered:
                    event = StateEntered(request_id, state, entry + offset)
                    try:
                        process(event)  # type: ignore[misc]
                    except Exception:
                        _processor_failed(event)
                if current:
                    spent[current] = spent.get(current, 0.0) + (entry - since)
                current, since = state, entry
            elif failed:
                listener, failure = entry
                if not isinstance(failure, str):  # left raw: freed on the request path only
                    listener, failure = _listener_name(listener, failure, None), _describe(failure)
                event = ListenerFailed(request_id, state, listener, failure)
                try:
                    process(event)  # type: ignore[misc]
                except Exception:
                    _processor_failed(event)
        if current:
            spent[current] = spent.get(current, 0.0) + (ended - since)
        return spent
