"""The typed, immutable events of the stream.

The framework emits, for every request, in this order and all with the request's id as key:
:class:`RequestStarted`, one :class:`StateEntered` per state, a :class:`ListenerFailed` per
listener that raised, :class:`RequestFailed` when an exception decided the answer,
:class:`Traffic` and, always last, :class:`RequestFinished`.

Applications define their own events by subclassing :class:`StreamEvent` and send them with
``app.stream.send(event, key=...)``.

PERF: the framework's events are ``gc=False`` structs: they hold strings, numbers and (in
``RequestFinished.states``) a dict of floats, so they can never be part of a reference cycle,
and leaving them out of the cyclic garbage collector makes the nine events of a request
cheaper to build and to free. :class:`StreamEvent` itself keeps the default: your own events
may hold anything.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "HookDelivered",
    "HookQueues",
    "HooksChanged",
    "ListenerFailed",
    "RequestFailed",
    "RequestFinished",
    "RequestStarted",
    "StateEntered",
    "StreamEvent",
    "Traffic",
]


class StreamEvent(msgspec.Struct, frozen=True):
    """Base of every stream event (immutable; encodable with ``msgspec.json``).

    Fields are positional in the order declared (the framework builds them positionally,
    which is cheaper); construct your own events with keywords for clarity.
    """


class RequestStarted(StreamEvent, frozen=True, gc=False):
    request_id: str
    method: str
    path: str
    client: str | None
    time: float
    """Wall-clock time (``time.time()``) the request started."""


class StateEntered(StreamEvent, frozen=True, gc=False):
    request_id: str
    state: str
    time: float
    """Wall-clock time the state was entered."""


class ListenerFailed(StreamEvent, frozen=True, gc=False):
    request_id: str
    state: str
    listener: str
    """The qualified name of the listener that raised."""
    error: str
    """``"TypeName: message"``."""


class RequestFailed(StreamEvent, frozen=True, gc=False):
    request_id: str
    error: str
    status: int


class Traffic(StreamEvent, frozen=True, gc=False):
    request_id: str
    bytes_in: int
    """The request body's announced length (``Content-Length``, 0 when absent)."""
    bytes_out: int
    """The response body's length as sent (counted as a streamed body is sent)."""


class RequestFinished(StreamEvent, frozen=True, gc=False):
    request_id: str
    method: str
    path: str
    route: str | None
    """The matched route's name, ``None`` when no route matched."""
    status: int
    duration: float
    """Seconds from the start of the request to the end of its body."""
    states: dict[str, float]
    """Seconds spent in each state entered."""
    time: float
    """Wall-clock time the request finished."""


class HooksChanged(StreamEvent, frozen=True, gc=False):
    """A worker's index of hooks (:mod:`workflowhttp.hooks`) changed: how many of ``kind``
    (``"route"``) apply now."""

    kind: str
    count: int


class HookDelivered(StreamEvent, frozen=True, gc=False):
    """A listener hook's copy was tried: ``outcome`` is ``delivered`` (2xx or 409),
    ``retried`` (another answer, or none: ``status`` 0), ``given_up`` (a status the listener
    gives up on) or ``expired`` (older than ``queueExpireAfter``, never sent)."""

    queue: str
    outcome: str
    seconds: float
    """How long the delivery took (0 for an expired copy)."""
    status: int


class HookQueues(StreamEvent, frozen=True):
    """The listener hooks' queues and their lengths, as one worker read them."""

    lengths: dict[str, int]
