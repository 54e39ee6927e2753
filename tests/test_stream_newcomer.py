"""The event stream, items 16-18 of the newcomer issue: keys, names, labels, and what a request
pays for the stream.

* 16: a user event sent with ``key=event.request_id`` reaches the processor that receives
  that request's own events (docs/events.md, "Keys").
* 17: ``ListenerFailed`` names the middleware step that raised, not the kernel listener that
  runs the chain; the latency histogram has a ``status`` label.
* 18: the request's thread records raw facts only; typed events are built in the shards, and
  request ids stay unique (also across a fork) now that they are formatted ahead, in blocks.

Processing is asynchronous: every check waits with ``stream.flush()`` (bounded), and every
stream is shut down when its test ends.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import workflowhttp.stream.trail as stream_module
from workflowhttp import App, HttpEvent, Response, http
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
from workflowhttp.stream.processors import MetricsProcessor
from workflowhttp.testing import TestClient

DEADLINE = 10.0  # seconds a flush may take at most
GENERATED_ID = re.compile(r"([0-9a-f]{8})-[0-9a-f]+")


class Note(StreamEvent, frozen=True, kw_only=True):
    """A user event about one request."""

    request_id: str
    where: str


class Recorder:
    """Keeps every event it is given; one per shard."""

    def __init__(self, book: list[Recorder]) -> None:
        self.received: list[StreamEvent] = []
        book.append(self)

    def process(self, event: StreamEvent) -> None:
        self.received.append(event)

    def shutdown(self) -> None:
        pass


@pytest.fixture
def streams() -> Iterator[Callable[..., tuple[Stream, list[Recorder]]]]:
    """Make recorded streams; each is shut down when the test ends."""
    made: list[Stream] = []

    def make(**options: Any) -> tuple[Stream, list[Recorder]]:
        book: list[Recorder] = []
        stream = Stream(lambda: Recorder(book), **options)
        made.append(stream)
        return stream, book

    yield make
    for stream in made:
        stream.shutdown()


def settled(stream: Stream) -> None:
    assert stream.flush(timeout=DEADLINE), "the stream did not process its events in time"


def holders(book: list[Recorder], request_id: str, kind: type) -> list[int]:
    """The shards whose processor received an event of ``kind`` for ``request_id``."""
    return [
        index
        for index, recorder in enumerate(book)
        if any(
            isinstance(event, kind) and getattr(event, "request_id", None) == request_id
            for event in recorder.received
        )
    ]


# -- 16: keyed by the request id ---------------------------------------------------------------


@http.GET("/noted")
def noted(event: HttpEvent) -> str:
    """A controller that reports on its request to the stream, keyed as the docs say."""
    stream = event.app.stream
    assert stream is not None and event.request_id is not None
    stream.send(Note(request_id=event.request_id, where="controller"), key=event.request_id)
    return "noted"


@pytest.mark.parametrize("trusted", [False, True], ids=["generated-ids", "trusted-ids"])
def test_a_user_event_keyed_by_the_request_id_reaches_that_requests_processor(
    streams: Callable[..., tuple[Stream, list[Recorder]]], trusted: bool
) -> None:
    """Before: requests were sharded by an internal counter, user events by ``hash(key)``,
    so about half of the requests had their events split over two processors."""
    stream, book = streams(shards=4, trust_request_id=trusted)
    client = TestClient(App(controllers=[noted], stream=stream))
    ids = []
    for number in range(32):
        headers = {"X-Request-ID": f"gateway-{number}"} if trusted else {}
        response = client.get("/noted", headers=headers)
        assert response.status_code == 200
        ids.append(response.headers["X-Request-ID"])
    settled(stream)
    assert len(book) == 4
    split = [
        request_id
        for request_id in ids
        if holders(book, request_id, Note) != holders(book, request_id, RequestFinished)
    ]
    assert split == [], f"{len(split)} of {len(ids)} requests had their events split"
    for request_id in ids:  # and each request reached exactly one processor
        assert len(holders(book, request_id, RequestFinished)) == 1
    assert sum(bool(recorder.received) for recorder in book) > 1  # still spread over shards


# -- 17: naming the middleware that raised -----------------------------------------------------


class Broken:
    """A middleware that raises in the step named by the query string."""

    def incoming(self, event: HttpEvent) -> Any:
        query = event.environ.get("QUERY_STRING", "")
        if "in=raise" in query:
            raise RuntimeError("incoming broke")
        if "in=value" in query:
            return 42  # neither a response nor None: a ConfigurationError
        return None

    def outgoing(self, event: HttpEvent) -> None:
        if "out=raise" in event.environ.get("QUERY_STRING", ""):
            raise ValueError("outgoing broke")


class Audit:
    """A well-behaved middleware, run around ``Broken``."""

    def incoming(self, event: HttpEvent) -> None:
        pass

    def outgoing(self, event: HttpEvent) -> None:
        if "audit=raise" in event.environ.get("QUERY_STRING", ""):
            raise KeyError("audit log")


class RouteGuard:
    """A route's own middleware (run in ``auth``, once the route is known)."""

    def incoming(self, event: HttpEvent) -> None:
        if "guard=raise" in event.environ.get("QUERY_STRING", ""):
            raise PermissionError("guard broke")


@http.GET("/guarded").middleware(RouteGuard)
def guarded() -> str:
    return "guarded"


@http.GET("/open")
def open_route() -> str:
    return "open"


def failures_of(book: list[Recorder], request_id: str) -> list[tuple[str, str, str]]:
    return [
        (event.state, event.listener, event.error.partition(":")[0])
        for recorder in book
        for event in recorder.received
        if isinstance(event, ListenerFailed) and event.request_id == request_id
    ]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/open?in=raise", [("request", "Broken.incoming", "RuntimeError")]),
        ("/open?in=value", [("request", "Broken.incoming", "ConfigurationError")]),
        ("/open?out=raise", [("response", "Broken.outgoing", "ValueError")]),
        ("/open?audit=raise", [("response", "Audit.outgoing", "KeyError")]),
        ("/guarded?guard=raise", [("auth", "RouteGuard.incoming", "PermissionError")]),
        (
            "/open?in=raise&audit=raise",
            [
                ("request", "Broken.incoming", "RuntimeError"),
                ("response", "Audit.outgoing", "KeyError"),
            ],
        ),
        ("/open", []),
    ],
    ids=[
        "global-incoming",
        "incoming-returns-a-value",
        "outgoing",
        "outer-outgoing",
        "route-incoming",
        "incoming-then-outgoing",
        "none",
    ],
)
def test_listener_failed_names_the_middleware_step_that_raised(
    streams: Callable[..., tuple[Stream, list[Recorder]]],
    path: str,
    expected: list[tuple[str, str, str]],
) -> None:
    """Before: every one of these was named after the kernel's runner
    (``run_global_middlewares``, ``run_route_middlewares``, ``run_outgoing``)."""
    stream, book = streams(shards=2)
    app = App(controllers=[open_route, guarded], middlewares=[Audit, Broken()], stream=stream)
    response = TestClient(app).get(path)
    assert response.status_code == (200 if not expected else 500)
    settled(stream)
    assert failures_of(book, response.headers["X-Request-ID"]) == expected


def test_a_listener_that_raises_is_still_named_as_itself(
    streams: Callable[..., tuple[Stream, list[Recorder]]],
) -> None:
    """A user listener that re-raises a middleware's error is the listener that raised."""
    stream, book = streams(shards=1)
    app = App(controllers=[open_route], middlewares=[Broken], stream=stream)

    def reraise(event: HttpEvent) -> None:
        assert event.error is not None
        raise event.error

    app.listen("controller_error", reraise)
    response = TestClient(app).get("/open?in=raise")
    assert response.status_code == 500
    settled(stream)
    assert failures_of(book, response.headers["X-Request-ID"]) == [
        ("request", "Broken.incoming", "RuntimeError"),
        (
            "controller_error",
            "test_a_listener_that_raises_is_still_named_as_itself.<locals>.reraise",
            "RuntimeError",
        ),
    ]


@http.GET("/fine")
def fine() -> str:
    return "fine"


@http.GET("/fails")
def fails() -> str:
    raise RuntimeError("fails")


def test_the_latency_histogram_has_a_status_label() -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    stream = Stream(lambda: MetricsProcessor(registry), shards=2)
    try:
        client = TestClient(App(controllers=[fine, fails], stream=stream))
        for path in ("/fine", "/fine", "/fails", "/missing"):
            client.get(path)
        settled(stream)
    finally:
        stream.shutdown()
    count = "workflowhttp_request_duration_seconds_count"

    def observed(route: str, status: str) -> float | None:
        labels = {"method": "GET", "route": route, "status": status}
        return registry.get_sample_value(count, labels)

    assert (observed("fine", "200"), observed("fails", "500"), observed("", "404")) == (2, 1, 1)
    assert observed("fine", "500") is None


# -- 18: what the request's thread does --------------------------------------------------------


@pytest.fixture
def built_in() -> Iterator[list[str]]:
    """Record in which thread each of the framework's events is built."""
    threads: list[str] = []
    spies = {}
    for kind in (RequestStarted, StateEntered, ListenerFailed, RequestFailed, Traffic):
        spies[kind.__name__] = _spy(kind, threads)
    spies["RequestFinished"] = _spy(RequestFinished, threads)
    saved = {name: getattr(stream_module, name) for name in spies}
    for name, spy in spies.items():
        setattr(stream_module, name, spy)
    try:
        yield threads
    finally:
        for name, kind in saved.items():
            setattr(stream_module, name, kind)


def _spy(kind: type, threads: list[str]) -> type:
    """A subclass of ``kind`` whose instances note the thread that builds them."""

    def note_thread(self: Any) -> None:
        threads.append(threading.current_thread().name)

    return type(kind.__name__, (kind,), {"__post_init__": note_thread})


def test_events_are_built_in_the_shard_threads_only(
    streams: Callable[..., tuple[Stream, list[Recorder]]], built_in: list[str]
) -> None:
    """The request's thread hands over one record of raw facts; no typed event is built there
    (a guard: building a request's events costs more than the request)."""
    stream, book = streams(shards=2)
    client = TestClient(App(controllers=[fine, fails], stream=stream))
    for path in ("/fine", "/fails", "/missing") * 4:
        client.get(path)
    settled(stream)
    assert len(built_in) == sum(len(recorder.received) for recorder in book) > 0
    assert set(built_in) <= {"workflowhttp-stream-0", "workflowhttp-stream-1"}, set(built_in)


def test_request_ids_are_unique_across_threads_and_blocks(
    streams: Callable[..., tuple[Stream, list[Recorder]]],
) -> None:
    """Ids are formatted ahead, a block at a time, by the shards and by requests that find
    none ready: many more requests than a block, from several threads, never share one."""
    stream, _ = streams(shards=2)
    app = App(controllers=[fine], stream=stream)

    def ask(_: int) -> str:
        return TestClient(app).get("/fine").headers["X-Request-ID"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = list(pool.map(ask, range(1200), timeout=DEADLINE * 6))
    assert len(set(ids)) == len(ids) == 1200
    prefixes = {GENERATED_ID.fullmatch(request_id).group(1) for request_id in ids}  # type: ignore[union-attr]
    assert len(prefixes) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_hands_out_its_parents_ids(
    streams: Callable[..., tuple[Stream, list[Recorder]]],
) -> None:
    """The parent has ids formatted ahead (with its prefix) when it forks; the child must
    draw its own prefix, or two workers would answer with the same ids."""
    stream, _ = streams(shards=1)
    app = App(controllers=[fine], stream=stream)
    parent = TestClient(app).get("/fine").headers["X-Request-ID"]
    settled(stream)  # the shard has formatted the next ids by now
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one request, its id to the parent, and out
        try:
            child = TestClient(app).get("/fine").headers["X-Request-ID"]
            os.write(writing, child.encode())
        finally:
            os._exit(0)
    os.close(writing)
    try:
        child = os.read(reading, 200).decode()
    finally:
        os.close(reading)
        os.waitpid(pid, 0)
    parent_prefix = GENERATED_ID.fullmatch(parent).group(1)  # type: ignore[union-attr]
    assert GENERATED_ID.fullmatch(child), child
    assert not child.startswith(parent_prefix), (parent, child)


@http.GET("/answer")
def answer() -> Response:
    return Response(b"42")


def test_a_request_refused_before_its_first_state_is_still_reported(
    streams: Callable[..., tuple[Stream, list[Recorder]]],
) -> None:
    """A request the checks refuse (here: a body over the limit) may enter no state at all;
    its events still come, with no time per state, and the next request is served."""
    stream, book = streams(shards=1)
    client = TestClient(App(controllers=[answer], stream=stream))
    refused = client.get("/answer", environ_overrides={"CONTENT_LENGTH": "99999999"})
    assert refused.status_code == 413
    assert client.get("/answer").data == b"42"
    settled(stream)
    request_id = refused.headers["X-Request-ID"]
    events = [e for e in book[0].received if getattr(e, "request_id", None) == request_id]
    kinds = [type(event) for event in events]
    assert kinds[0] is RequestStarted and kinds[-1] is RequestFinished
    assert RequestFailed in kinds and Traffic in kinds
    done = events[-1]
    assert isinstance(done, RequestFinished)
    assert done.status == 413 and done.duration >= sum(done.states.values()) >= 0
    (traffic,) = [event for event in events if isinstance(event, Traffic)]
    assert traffic.bytes_in == 99999999  # announced, never read
