"""The event stream: typed events of every request, user events, shards, drops, shutdown.

The contract is the docstring of ``workflowhttp/stream/__init__.py`` (and the order of a
request's events, the one of ``workflowhttp/stream/events.py``). Processing is asynchronous:
every wait below polls with a deadline, and every stream is shut down when its test ends.
"""

from __future__ import annotations

import gc
import json
import logging
import re
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import pytest

from workflowhttp import (
    App,
    ConfigurationError,
    HttpEvent,
    NotFound,
    Request,
    http,
    http_workflow,
    listener,
)
from workflowhttp.stream import (
    ListenerFailed,
    RequestFailed,
    RequestFinished,
    RequestStarted,
    StateEntered,
    Stream,
    StreamEvent,
    Traffic,
)
from workflowhttp.stream.processors import LogProcessor, MetricsProcessor, metrics_endpoint
from workflowhttp.testing import TestClient

DEADLINE = 10.0  # seconds any wait for the stream's threads may take at most
GENERATED_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]+")
HAPPY_STATES = ["request", "route", "auth", "resolve_parameters", "controller", "response"]
KINDS = {
    RequestStarted: "S",
    StateEntered: "E",
    ListenerFailed: "L",
    RequestFailed: "X",
    Traffic: "T",
    RequestFinished: "F",
}
# A request's events, as the letters above: started, states (with the failures of their
# listeners right after them), the failure that decided the answer, traffic, finished.
REQUEST_PATTERN = re.compile(r"SE[EL]*X?TF")


class Sold(StreamEvent, frozen=True, kw_only=True):
    """A user event."""

    book: str
    number: int


# -- the app -----------------------------------------------------------------------------------


@http.GET("/hello")
def hello(name: str = "world") -> str:
    return f"Hello {name}"


@http.POST("/echo")
def echo(event: HttpEvent) -> bytes:
    return event.request.get_data()


@http.GET("/boom")
def boom() -> str:
    raise RuntimeError("boom")


@http.GET("/gone")
def gone() -> str:
    raise NotFound("gone")  # raised, so with a traceback; not logged


@http.GET("/chunks")
def chunks() -> Iterator[bytes]:
    yield b"a" * 1000
    yield b"b" * 500
    yield b"c" * 24


@http.GET("/broken-stream")
def broken_stream() -> Iterator[bytes]:
    yield b"x" * 100
    raise RuntimeError("the disk went away")


@http.GET("/whoami")
def whoami(event: HttpEvent) -> dict[str, Any]:
    return {"request_id": event.request_id}


def broken_listener(event: HttpEvent) -> None:
    """An auth listener that raises on ``?break=1``."""
    if event.environ.get("QUERY_STRING") == "break=1":
        raise ValueError("bad header")


class Audit:
    @listener(http_workflow.on_auth)
    def check(self, event: HttpEvent) -> None:
        if event.environ.get("QUERY_STRING") == "audit=1":
            raise PermissionError("audit log is full")


def stall(event: HttpEvent) -> None:
    """A route listener that stops propagation and schedules nothing on ``?stall=1``."""
    if event.environ.get("QUERY_STRING") == "stall=1":
        event.stop_propagation()


def failing_response_listener(event: HttpEvent) -> None:
    if event.environ.get("QUERY_STRING") == "late=1":
        raise KeyError("late")


CONTROLLERS = [hello, echo, boom, gone, chunks, broken_stream, whoami]


def make_app(stream: Stream | None, **options: Any) -> App:
    app = App(controllers=CONTROLLERS, listeners=[Audit], stream=stream, **options)
    app.listen(http_workflow.on_auth, broken_listener)
    app.listen(http_workflow.on_route, stall)
    app.listen(http_workflow.on_response, failing_response_listener)
    return app


# -- processors and the harness ----------------------------------------------------------------


class Recorder:
    """Records every event it is given, and in which thread; counts its shutdowns."""

    def __init__(self, book: list[Recorder]) -> None:
        self.thread = threading.current_thread().name
        self.received: list[StreamEvent] = []
        self.threads: set[str] = set()
        self.shutdowns = 0
        self.after_shutdown = 0
        book.append(self)

    def process(self, event: StreamEvent) -> None:
        self.threads.add(threading.current_thread().name)
        if self.shutdowns:
            self.after_shutdown += 1
        self.received.append(event)

    def shutdown(self) -> None:
        self.shutdowns += 1


class Gated(Recorder):
    """A recorder whose first event waits for ``gate``; ``entered`` says it is waiting."""

    def __init__(self, book: list[Recorder], gate: threading.Event) -> None:
        super().__init__(book)
        self.gate = gate
        self.entered = threading.Event()

    def process(self, event: StreamEvent) -> None:
        if not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(DEADLINE), "the test never opened the gate"
        super().process(event)


class Harness:
    """Streams made by a test, and the gates their processors wait for.

    Closing opens every gate, then shuts every stream down.
    """

    def __init__(self) -> None:
        self.streams: list[Stream] = []
        self.gates: list[threading.Event] = []

    def stream(self, processor: Callable[[], Any], **options: Any) -> Stream:
        stream = Stream(processor, **options)
        self.streams.append(stream)
        return stream

    def recorded(self, **options: Any) -> tuple[Stream, list[Recorder]]:
        book: list[Recorder] = []
        return self.stream(lambda: Recorder(book), **options), book

    def gate(self) -> threading.Event:
        gate = threading.Event()
        self.gates.append(gate)
        return gate

    def close(self) -> None:
        for gate in self.gates:
            gate.set()
        for stream in self.streams:
            stream.shutdown()


@pytest.fixture
def harness() -> Iterator[Harness]:
    made = Harness()
    try:
        yield made
    finally:
        made.close()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def events_of(book: list[Recorder]) -> list[StreamEvent]:
    return [event for recorder in list(book) for event in list(recorder.received)]


def finished(book: list[Recorder]) -> list[RequestFinished]:
    return [event for event in events_of(book) if isinstance(event, RequestFinished)]


def wait_finished(book: list[Recorder], count: int) -> list[RequestFinished]:
    wait_for(lambda: len(finished(book)) >= count, f"{count} RequestFinished")
    return finished(book)


def request_events(book: list[Recorder], request_id: str) -> list[StreamEvent]:
    """The events of one request, once its RequestFinished has been processed."""
    wait_for(
        lambda: any(event.request_id == request_id for event in finished(book)),
        f"the events of {request_id}",
    )
    return [event for event in events_of(book) if getattr(event, "request_id", None) == request_id]


# -- a request's events ------------------------------------------------------------------------


def test_a_request_sends_its_events_in_order(harness: Harness) -> None:
    stream, book = harness.recorded()
    client = TestClient(make_app(stream))
    response = client.get("/hello?name=you", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    request_id = response.headers["X-Request-ID"]
    events = request_events(book, request_id)
    assert "".join(KINDS[type(event)] for event in events) == "SEEEEEETF"
    started, *entered, traffic, done = events
    assert isinstance(started, RequestStarted)
    assert (started.method, started.path, started.client) == ("GET", "/hello", "192.0.2.7")
    assert [event.state for event in entered] == HAPPY_STATES  # type: ignore[attr-defined]
    times = [started.time, *(event.time for event in entered), done.time]  # type: ignore[attr-defined]
    assert times == sorted(times)
    assert isinstance(traffic, Traffic)
    assert isinstance(done, RequestFinished)
    assert (done.method, done.path, done.route, done.status) == ("GET", "/hello", "hello", 200)
    assert list(done.states) == HAPPY_STATES
    assert all(seconds >= 0 for seconds in done.states.values())
    assert 0 <= sum(done.states.values()) <= done.duration + 1e-6


def test_events_are_immutable_and_encodable() -> None:
    event = RequestFinished(
        request_id="r-1",
        method="GET",
        path="/",
        route=None,
        status=404,
        duration=0.001,
        states={"request": 0.001},
        time=1.0,
    )
    with pytest.raises(AttributeError):
        event.status = 200  # type: ignore[misc]
    assert json.loads(msgspec.json.encode(event))["status"] == 404
    assert issubclass(Sold, StreamEvent)


def test_many_concurrent_requests_each_keep_their_order_and_id(harness: Harness) -> None:
    stream, book = harness.recorded(shards=3)
    app = make_app(stream)
    paths = ["/hello", "/boom", "/nope", "/hello?break=1", "/chunks"] * 16

    def one(path: str) -> tuple[str, str, int]:
        response = TestClient(app).get(path)
        return path, response.headers["X-Request-ID"], response.status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(one, paths, timeout=DEADLINE * 3))
    ids = [request_id for _, request_id, _ in answers]
    assert len(set(ids)) == len(paths)
    wait_finished(book, len(paths))
    by_id: dict[str, list[StreamEvent]] = {}
    owner: dict[str, Recorder] = {}
    for recorder in book:
        # A request's events reach one processor, together: a run of the pattern per request.
        letters = "".join(KINDS[type(event)] for event in recorder.received)
        assert REQUEST_PATTERN.sub("", letters) == "", letters
        for event in recorder.received:
            request_id = event.request_id  # type: ignore[attr-defined]
            by_id.setdefault(request_id, []).append(event)
            assert owner.setdefault(request_id, recorder) is recorder
    assert set(by_id) == set(ids)
    for path, request_id, status in answers:
        done = by_id[request_id][-1]
        assert isinstance(done, RequestFinished)
        assert (done.path, done.status) == (path.partition("?")[0], status)
    assert sum(len(recorder.received) > 0 for recorder in book) == 3  # spread over the shards


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "route", "failed_listener", "failure"),
    [
        ("/boom", 500, "boom", ("controller", "call_controller"), "RuntimeError: boom"),
        ("/nope", 404, None, None, None),
        ("/hello?break=1", 500, "hello", ("auth", "broken_listener"), "ValueError: bad header"),
        (
            "/hello?audit=1",
            500,
            "hello",
            ("auth", "Audit.check"),
            "PermissionError: audit log is full",
        ),
        (
            "/hello?stall=1",
            500,
            None,
            None,
            "WorkflowStalled: workflow stalled in state 'route'",
        ),
        ("/hello?late=1", 500, "hello", ("response", "failing_response_listener"), "KeyError"),
    ],
    ids=[
        "controller-error",
        "not-found",
        "listener",
        "listener-method",
        "stall",
        "response-listener",
    ],
)
def test_request_finished_is_sent_after_a_failure_too(
    harness: Harness,
    path: str,
    status: int,
    route: str | None,
    failed_listener: tuple[str, str] | None,
    failure: str | None,
) -> None:
    stream, book = harness.recorded()
    response = TestClient(make_app(stream)).get(path)
    assert response.status_code == status
    request_id = response.headers["X-Request-ID"]
    events = request_events(book, request_id)
    done = events[-1]
    assert isinstance(done, RequestFinished)
    assert (done.status, done.route) == (status, route)
    failed = [event for event in events if isinstance(event, ListenerFailed)]
    if failed_listener is None:
        assert failed == []
    else:
        (listener_failed,) = failed
        assert (listener_failed.state, listener_failed.listener) == failed_listener
        assert failure is not None and listener_failed.error.startswith(failure)
    request_failed = [event for event in events if isinstance(event, RequestFailed)]
    if failure is None:
        assert request_failed == []
    else:
        (decided,) = request_failed
        assert decided.status == status
        assert decided.error.startswith(failure)


def test_a_stream_that_fails_midway_is_finished_with_what_was_sent(harness: Harness) -> None:
    stream, book = harness.recorded()
    client = TestClient(make_app(stream))
    with pytest.raises(RuntimeError, match="the disk went away"):
        client.get("/broken-stream")
    (done,) = wait_finished(book, 1)
    assert (done.route, done.status) == ("broken_stream", 200)
    traffic = [event for event in events_of(book) if isinstance(event, Traffic)]
    assert traffic[0].bytes_out == 100


# -- traffic -----------------------------------------------------------------------------------


def test_traffic_counts_the_bytes_in_and_out(harness: Harness) -> None:
    stream, book = harness.recorded()
    client = TestClient(make_app(stream))
    answers = {
        "post": client.post("/echo", data=b"0123456789" * 30),
        "get": client.get("/hello"),
        "streamed": client.get("/chunks"),
        "head": client.head("/hello"),
        "not-found": client.get("/nope"),
    }
    traffic = {}
    for name, response in answers.items():
        request_id = response.headers["X-Request-ID"]
        (event,) = [e for e in request_events(book, request_id) if isinstance(e, Traffic)]
        traffic[name] = (event.bytes_in, event.bytes_out)
    assert traffic["post"] == (300, 300)
    assert traffic["get"] == (0, len(b"Hello world"))
    assert traffic["streamed"] == (0, 1524)
    assert answers["streamed"].data == b"a" * 1000 + b"b" * 500 + b"c" * 24
    assert traffic["head"] == (0, 0)
    assert traffic["not-found"] == (0, len(answers["not-found"].data))


# -- request ids -------------------------------------------------------------------------------


def test_every_answer_has_a_generated_request_id(harness: Harness) -> None:
    stream, _ = harness.recorded()
    client = TestClient(make_app(stream))
    ids = []
    for path in ("/hello", "/nope", "/boom", "/hello?stall=1", "/hello?late=1", "/whoami"):
        response = client.get(path, headers={"X-Request-ID": "from-the-client"})
        request_id = response.headers["X-Request-ID"]
        assert GENERATED_ID.fullmatch(request_id), (path, request_id)
        ids.append(request_id)
    assert len(set(ids)) == len(ids)


def test_the_controller_sees_the_id_that_is_returned(harness: Harness) -> None:
    stream, _ = harness.recorded()
    response = TestClient(make_app(stream)).get("/whoami")
    assert response.json == {"request_id": response.headers["X-Request-ID"]}


def test_without_a_stream_there_is_no_request_id() -> None:
    response = TestClient(make_app(None)).get("/whoami")
    assert response.json == {"request_id": None}
    assert "X-Request-ID" not in response.headers


def test_a_trusted_request_id_is_used_and_sent_with_the_events(harness: Harness) -> None:
    stream, book = harness.recorded(trust_request_id=True)
    client = TestClient(make_app(stream))
    for given in ("abc-123", "0f1e2d3c.trace:span_9", "x" * 128):
        response = client.get("/whoami", headers={"X-Request-ID": given})
        assert response.headers["X-Request-ID"] == given
        assert response.json["request_id"] == given
        assert {type(e) for e in request_events(book, given)} == {
            RequestStarted,
            StateEntered,
            Traffic,
            RequestFinished,
        }
    generated = client.get("/whoami").headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(generated)


@pytest.mark.parametrize(
    "given",
    [
        "",
        "x" * 129,
        "has space",
        "semi;colon",
        'quo"te',
        "<script>",
        "ünïcode",
        "line\r\nSet-Cookie: stolen=1",
        "tab\there",
    ],
    ids=[
        "empty",
        "too-long",
        "space",
        "semicolon",
        "quote",
        "markup",
        "non-ascii",
        "header-injection",
        "tab",
    ],
)
def test_an_insane_request_id_is_replaced_even_when_trusted(harness: Harness, given: str) -> None:
    stream, _ = harness.recorded(trust_request_id=True)
    client = TestClient(make_app(stream))
    response = client.get("/whoami", environ_overrides={"HTTP_X_REQUEST_ID": given})
    assert response.status_code == 200
    assert GENERATED_ID.fullmatch(response.headers["X-Request-ID"])
    assert response.json["request_id"] == response.headers["X-Request-ID"]
    assert "Set-Cookie" not in response.headers


# -- user events, keys and shards --------------------------------------------------------------


def test_the_factory_makes_one_processor_per_shard_in_its_thread(harness: Harness) -> None:
    stream, book = harness.recorded(shards=4)
    assert book == []  # nothing starts before the first request or event
    for number in range(40):
        assert stream.send(Sold(book="dune", number=number))
    wait_for(lambda: len(events_of(book)) == 40, "40 events")
    assert len(book) == 4
    names = sorted(recorder.thread for recorder in book)
    assert names == [f"workflowhttp-stream-{index}" for index in range(4)]
    for recorder in book:
        assert recorder.threads == {recorder.thread}
        assert len(recorder.received) == 10  # no key: round robin


def test_events_with_the_same_key_reach_the_same_processor_in_order(harness: Harness) -> None:
    stream, book = harness.recorded(shards=4)
    keys = ["dune", "emma", "ulysses", 42, ("a", "tuple")]
    for number in range(500):
        stream.send(Sold(book=str(keys[number % 5]), number=number), key=keys[number % 5])
    wait_for(lambda: len(events_of(book)) == 500, "500 events")
    for key in keys:
        holders = [r for r in book if any(e.book == str(key) for e in r.received)]  # type: ignore[attr-defined]
        assert len(holders) == 1, key
        numbers = [e.number for e in holders[0].received if e.book == str(key)]  # type: ignore[attr-defined]
        assert numbers == list(range(keys.index(key), 500, 5))


def test_only_stream_events_can_be_sent(harness: Harness) -> None:
    stream, _ = harness.recorded()
    with pytest.raises(TypeError, match="StreamEvent"):
        stream.send({"book": "dune"})  # type: ignore[arg-type]


def test_a_processor_may_choose_its_event_types(harness: Harness) -> None:
    book: list[Recorder] = []

    class OnlyFinished(Recorder):
        events = (RequestFinished, Sold)

    stream = harness.stream(lambda: OnlyFinished(book), shards=1)
    client = TestClient(make_app(stream))
    client.get("/hello")
    client.get("/boom")
    stream.send(Sold(book="dune", number=1))
    wait_for(lambda: len(events_of(book)) == 3, "3 events")
    assert [type(event) for event in events_of(book)] == [RequestFinished, RequestFinished, Sold]


def test_an_events_attribute_that_names_no_event_types_is_reported(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A processor keeping what it got in ``self.events`` must not silently receive nothing."""

    class Naive:
        def __init__(self) -> None:
            self.events: list[StreamEvent] = []

        def process(self, event: StreamEvent) -> None:
            self.events.append(event)

        def shutdown(self) -> None:
            pass

    caplog.set_level(logging.ERROR, logger="workflowhttp.stream")
    stream = harness.stream(Naive, shards=1)
    stream.send(Sold(book="dune", number=1))
    wait_for(
        lambda: any("Naive" in record.getMessage() for record in caplog.records),
        "an error naming the processor",
        timeout=2,
    )


def test_a_failing_processor_is_logged_and_keeps_its_shard(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    book: list[Recorder] = []

    class Picky(Recorder):
        def process(self, event: StreamEvent) -> None:
            if isinstance(event, Sold) and event.number == 1:
                raise ValueError("not that one")
            super().process(event)

    caplog.set_level(logging.ERROR, logger="workflowhttp.stream")
    stream = harness.stream(lambda: Picky(book), shards=1)
    for number in range(3):
        stream.send(Sold(book="dune", number=number))
    wait_for(lambda: len(events_of(book)) == 2, "the events after the failure")
    assert [e.number for e in events_of(book)] == [0, 2]  # type: ignore[attr-defined]
    assert any("Sold" in record.getMessage() for record in caplog.records)


def test_a_failing_factory_is_logged_and_requests_still_answer(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    def factory() -> Recorder:
        raise OSError("no disk")

    caplog.set_level(logging.ERROR, logger="workflowhttp.stream")
    client = TestClient(make_app(harness.stream(factory, shards=2)))
    for _ in range(4):
        assert client.get("/hello").status_code == 200
    wait_for(
        lambda: sum("factory failed" in r.getMessage() for r in caplog.records) == 2,
        "both shards to log their factory's failure",
    )


# -- never blocking: drops ---------------------------------------------------------------------


def test_a_full_queue_drops_and_counts_by_event_type(harness: Harness) -> None:
    book: list[Recorder] = []
    gate = harness.gate()
    stream = harness.stream(lambda: Gated(book, gate), shards=1, queue_size=3)
    client = TestClient(make_app(stream))
    assert client.get("/hello").status_code == 200
    wait_for(lambda: book and book[0].entered.is_set(), "the processor to hold its first event")
    # The processor is stuck on the first request: 3 more fit in the queue, 7 are dropped.
    for _ in range(10):
        assert client.get("/hello").status_code == 200
    assert stream.send(Sold(book="dune", number=1)) is False
    assert stream.send(Sold(book="dune", number=2), key="dune") is False
    assert stream.dropped == Counter(
        {
            "RequestStarted": 7,
            "StateEntered": 7 * len(HAPPY_STATES),
            "Traffic": 7,
            "RequestFinished": 7,
            "Sold": 2,
        }
    )
    gate.set()
    wait_finished(book, 4)
    assert stream.send(Sold(book="dune", number=3)) is True  # room again
    wait_for(lambda: isinstance(events_of(book)[-1], Sold), "the event sent after the drops")
    assert len(finished(book)) == 4
    assert stream.dropped["RequestFinished"] == 7


def test_failed_requests_are_counted_with_their_failures_when_dropped(harness: Harness) -> None:
    book: list[Recorder] = []
    gate = harness.gate()
    stream = harness.stream(lambda: Gated(book, gate), shards=1, queue_size=1)
    client = TestClient(make_app(stream))
    client.get("/hello")
    wait_for(lambda: book and book[0].entered.is_set(), "the processor to hold its first event")
    client.get("/hello")  # fills the queue
    assert client.get("/hello?break=1").status_code == 500
    assert client.get("/nope").status_code == 404
    assert stream.dropped["ListenerFailed"] == 1
    assert stream.dropped["RequestFinished"] == 2
    assert stream.dropped["RequestStarted"] == 2


# -- shutdown ----------------------------------------------------------------------------------


def test_shutdown_drains_the_queues_and_shuts_each_processor_down_once(harness: Harness) -> None:
    book: list[Recorder] = []
    gate = harness.gate()
    stream = harness.stream(lambda: Gated(book, gate), shards=3)
    for number in range(300):
        assert stream.send(Sold(book="dune", number=number), key=number % 7)
    wait_for(lambda: len(book) == 3, "the three processors")
    gate.set()
    stream.shutdown()
    assert len(events_of(book)) == 300
    assert [recorder.shutdowns for recorder in book] == [1, 1, 1]
    assert [recorder.after_shutdown for recorder in book] == [0, 0, 0]
    assert stream.dropped == Counter()
    stream.shutdown()  # a second call changes nothing
    assert [recorder.shutdowns for recorder in book] == [1, 1, 1]


def test_shutdown_gives_up_draining_at_its_time_limit(harness: Harness) -> None:
    """Events still queued at the limit are dropped (counted); processors are shut down."""
    book: list[Recorder] = []
    slow = threading.Event()
    slow.set()

    class Slow(Recorder):
        def process(self, event: StreamEvent) -> None:
            if slow.is_set():
                time.sleep(0.005)
            super().process(event)

    stream = harness.stream(lambda: Slow(book), shards=1)
    try:
        for number in range(2000):  # ten seconds of work
            stream.send(Sold(book="dune", number=number))
        stream.shutdown(timeout=0.1)
        wait_for(lambda: book and book[0].shutdowns == 1, "the processor's shutdown", timeout=3)
        processed = len(book[0].received)
        assert processed < 2000
        assert processed + stream.dropped["(undrained)"] == 2000
        assert book[0].after_shutdown == 0
    finally:
        slow.clear()  # let a thread that kept going finish at once


def test_shutdown_right_after_a_send_processes_it(harness: Harness) -> None:
    stream, book = harness.recorded(shards=1)
    stream.send(Sold(book="dune", number=1))
    stream.shutdown()
    assert [recorder.shutdowns for recorder in book] == [1]
    assert len(events_of(book)) == 1


def test_threads_start_with_the_first_request_and_end_at_shutdown(harness: Harness) -> None:
    before = set(threading.enumerate())
    stream, book = harness.recorded(shards=2)
    client = TestClient(make_app(stream))
    assert (set(threading.enumerate()) - before, book) == (set(), [])
    client.get("/hello")
    started = set(threading.enumerate()) - before
    assert sorted(thread.name for thread in started) == [
        "workflowhttp-stream-0",
        "workflowhttp-stream-1",
    ]
    stream.shutdown()
    wait_for(lambda: not any(thread.is_alive() for thread in started), "the threads to end")


def test_a_request_is_freed_once_its_events_are_processed(harness: Harness) -> None:
    """Idle shard threads must not keep the last request alive: its event, its error's
    traceback, its werkzeug ``Request`` (which its environ refers to)."""
    stream, book = harness.recorded(shards=2)  # one request per shard, each its last item
    client = TestClient(make_app(stream))
    # Nothing logged here: a log record with exc_info (pytest keeps those of the running
    # test) would keep the request alive by itself.
    assert client.get("/gone").status_code == 404  # an error with a traceback
    assert client.post("/echo", data=b"body").status_code == 200  # builds a Request
    wait_finished(book, 2)
    gc.collect()
    alive = [repr(obj) for obj in gc.get_objects() if isinstance(obj, (HttpEvent, Request))]
    assert alive == [], "the stream keeps a processed request alive"


def test_a_queued_request_keeps_no_request_state_alive(harness: Harness) -> None:
    """While its events wait in a queue (a backlog of up to ``queue_size`` requests), a
    request that has been answered holds no event, werkzeug ``Request`` or traceback."""
    book: list[Recorder] = []
    gate = harness.gate()
    stream = harness.stream(lambda: Gated(book, gate), shards=1)
    client = TestClient(make_app(stream))
    client.get("/hello")
    wait_for(lambda: book and book[0].entered.is_set(), "the processor to hold its first event")
    assert client.get("/gone").status_code == 404  # queued: an error with a traceback
    assert client.post("/echo", data=b"body").status_code == 200  # queued: built a Request
    gc.collect()
    alive = [repr(obj) for obj in gc.get_objects() if isinstance(obj, (HttpEvent, Request))]
    assert alive == [], "queued events keep answered requests alive"
    gate.set()
    wait_finished(book, 3)


def test_a_stream_that_was_shut_down_is_freed(harness: Harness) -> None:
    book: list[Recorder] = []
    stream = Stream(lambda: Recorder(book), shards=1)
    stream.send(Sold(book="dune", number=1))
    stream.shutdown()
    processor = weakref.ref(book.pop())
    freed = weakref.ref(stream)
    del stream
    gc.collect()
    assert freed() is None, "something keeps the Stream alive"
    assert processor() is None


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (("not callable",), {}),
        ((Recorder,), {"shards": 0}),
        ((Recorder,), {"shards": True}),
        ((Recorder,), {"queue_size": 0}),
        ((Recorder,), {"queue_size": 2.5}),
    ],
    ids=["processor", "no-shards", "bool-shards", "no-queue", "float-queue"],
)
def test_bad_stream_options_are_configuration_errors(
    args: tuple[Any, ...], options: dict[str, Any]
) -> None:
    with pytest.raises(ConfigurationError):
        Stream(*args, **options)


def test_the_app_takes_only_a_stream() -> None:
    with pytest.raises(ConfigurationError, match="stream must be a Stream"):
        App(controllers=[hello], stream=LogProcessor)  # type: ignore[arg-type]


# -- the built-in processors -------------------------------------------------------------------


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        json.loads(record.getMessage())
        for record in list(caplog.records)
        if record.name == "workflowhttp.access"
    ]


def test_log_processor_writes_one_json_line_per_request(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workflowhttp.access")
    stream = harness.stream(LogProcessor, shards=2)
    client = TestClient(make_app(stream))
    ok = client.get("/hello?name=log", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    posted = client.post("/echo", data=b"twelve bytes")
    failed = client.get("/boom")
    missing = client.get("/nope")
    wait_for(lambda: len(access_lines(caplog)) == 4, "4 access lines")
    lines = {line["request_id"]: line for line in access_lines(caplog)}
    line = lines[ok.headers["X-Request-ID"]]
    assert {key: line[key] for key in ("method", "path", "route", "status")} == {
        "method": "GET",
        "path": "/hello",
        "route": "hello",
        "status": 200,
    }
    assert (line["bytes_in"], line["bytes_out"], line["client"]) == (0, 9, "192.0.2.7")
    assert line["duration_ms"] >= 0
    assert list(line["states_ms"]) == HAPPY_STATES
    assert "error" not in line
    line = lines[posted.headers["X-Request-ID"]]
    assert (line["method"], line["status"], line["bytes_in"], line["bytes_out"]) == (
        "POST",
        200,
        12,
        12,
    )
    line = lines[failed.headers["X-Request-ID"]]
    assert (line["status"], line["route"], line["error"]) == (500, "boom", "RuntimeError: boom")
    line = lines[missing.headers["X-Request-ID"]]
    assert (line["status"], line["route"]) == (404, None)
    records = [r for r in caplog.records if r.name == "workflowhttp.access"]
    assert {record.levelno for record in records} == {logging.INFO}


def test_log_processor_takes_a_logger_and_a_level(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bookstore.access")
    mine = logging.getLogger("bookstore.access")
    stream = harness.stream(lambda: LogProcessor(mine, logging.WARNING), shards=1)
    client = TestClient(make_app(stream))
    request_id = client.get("/hello").headers["X-Request-ID"]
    wait_for(lambda: any(r.name == "bookstore.access" for r in caplog.records), "the line")
    (record,) = [r for r in caplog.records if r.name == "bookstore.access"]
    assert record.levelno == logging.WARNING
    assert json.loads(record.getMessage())["request_id"] == request_id


def run_metrics(harness: Harness) -> Any:
    """Serve some requests with a MetricsProcessor on a fresh registry; return the registry."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    stream = harness.stream(lambda: MetricsProcessor(registry), shards=2)
    client = TestClient(make_app(stream))
    for path in ("/hello", "/hello", "/hello?name=x", "/nope", "/nope", "/boom"):
        client.get(path)
    requests = "workflowhttp_requests_total"

    def count(route: str, status: str) -> float:
        labels = {"method": "GET", "route": route, "status": status}
        return registry.get_sample_value(requests, labels) or 0.0

    wait_for(
        lambda: (count("hello", "200"), count("", "404"), count("boom", "500")) == (3, 2, 1),
        "the request counts",
    )
    return registry


def test_metrics_processor_counts_requests_by_route_and_status(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    registry = run_metrics(harness)
    sample = registry.get_sample_value
    assert sample("workflowhttp_request_failures_total", {"route": "boom"}) == 1
    assert sample("workflowhttp_request_failures_total", {"route": "hello"}) is None
    durations = "workflowhttp_request_duration_seconds_count"
    assert sample(durations, {"method": "GET", "route": "hello", "status": "200"}) == 3
    states = "workflowhttp_state_duration_seconds_count"
    assert sample(states, {"state": "controller"}) == 4
    assert sample(states, {"state": "route_not_found"}) == 2

    endpoint = metrics_endpoint(registry=registry)
    text = TestClient(App(controllers=[endpoint])).get("/metrics").text
    assert 'workflowhttp_requests_total{method="GET",route="hello",status="200"} 3.0' in text


def test_each_registry_gets_its_own_metrics_even_at_a_recycled_address() -> None:
    """Registries come and go (one per app, one per test); a new one may reuse a dead one's
    address, and must still receive its own metrics."""
    from prometheus_client import CollectorRegistry

    done = RequestFinished(
        request_id="r-1",
        method="GET",
        path="/",
        route="home",
        status=200,
        duration=0.001,
        states={"request": 0.001},
        time=1.0,
    )
    labels = {"method": "GET", "route": "home", "status": "200"}
    addresses: set[int] = set()
    for attempt in range(50):
        registry = CollectorRegistry()
        processor = MetricsProcessor(registry)
        processor.process(done)
        assert registry.get_sample_value("workflowhttp_requests_total", labels) == 1, attempt
        addresses.add(id(registry))
        del registry, processor
        gc.collect()
    assert len(addresses) < 50  # addresses were recycled: the case above did happen


def test_processors_made_at_the_same_moment_share_the_registry_metrics(
    harness: Harness,
) -> None:
    """Every shard builds its MetricsProcessor in its own thread, at the same time."""
    from prometheus_client import CollectorRegistry

    registries = []  # kept alive: no recycled address here
    failures: list[BaseException] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for _ in range(10):
            registry = CollectorRegistry()
            registries.append(registry)
            barrier = threading.Barrier(8)

            def factory(registry: Any = registry, barrier: threading.Barrier = barrier) -> Any:
                barrier.wait(DEADLINE)
                try:
                    return MetricsProcessor(registry)
                except Exception as ex:
                    failures.append(ex)
                    raise

            stream = harness.stream(factory, shards=8)
            stream.start()
            stream.shutdown()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
