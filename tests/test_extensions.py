"""Extensions: what they bring to an app, and start/stop once per worker."""

from __future__ import annotations

import logging

import pytest

from workflowhttp import App, HttpEvent, http, http_workflow, listener
from workflowhttp.extensions import Extension
from workflowhttp.testing import TestClient


class Greeter:
    def __init__(self) -> None:
        self.greeting = "hello"


@http.GET("/greet")
def greet(greeter: Greeter, event: HttpEvent) -> dict:
    return {"greeting": greeter.greeting, "tagged": event.store.get("tagged", False)}


class Tagging:
    @listener(http_workflow.on_auth)
    def tag(self, event: HttpEvent) -> None:
        event.store["tagged"] = True


class Stamp:
    def outgoing(self, event: HttpEvent) -> None:
        event.response.headers["X-Stamp"] = "yes"


class Greetings(Extension):
    controllers = (greet,)
    listeners = (Tagging,)
    providers = (Greeter,)
    middlewares = (Stamp,)

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def start(self, app: App) -> None:
        self.log.append("start")

    def stop(self, app: App) -> None:
        self.log.append("stop")


def test_an_extension_brings_controllers_listeners_providers_and_middlewares():
    client = TestClient(App(extensions=[Greetings([])]))
    answer = client.get("/greet")
    assert answer.json == {"greeting": "hello", "tagged": True}
    assert answer.headers["X-Stamp"] == "yes"


def test_start_and_stop_run_once_around_a_with_block():
    log: list[str] = []
    app = App(extensions=[Greetings(log)])
    with TestClient(app) as client:
        assert log == ["start"]
        client.get("/greet")
        client.get("/greet")
        app.start()  # a second start does nothing
        assert log == ["start"]
    assert log == ["start", "stop"]
    app.stop()
    assert log == ["start", "stop"]


def test_the_first_request_starts_an_app_nobody_started():
    log: list[str] = []
    client = TestClient(App(extensions=[Greetings(log)]))
    assert log == []
    client.get("/greet")
    client.get("/greet")
    assert log == ["start"]


def test_stop_runs_in_reverse_order_and_a_failing_stop_spares_the_others(caplog):
    log: list[str] = []

    class Named(Extension):
        def __init__(self, name: str, fail: bool = False) -> None:
            self.name = name
            self.fail = fail

        def start(self, app: App) -> None:
            log.append(f"start {self.name}")

        def stop(self, app: App) -> None:
            log.append(f"stop {self.name}")
            if self.fail:
                raise RuntimeError("cannot stop")

    app = App(
        controllers=[greet],
        providers=[Greeter],
        extensions=[Named("a"), Named("b", fail=True), Named("c")],
    )
    with caplog.at_level(logging.ERROR), TestClient(app):
        pass
    assert log == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    assert "failed to stop" in caplog.text


def test_a_failing_start_fails_the_start():
    class Broken(Extension):
        def start(self, app: App) -> None:
            raise RuntimeError("no database")

    app = App(controllers=[greet], providers=[Greeter], extensions=[Broken()])
    with pytest.raises(RuntimeError, match="no database"):
        app.start()


def test_an_extension_given_as_a_controller_is_added_as_one():
    client = TestClient(App(controllers=[Greetings([])]))
    assert client.get("/greet").json["greeting"] == "hello"


def test_kernel_listeners_brought_twice_run_once():
    calls: list[str] = []

    def kernel_tag(event: HttpEvent) -> None:
        calls.append("kernel")

    class One(Extension):
        kernel = (("auth", 100, kernel_tag),)

    app = App(controllers=[greet], providers=[Greeter], extensions=[One(), One()])
    TestClient(app).get("/greet")
    assert calls == ["kernel"]
