"""What the event stream costs a request, counted (issue 10, item 18).

Timings are noisy; these tests count the work instead: the clock readings a request makes
(``perf_counter()``, the stream's and the walker's) and what is recorded on the request's
own thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import workflowhttp.stream as stream_module
import workflowhttp.workflow as workflow_module
from workflowhttp import App, HttpEvent, http
from workflowhttp.stream import RequestFinished, StateEntered, Stream, StreamEvent
from workflowhttp.testing import TestClient

DEADLINE = 10.0  # seconds a flush may take at most


class Sold(StreamEvent, frozen=True, kw_only=True):
    """A user event about one request."""

    request_id: str
    title: str


class Restocked(StreamEvent, frozen=True, kw_only=True):
    title: str


class Keeper:
    """Keeps what it is given; ``events`` is set per test (``None``: every event)."""

    events: tuple[type, ...] | None = None

    def __init__(self, book: list[Keeper], events: tuple[type, ...] | None) -> None:
        self.events = events
        self.received: list[StreamEvent] = []
        self.thread = threading.current_thread().name
        book.append(self)

    def process(self, event: StreamEvent) -> None:
        self.received.append(event)

    def shutdown(self) -> None:
        pass


@http.GET("/sell")
def sell(event: HttpEvent) -> str:
    stream = event.app.stream
    assert stream is not None and event.request_id is not None
    stream.send(Sold(request_id=event.request_id, title="dune"), key=event.request_id)
    return "sold"


@pytest.fixture
def clock_readings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count the ``perf_counter()`` calls of the stream and of the walker."""
    readings: list[str] = []
    real = stream_module.perf_counter

    def counted(where: str) -> Callable[[], float]:
        def perf_counter() -> float:
            readings.append(where)
            return real()

        return perf_counter

    monkeypatch.setattr(stream_module, "perf_counter", counted("stream"))
    monkeypatch.setattr(workflow_module, "perf_counter", counted("walker"))
    return readings


@pytest.fixture
def kept() -> Iterator[Callable[..., tuple[TestClient, Stream, list[Keeper]]]]:
    made: list[Stream] = []

    def make(events: tuple[type, ...] | None, shards: int = 2) -> Any:
        book: list[Keeper] = []
        stream = Stream(lambda: Keeper(book, events), shards=shards)
        made.append(stream)
        client = TestClient(App(controllers=[sell], stream=stream))
        client.get("/sell")  # starts the shards; each says what its processor wants
        assert stream.flush(timeout=DEADLINE)
        return client, stream, book

    yield make
    for stream in made:
        stream.shutdown()


@pytest.mark.parametrize(
    "events",
    [(), (Sold,), (Sold, Restocked)],
    ids=["nothing", "one-own-event", "two-own-events"],
)
def test_a_processor_of_no_framework_event_costs_a_request_no_clock_reading(
    kept: Callable[..., tuple[TestClient, Stream, list[Keeper]]],
    clock_readings: list[str],
    events: tuple[type, ...],
) -> None:
    """Before: every request recorded its whole trail (eight clock readings for GET /sell)
    for a processor that wanted none of it. The events it wants still reach it."""
    client, stream, book = kept(events)
    clock_readings.clear()
    ids = [client.get("/sell").headers["X-Request-ID"] for _ in range(20)]
    assert clock_readings == []
    assert stream.flush(timeout=DEADLINE)
    received = [event for keeper in book for event in keeper.received]
    assert all(isinstance(event, Sold) for event in received)
    sold = {event.request_id for event in received if isinstance(event, Sold)}
    assert sold >= set(ids) if Sold in events else sold == set()


@pytest.mark.parametrize(
    "events",
    [None, (RequestFinished,), (StateEntered,), (StreamEvent,)],
    ids=["every-event", "RequestFinished", "StateEntered", "StreamEvent"],
)
def test_a_processor_of_framework_events_gets_the_clock_readings_it_needs(
    kept: Callable[..., tuple[TestClient, Stream, list[Keeper]]],
    clock_readings: list[str],
    events: tuple[type, ...] | None,
) -> None:
    """The request's thread reads the clock once when it starts, once per state entered and
    once when it ends, nothing more; the rest is computed in the shard threads."""
    client, stream, book = kept(events)
    clock_readings.clear()
    client.get("/sell")
    states = 6  # request, route, auth, resolve_parameters, controller, response
    assert clock_readings == ["stream"] + ["walker"] * states + ["stream"]
    assert stream.flush(timeout=DEADLINE)
    finished = [e for k in book for e in k.received if isinstance(e, RequestFinished)]
    if events in (None, (RequestFinished,), (StreamEvent,)):
        assert len(finished[-1].states) == states


def test_a_stream_is_recorded_until_its_processors_say_what_they_want(
    clock_readings: list[str],
) -> None:
    """A processor is made in its shard's thread, after the first request may have begun:
    until every shard has said it wants no framework event, requests record their trail,
    so no event a processor wants can be missed."""
    release = threading.Event()
    book: list[Keeper] = []

    def slow_factory() -> Keeper:
        release.wait(DEADLINE)
        return Keeper(book, ())

    stream = Stream(slow_factory, shards=1)
    try:
        client = TestClient(App(controllers=[sell], stream=stream))
        client.get("/sell")
        assert "walker" in clock_readings  # not said yet: recorded
        release.set()
        assert stream.flush(timeout=DEADLINE)
        clock_readings.clear()
        client.get("/sell")
        assert clock_readings == []
    finally:
        release.set()
        stream.shutdown()
