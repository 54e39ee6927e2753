"""The request trace: each state entered and each listener's run, for tests that assert a path."""

from __future__ import annotations

import pytest

from workflowhttp import App, HttpEvent, http, http_workflow
from workflowhttp.proxy import Proxy, ProxyEvent, proxy_workflow
from workflowhttp.testing import TestClient
from workflowhttp.trace import Trace


@http.GET("/items/{id}").group("admin")
def item(id: int) -> dict[str, int]:
    return {"id": id}


@http.GET("/hello")
def hello() -> str:
    return "Hello"


@http.GET("/boom")
def boom() -> str:
    raise ValueError("the controller broke")


def guard(event: HttpEvent) -> None:
    if "admin" in event.route.groups and event.request.headers.get("X-Token") != "t":
        event.access_denied("a token is needed")


def build() -> App:
    app = App(controllers=[item, hello, boom])
    app.listen(http_workflow.on_auth, guard, priority=10)
    return app


def rows(trace: Trace) -> list[tuple[str, str, int | None, str]]:
    return [
        (step.state, run.name.rsplit(".", 1)[-1], run.priority, run.action)
        for step in trace.steps
        for run in step.listeners
    ]


def test_a_plain_200():
    trace = TestClient(build()).trace("GET", "/items/7", headers={"X-Token": "t"})
    assert trace.states == (
        "request", "route", "auth", "resolve_parameters", "controller", "response",
    )  # fmt: skip
    assert rows(trace) == [
        ("request", "schedule_route", 100, "next(route)"),
        ("route", "match_route", 100, "next(auth)"),
        ("route", "route_fallback", 1000, "-"),
        ("auth", "guard", 10, "-"),
        ("auth", "schedule_resolve_parameters", 100, "next(resolve_parameters)"),
        ("resolve_parameters", "resolve_parameters", 100, "next(controller)"),
        ("controller", "call_controller", 100, "send"),
        ("response", "render_result", -100, "response"),
    ]
    assert trace.step("auth").listeners[0].name.endswith("test_trace.guard")
    assert all(run.microseconds >= 0 for step in trace.steps for run in step.listeners)
    assert (trace.answer.status, trace.answer.body, trace.error) == (200, b'{"id":7}', None)
    assert ("Content-Type", "application/json") in trace.answer.headers


def test_a_404():
    trace = TestClient(build()).trace("GET", "/nowhere")
    assert trace.states == ("request", "route", "route_not_found", "response")
    assert rows(trace)[1:4] == [
        ("route", "match_route", 100, "-"),
        ("route", "route_fallback", 1000, "next(route_not_found)"),
        ("route_not_found", "send_not_found", 100, "send"),
    ]
    assert trace.answer.status == 404


def test_a_403_from_an_auth_listener():
    trace = TestClient(build()).trace("GET", "/items/7")
    assert trace.states == ("request", "route", "auth", "access_denied", "response")
    assert rows(trace)[3:5] == [
        ("auth", "guard", 10, "next(access_denied)"),
        # the kernel acts only when nothing is scheduled: it runs and does nothing
        ("auth", "schedule_resolve_parameters", 100, "-"),
    ]
    assert trace.answer.status == 403
    assert b"a token is needed" in trace.answer.body


def test_a_400_from_parameters():
    trace = TestClient(build()).trace("GET", "/items/seven", headers={"X-Token": "t"})
    assert trace.states[-3:] == ("resolve_parameters", "parameters_failed", "response")
    assert ("resolve_parameters", "resolve_parameters", 100, "next(parameters_failed)") in rows(
        trace
    )
    assert trace.answer.status == 400
    assert trace.error is not None and trace.error.startswith("ParametersFailed")


def test_a_500_from_a_raising_controller(caplog):
    trace = TestClient(build()).trace("GET", "/boom")
    assert trace.states[-3:] == ("controller", "controller_error", "response")
    run = trace.step("controller").listeners[0]
    assert run.error == "ValueError: the controller broke"
    assert run.action == "raise ValueError: the controller broke"
    assert trace.answer.status == 500
    assert trace.error == "ValueError: the controller broke"


def test_a_forged_proxy_answer_shows_the_transaction():
    app = App(controllers=[Proxy("/api", "http://127.0.0.1:9", name="api")])

    @app.listen(proxy_workflow.on_filter_request)
    def forge(event: ProxyEvent) -> None:
        event.send({"forged": True})

    trace = TestClient(app).trace("GET", "/api/x")
    assert trace.states == (
        "request", "route", "auth", "resolve_parameters", "controller",
        "transaction_started", "filter_request", "filter_response", "transaction_ended",
        "response",
    )  # fmt: skip
    assert [step.workflow for step in trace.steps].count("proxy") == 4
    forged = [run for run in trace.step("filter_request").listeners if run.name.endswith("forge")]
    assert [(run.priority, run.action) for run in forged] == [(0, "send")]
    assert "forward" not in trace.states  # the upstream (a closed port) was never called
    assert (trace.answer.status, trace.answer.body) == (200, b'{"forged":true}')


def test_a_stall_is_reported():
    app = build()

    @app.listen(http_workflow.on_auth, priority=-5)
    def hush(event: HttpEvent) -> None:
        event.stop_propagation()  # the kernel's scheduling listener never runs

    trace = TestClient(app).trace("GET", "/hello")
    assert trace.states == ("request", "route", "auth")
    assert rows(trace)[-1] == ("auth", "hush", -5, "stop")
    assert trace.answer.status == 500
    assert trace.error == "WorkflowStalled: workflow stalled in state 'auth'"


def test_the_app_itself_is_not_instrumented():
    app = build()
    before = app.workflow_listeners
    client = TestClient(app)
    client.trace("GET", "/hello")
    assert app.workflow_listeners is before
    assert client.get("/hello").text == "Hello"
    assert not any(hasattr(fn, "__wrapped__") for fns in before.values() for fn in fns)


@http.ANY("/echo")
def echo(event: HttpEvent) -> bytes:
    return event.request.get_data()


@pytest.mark.parametrize("method", ["post", "PUT"], ids=["lower", "upper"])
def test_the_body_and_method_are_sent_and_the_body_head_kept(method):
    trace = TestClient(App(controllers=[echo])).trace(method, "/echo", data=b"x" * 2000)
    assert trace.method == method.upper()
    assert (trace.answer.status, trace.answer.size) == (200, 2000)
    assert trace.answer.body == b"x" * 512
