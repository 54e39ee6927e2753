"""Shared fixtures: apps, clients, and a detector for request state that outlives a test."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from workflowhttp import App, HttpEvent, Request, http
from workflowhttp.stream import Stream
from workflowhttp.testing import TestClient


@pytest.fixture(autouse=True)
def leak_detector(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a test that leaves an event or a request alive once it is over.

    pytest keeps the test's log records until teardown ends; a record logged with
    ``exc_info`` holds the traceback and so the walker's frame and its event. Those records
    are dropped first: they are the test harness's references, not the framework's.
    """
    yield
    for when in ("setup", "call"):
        caplog.get_records(when).clear()
    gc.collect()
    leaked = [obj for obj in gc.get_objects() if isinstance(obj, (HttpEvent, Request))]
    assert not leaked, f"request state outlived the test: {leaked[:3]}"


@http.GET("/hello")
def hello(name: str = "world") -> str:
    return f"Hello {name}"


@pytest.fixture
def make_app() -> Callable[..., App]:
    """Build an App; ``controllers`` defaults to the ``hello`` route."""

    def make(**options: Any) -> App:
        options.setdefault("controllers", [hello])
        return App(**options)

    return make


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    return make_app()


@pytest.fixture
def client(app: App) -> TestClient:
    return TestClient(app)


@pytest.fixture
def make_client() -> Callable[..., TestClient]:
    """Build a validating test client for an app (``make_client(app)``)."""
    return TestClient


@pytest.fixture
def stop_streams(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Shut down, after the test, every event stream it started (apps that log through one)."""
    started: list[Stream] = []
    start = Stream.start

    def remember(stream: Stream) -> None:
        started.append(stream)
        start(stream)

    monkeypatch.setattr(Stream, "start", remember)
    yield
    for stream in started:
        stream.shutdown()
