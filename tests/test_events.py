"""The event through HTTP: moving on (send, next, helpers), its fields, and failure routing.

DESIGN.md §2 (the graph and its rules) and §3 (the event), exercised through ``TestClient``.
Listeners that change a request act only when the request carries ``X-Act: 1``, so each test
can check that the next request on the same app is unaffected.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import werkzeug
import werkzeug.exceptions

from workflowhttp import (
    AccessDenied,
    App,
    BadRequest,
    HTMLResponse,
    HTTPError,
    HttpEvent,
    IllegalTransition,
    JSONResponse,
    Limits,
    NotFound,
    Request,
    Response,
    Route,
    ServiceUnavailable,
    http,
    http_workflow,
)
from workflowhttp.testing import TestClient

ACT = {"X-Act": "1"}
INTERNAL = {"message": "Internal Server Error"}


@http.GET("/hello")
def greet(name: str = "world") -> str:
    return f"Hello {name}"


@http.GET("/items/{id}")
def item(id: int) -> dict[str, int]:
    return {"id": id}


@http.GET("/boom")
def boom() -> str:
    raise RuntimeError("boom")


@http.GET("/private")
def private() -> str:
    raise AccessDenied()


@http.GET("/me")
def me(event: HttpEvent) -> dict[str, Any]:
    event.store["controller saw"] = event.store.get("user")
    return {"user": event.store.get("user"), "state": event.state}


class Teapot(HTTPError):
    status = 418
    message = "I'm a teapot"


# Where each state is reached: (method, path). The happy-path states are all on GET /hello.
REACH: dict[str, tuple[str, str]] = {
    "request": ("GET", "/hello"),
    "route": ("GET", "/hello"),
    "auth": ("GET", "/hello"),
    "resolve_parameters": ("GET", "/hello"),
    "controller": ("GET", "/hello"),
    "route_not_found": ("GET", "/nope"),
    "method_not_allowed": ("POST", "/hello"),
    "access_denied": ("GET", "/private"),
    "parameters_failed": ("GET", "/items/abc"),
    "controller_error": ("GET", "/boom"),
}
NON_TERMINAL = list(REACH)
BEFORE_RESPONSE = ["request", "route", "auth", "resolve_parameters", "controller"]
FAILURE_STATES = [
    "route_not_found",
    "method_not_allowed",
    "access_denied",
    "parameters_failed",
    "controller_error",
]


@pytest.fixture
def app(make_app) -> App:
    return make_app(controllers=[greet, item, boom, private, me])


@pytest.fixture
def client(app: App) -> TestClient:
    return TestClient(app)


def acting(event: HttpEvent) -> bool:
    return event.environ.get("HTTP_X_ACT") == "1"


def call(client: TestClient, state: str, headers: dict[str, str] | None = None) -> Any:
    method, path = REACH[state]
    return client.open(path, method=method, headers=headers or {})


def assert_unaffected(client: TestClient) -> None:
    """The next request on the same app answers as if nothing had happened."""
    response = client.get("/hello")
    assert response.status_code == 200
    assert response.text == "Hello world"


def error_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# -- send() ----------------------------------------------------------------------------------


@pytest.mark.parametrize("state", NON_TERMINAL)
def test_send_answers_from_every_non_terminal_state(app, client, state):
    @app.listen(state)
    def answer(event):
        if acting(event):
            event.send({"sent_from": event.state}, status=203)

    response = call(client, state, ACT)
    assert response.status_code == 203
    assert response.json == {"sent_from": state}
    assert_unaffected(client)


@pytest.mark.parametrize(
    ("value", "status", "body", "content_type"),
    [
        ("text", 200, b"text", "text/plain; charset=utf-8"),
        ({"a": 1}, 200, b'{"a":1}', "application/json"),
        (("made", 201), 201, b"made", "text/plain; charset=utf-8"),
        (HTMLResponse("<p>x</p>", status=202), 202, b"<p>x</p>", "text/html; charset=utf-8"),
        (JSONResponse([1], status=207), 207, b"[1]", "application/json"),
        (werkzeug.Response("wz", status=208, mimetype="text/plain"), 208, b"wz", "text/plain"),
    ],
    ids=["str", "dict", "tuple", "HTMLResponse", "JSONResponse", "werkzeug.Response"],
)
def test_send_renders_like_a_controller_result(app, client, value, status, body, content_type):
    @app.listen(http_workflow.on_auth)
    def answer(event):
        event.send(value)

    response = client.get("/hello")
    assert response.status_code == status
    assert response.data == body
    assert response.mimetype == content_type.partition(";")[0]
    assert response.content_type.startswith(content_type)


def test_send_status_overrides_the_rendered_status(app, client):
    @app.listen(http_workflow.on_request)
    def answer(event):
        event.send(JSONResponse({"ok": True}), status=202)

    response = client.get("/hello")
    assert response.status_code == 202
    assert response.json == {"ok": True}


def test_send_skips_the_controller(app, client):
    calls: list[str] = []

    @http.GET("/counted")
    def counted() -> str:
        calls.append("called")
        return "from controller"

    app.add_controller(counted)

    @app.listen("controller")
    def answer(event):
        if acting(event):
            event.send("from listener")

    assert client.get("/counted", headers=ACT).text == "from listener"
    assert calls == []
    assert client.get("/counted").text == "from controller"
    assert calls == ["called"]


def test_send_in_response_raises_illegal_transition_and_answers_500(app, client, caplog):
    raised: list[str] = []

    @app.listen("response")
    def too_late(event):
        if acting(event):
            try:
                event.send("late")
            except IllegalTransition as ex:
                raised.append(str(ex))
                raise

    response = client.get("/hello", headers=ACT)
    assert response.status_code == 500
    assert response.json == INTERNAL
    assert len(raised) == 1
    assert "'response'" in raised[0]
    assert error_logs(caplog)
    assert_unaffected(client)


def test_sent_tells_whether_a_response_is_scheduled(app, client):
    seen: list[tuple[str, bool]] = []

    @app.listen("request")
    def before(event):
        seen.append(("request before", event.sent))
        event.send("early")
        seen.append(("request after send", event.sent))

    @app.listen("response")
    def in_response(event):
        seen.append(("response", event.sent))

    assert client.get("/hello").text == "early"
    assert seen == [("request before", False), ("request after send", True), ("response", True)]


def test_sent_is_true_in_response_without_send(app, client):
    seen: list[bool] = []

    @app.listen("controller")
    def in_controller(event):
        seen.append(event.sent)

    @app.listen("response")
    def in_response(event):
        seen.append(event.sent)

    assert client.get("/hello").status_code == 200
    assert seen == [False, True]


# -- next(), has_next(), clear_next() -------------------------------------------------------


def test_has_next_and_clear_next(app, client):
    seen: list[tuple[str, bool]] = []

    @app.listen("request")
    def juggle(event):
        seen.append(("start", event.has_next()))
        event.next("response")
        seen.append(("after next", event.has_next()))
        event.clear_next()
        seen.append(("after clear", event.has_next()))

    @app.listen("request", priority=101)
    def after_kernel(event):
        seen.append(("after kernel", event.has_next()))

    response = client.get("/hello")
    assert response.status_code == 200
    assert response.text == "Hello world"
    assert seen == [
        ("start", False),
        ("after next", True),
        ("after clear", False),
        ("after kernel", True),
    ]


def test_clear_next_cancels_a_send(app, client):
    seen: list[bool] = []

    @app.listen("auth", priority=-10)
    def send_early(event):
        if acting(event):
            event.send("early", status=418)

    @app.listen("auth")
    def change_mind(event):
        if acting(event):
            event.clear_next()
            seen.append(event.sent)

    response = client.get("/hello", headers=ACT)
    assert response.status_code == 200
    assert response.text == "Hello world"
    assert seen == [False]


def test_next_response_answers_with_the_result_so_far(app, client):
    @app.listen("controller", priority=101)
    def shout(event):
        event.result = event.result.upper()
        event.next("response")

    response = client.get("/hello")
    assert response.status_code == 200
    assert response.text == "HELLO WORLD"


@pytest.mark.parametrize(
    ("first", "second", "status"),
    [
        ("access_denied", "resolve_parameters", 200),
        ("resolve_parameters", "access_denied", 403),
        ("response", "access_denied", 403),
    ],
    ids=["deny-then-allow", "allow-then-deny", "respond-then-deny"],
)
def test_the_last_valid_next_of_a_state_wins(app, client, first, second, status):
    @app.listen("auth", priority=1)
    def one(event):
        event.next(first)

    @app.listen("auth", priority=2)
    def two(event):
        event.next(second)

    response = client.get("/hello")
    assert response.status_code == status
    if status == 403:
        assert response.json == {"message": "Access denied"}
    else:
        assert response.text == "Hello world"


@pytest.mark.parametrize("target", ["resolve_parameters", "access_denied"])
def test_a_next_after_send_replaces_the_send(app, client, target):
    @app.listen("auth", priority=1)
    def send_early(event):
        event.send("early", status=418)

    @app.listen("auth", priority=2)
    def move_on(event):
        event.next(target)

    response = client.get("/hello")
    if target == "access_denied":
        assert response.status_code == 403
        assert response.json == {"message": "Access denied"}
    else:
        assert response.status_code == 200
        assert response.text == "Hello world"


def test_an_illegal_next_does_not_replace_a_valid_one(app, client):
    raised: list[str] = []

    @app.listen("auth", priority=1)
    def deny(event):
        event.next("access_denied")

    @app.listen("auth", priority=2)
    def try_illegal(event):
        try:
            event.next("controller")
        except IllegalTransition as ex:
            raised.append(str(ex))

    response = client.get("/hello")
    assert response.status_code == 403
    assert response.json == {"message": "Access denied"}
    assert len(raised) == 1


ILLEGAL = [
    ("request", "auth"),
    ("request", "controller"),
    ("route", "controller"),
    ("route", "request"),
    ("auth", "controller"),
    ("auth", "route"),
    ("resolve_parameters", "auth"),
    ("controller", "route_not_found"),
    ("controller", "parameters_failed"),
    ("route_not_found", "auth"),
    ("method_not_allowed", "route_not_found"),
    ("access_denied", "controller"),
    ("parameters_failed", "controller"),
    ("controller_error", "access_denied"),
    ("auth", "no_such_state"),
]


@pytest.mark.parametrize(("state", "target"), ILLEGAL, ids=[f"{s}->{t}" for s, t in ILLEGAL])
def test_illegal_next_raises_naming_both_states(app, client, state, target):
    raised: list[str] = []

    @app.listen(state)
    def illegal(event):
        if acting(event):
            try:
                event.next(target)
            except IllegalTransition as ex:
                raised.append(str(ex))
            event.send("caught")

    response = call(client, state, ACT)
    assert response.text == "caught"
    assert len(raised) == 1
    assert raised[0].startswith(f"illegal transition from '{state}' to '{target}'")


def test_illegal_transition_is_a_workflow_error_not_an_http_error():
    from workflowhttp import WorkflowError

    assert issubclass(IllegalTransition, WorkflowError)
    assert not issubclass(IllegalTransition, HTTPError)


@pytest.mark.parametrize(("state", "target"), ILLEGAL, ids=[f"{s}->{t}" for s, t in ILLEGAL])
def test_illegal_next_answers_500_json(app, client, caplog, state, target):
    @app.listen(state)
    def illegal(event):
        if acting(event):
            event.next(target)

    response = call(client, state, ACT)
    assert response.status_code == 500
    assert response.json == INTERNAL
    assert "illegal" not in response.text
    assert any(r.exc_info and isinstance(r.exc_info[1], IllegalTransition) for r in caplog.records)
    assert_unaffected(client)


def test_illegal_next_shows_the_error_only_with_debug(make_app, caplog):
    def illegal(event):
        event.next("controller")

    quiet = make_app(controllers=[greet])
    quiet.listen("request", illegal)
    loud = make_app(controllers=[greet], debug=True)
    loud.listen("request", illegal)

    hidden = TestClient(quiet).get("/hello")
    assert hidden.status_code == 500
    assert hidden.json == INTERNAL
    assert "Traceback" not in hidden.text

    shown = TestClient(loud).get("/hello")
    assert shown.status_code == 500
    assert shown.json["message"] == "Internal Server Error"
    assert "IllegalTransition" in shown.text
    assert "illegal transition from 'request' to 'controller'" in shown.text


# -- the helpers: access_denied(), not_found(), route_found() -------------------------------


@pytest.mark.parametrize("state", ["auth", "resolve_parameters", "controller"])
@pytest.mark.parametrize(
    ("message", "body"),
    [(None, {"message": "Access denied"}), ("members only", {"message": "members only"})],
    ids=["default", "custom"],
)
def test_access_denied_helper_answers_403(app, client, state, message, body):
    @app.listen(state)
    def deny(event):
        if acting(event):
            event.access_denied(message)

    response = client.get("/hello", headers=ACT)
    assert response.status_code == 403
    assert response.json == body
    assert response.mimetype == "application/json"
    assert_unaffected(client)


@pytest.mark.parametrize("state", BEFORE_RESPONSE)
@pytest.mark.parametrize(
    ("message", "body"),
    [(None, {"message": "Access denied"}), ("go away", {"message": "go away"})],
    ids=["default", "custom"],
)
def test_access_denied_raised_in_a_listener_answers_403(app, client, state, message, body):
    @app.listen(state)
    def deny(event):
        if acting(event):
            raise AccessDenied(message)

    response = client.get("/hello", headers=ACT)
    assert response.status_code == 403
    assert response.json == body
    assert_unaffected(client)


def test_access_denied_raised_by_a_controller_answers_403(client):
    response = client.get("/private")
    assert response.status_code == 403
    assert response.json == {"message": "Access denied"}
    assert_unaffected(client)


def test_access_denied_raised_with_a_message_by_a_controller(make_app):
    @http.GET("/vault")
    def vault() -> str:
        raise AccessDenied("vault closed")

    response = TestClient(make_app(controllers=[vault])).get("/vault")
    assert response.status_code == 403
    assert response.json == {"message": "vault closed"}


def test_not_found_helper_in_route_answers_404(app, client):
    @app.listen("route")
    def hide(event):
        if acting(event):
            event.not_found()

    response = client.get("/hello", headers=ACT)
    assert response.status_code == 404
    assert response.json == {"message": "Not Found"}
    assert_unaffected(client)


HELPERS_WITHOUT_EDGE = [
    ("request", "not_found"),
    ("auth", "not_found"),
    ("resolve_parameters", "not_found"),
    ("controller", "not_found"),
    ("route_not_found", "not_found"),
    ("access_denied", "not_found"),
    ("route", "access_denied"),
    ("route_not_found", "access_denied"),
    ("method_not_allowed", "access_denied"),
    ("access_denied", "access_denied"),
    ("parameters_failed", "access_denied"),
    ("controller_error", "access_denied"),
    ("request", "route_found"),
    ("auth", "route_found"),
    ("controller", "route_found"),
    ("route_not_found", "route_found"),
]


@pytest.mark.parametrize(
    ("state", "helper"),
    HELPERS_WITHOUT_EDGE,
    ids=[f"{helper}-in-{state}" for state, helper in HELPERS_WITHOUT_EDGE],
)
def test_a_helper_in_a_state_without_its_edge_raises(app, client, state, helper):
    raised: list[tuple[str, str]] = []

    @app.listen(state)
    def misuse(event):
        if acting(event):
            try:
                if helper == "route_found":
                    event.route_found(greet)
                else:
                    getattr(event, helper)()
            except IllegalTransition as ex:
                raised.append((type(ex).__name__, str(ex)))
            event.send("caught")

    response = call(client, state, ACT)
    assert response.status_code == 200
    assert response.text == "caught"
    assert len(raised) == 1
    assert raised[0][0] == "IllegalTransition"
    assert raised[0][1].startswith(f"illegal transition from '{state}'")


@pytest.mark.parametrize(
    ("state", "helper"),
    [("route", "access_denied"), ("auth", "not_found"), ("controller", "not_found")],
    ids=["access_denied-in-route", "not_found-in-auth", "not_found-in-controller"],
)
def test_an_uncaught_helper_misuse_answers_500(app, client, state, helper):
    @app.listen(state)
    def misuse(event):
        if acting(event):
            getattr(event, helper)()

    response = client.get("/hello", headers=ACT)
    assert response.status_code == 500
    assert response.json == INTERNAL
    assert_unaffected(client)


def static_file(event: HttpEvent) -> str:
    return f"file {event.path_params.get('filename')}"


def claim_static(event: HttpEvent) -> None:
    if event.path.startswith("/static/"):
        event.route_found(static_file, {"filename": event.path.removeprefix("/static/")})


def test_route_found_claims_an_unmatched_url_at_101(app, client):
    app.listen("route", claim_static, priority=101)

    response = client.get("/static/css/site.css")
    assert response.status_code == 200
    assert response.text == "file css/site.css"
    assert client.get("/elsewhere").status_code == 404
    assert_unaffected(client)


def test_route_found_with_a_plain_callable_without_path_params(app, client):
    def fallback() -> dict[str, str]:
        return {"claimed": "yes"}

    @app.listen("route", priority=101)
    def claim(event):
        if not event.has_next():
            event.route_found(fallback)

    assert client.get("/anything/at/all").json == {"claimed": "yes"}
    assert client.get("/again").json == {"claimed": "yes"}
    assert_unaffected(client)


def test_route_found_callable_gets_path_params_by_name(app, client):
    def serve(filename: str) -> str:
        return filename

    @app.listen("route", priority=101)
    def claim(event):
        if event.path.startswith("/files/"):
            event.route_found(serve, {"filename": event.path.removeprefix("/files/")})

    response = client.get("/files/a.txt")
    assert response.status_code == 200
    assert response.text == "a.txt"


def test_route_found_sets_route_and_path_params(app, client):
    seen: dict[str, Any] = {}

    @app.listen("route", priority=101)
    def claim(event):
        claim_static(event)

    @app.listen("auth")
    def look(event):
        seen["endpoint"] = event.route.endpoint
        seen["path_params"] = dict(event.path_params)

    assert client.get("/static/a.js").status_code == 200
    assert seen == {"endpoint": static_file, "path_params": {"filename": "a.js"}}


def test_route_found_claims_a_path_of_another_method(app, client):
    @app.listen("route", priority=101)
    def claim(event):
        if not event.has_next() and acting(event):
            event.route_found(static_file, {"filename": "posted"})

    response = client.post("/hello", headers=ACT)
    assert response.status_code == 200
    assert response.text == "file posted"
    assert client.post("/hello").status_code == 405


def test_route_found_with_an_app_route(app, client):
    item_route = next(route for route in app.routes if route.endpoint is item)
    assert isinstance(item_route, Route)

    @app.listen("route", priority=101)
    def alias(event):
        if event.path.startswith("/alias/"):
            event.route_found(item_route, {"id": event.path.removeprefix("/alias/")})

    assert client.get("/alias/5").json == {"id": 5}
    bad = client.get("/alias/five")
    assert bad.status_code == 400
    assert bad.json["errors"][0]["path"] == "id"


def test_a_listener_before_the_kernel_sees_no_route_yet(app, client):
    seen: list[Any] = []

    @app.listen("route")
    def early(event):
        seen.append(event.route)

    @app.listen("route", priority=101)
    def late(event):
        seen.append(event.route.name)

    assert client.get("/hello").status_code == 200
    assert seen == [None, "greet"]


# -- the event's fields ----------------------------------------------------------------------


@http.controller("/shop").group("shop")
class Shop:
    @http.GET("/items/{id}").name("shop-item").group("items", "shop").data("cache", 60)
    def show(self, id: int, event: HttpEvent) -> dict[str, Any]:
        event.store["controller"] = "show"
        return {"id": id, "user": event.store.get("user")}


def test_event_fields_fill_in_as_the_request_advances(make_app):
    app = make_app(controllers=[Shop])
    seen: dict[str, dict[str, Any]] = {}

    def look(event):
        route = event.route
        seen[event.state] = {
            "state": event.state,
            "route": None if route is None else route.name,
            "path_params": dict(event.path_params),
            "parameter names": sorted(event.parameters),
            "result": event.result,
            "response": event.response is not None,
            "error": event.error,
            "sent": event.sent,
        }

    for state in ("request", "route", "auth", "resolve_parameters", "controller", "response"):
        app.listen(state, look, priority=101)

    @app.listen("auth")
    def log_in(event):
        event.store["user"] = "ann"

    response = TestClient(app).get("/shop/items/7")
    assert response.status_code == 200
    assert response.json == {"id": 7, "user": "ann"}
    empty = {"path_params": {}, "parameter names": [], "result": None, "error": None}
    assert seen["request"] == {
        "state": "request",
        "route": None,
        "response": False,
        "sent": False,
        **empty,
    }
    matched = {"route": "shop-item", "path_params": {"id": "7"}, "response": False}
    assert seen["route"] == {**empty, **matched, "state": "route", "sent": False}
    assert seen["auth"] == {**empty, **matched, "state": "auth", "sent": False}
    resolved = {**matched, "parameter names": ["event", "id"], "result": None, "error": None}
    assert seen["resolve_parameters"] == {**resolved, "state": "resolve_parameters", "sent": False}
    assert seen["controller"] == {
        **resolved,
        "state": "controller",
        "result": {"id": 7, "user": "ann"},
        "sent": True,
    }
    assert seen["response"] == {
        **resolved,
        "state": "response",
        "result": {"id": 7, "user": "ann"},
        "response": True,
        "sent": True,
    }


def test_event_route_describes_the_matched_route(make_app):
    app = make_app(controllers=[Shop])
    seen: dict[str, Any] = {}

    @app.listen(http_workflow.on_auth)
    def look(event):
        route = event.route
        seen.update(
            path=route.path,
            methods=tuple(route.methods),
            groups=tuple(route.groups),
            name=route.name,
            data=dict(route.data),
            endpoint=route.endpoint,
            is_route=isinstance(route, Route),
        )

    assert TestClient(app).get("/shop/items/3").status_code == 200
    assert seen == {
        "path": "/shop/items/{id}",
        "methods": ("GET",),
        "groups": ("shop", "items"),
        "name": "shop-item",
        "data": {"cache": 60},
        "endpoint": Shop.show,
        "is_route": True,
    }


def test_event_parameters_are_the_resolved_arguments(app, client):
    seen: list[Any] = []

    @app.listen("controller")
    def look(event):
        seen.append((dict(event.path_params), dict(event.parameters)))

    assert client.get("/items/42").json == {"id": 42}
    assert seen == [({"id": "42"}, {"id": 42})]


def test_event_request_is_a_werkzeug_request(app, client):
    seen: list[Any] = []

    @app.listen("auth")
    def look(event):
        request = event.request
        seen.append(
            (
                isinstance(request, Request),
                isinstance(request, werkzeug.Request),
                request.args.get("name"),
                request is event.request,
            )
        )

    assert client.get("/hello?name=bo").text == "Hello bo"
    assert seen == [(True, True, "bo", True)]


def test_event_response_is_the_rendered_response_in_response(app, client):
    seen: list[Any] = []

    @app.listen("response", priority=-200)
    def before_render(event):
        seen.append(event.response)

    @app.listen("response")
    def after_render(event):
        seen.append((event.response.status, event.response.body))

    assert client.get("/hello").status_code == 200
    assert seen == [None, (200, b"Hello world")]


@pytest.mark.parametrize(
    ("state", "error"),
    [
        ("route_not_found", None),
        ("method_not_allowed", None),
        ("access_denied", "AccessDenied"),
        ("parameters_failed", "ParametersFailed"),
        ("controller_error", "RuntimeError"),
    ],
)
def test_event_error_in_failure_states(app, client, state, error):
    seen: list[Any] = []

    @app.listen(state)
    def look(event):
        seen.append((event.state, type(event.error).__name__ if event.error else None))

    call(client, state)
    assert seen == [(state, error)]


def test_event_error_is_the_raised_exception(app, client):
    seen: list[Any] = []

    @app.listen("controller_error")
    def look(event):
        seen.append((type(event.error).__name__, str(event.error)))

    assert client.get("/boom").status_code == 500
    assert seen == [("RuntimeError", "boom")]


def test_store_is_shared_by_listeners_and_a_controller(app, client):
    seen: list[Any] = []

    @app.listen("request")
    def start(event):
        event.store["trail"] = ["request"]

    @app.listen("auth")
    def log_in(event):
        event.store["trail"].append("auth")
        event.store["user"] = "ann"

    @app.listen("response")
    def finish(event):
        seen.append((event.store["trail"], event.store["controller saw"]))

    response = client.get("/me")
    assert response.json == {"user": "ann", "state": "controller"}
    assert seen == [(["request", "auth"], "ann")]


def test_store_starts_empty_for_every_request(app, client):
    seen: list[dict[str, Any]] = []

    @app.listen("request")
    def look(event):
        seen.append(dict(event.store))
        event.store["mark"] = True

    client.get("/hello")
    client.get("/hello")
    assert seen == [{}, {}]


def test_the_controller_gets_the_listeners_event(app, client):
    ids: list[tuple[str, int]] = []

    @http.GET("/which")
    def which(event: HttpEvent) -> str:
        ids.append(("controller", id(event)))
        return "ok"

    app.add_controller(which)

    @app.listen("auth")
    def look(event):
        ids.append(("auth", id(event)))

    assert client.get("/which").text == "ok"
    assert ids[0][1] == ids[1][1]


# -- listeners assigning result and response -------------------------------------------------


def test_a_listener_may_assign_result_after_the_controller(app, client):
    @app.listen("controller", priority=101)
    def shout(event):
        event.result = event.result.upper()

    assert client.get("/hello").text == "HELLO WORLD"


def test_a_listener_may_assign_result_before_rendering(app, client):
    @app.listen("response", priority=-200)
    def replace(event):
        event.result = {"replaced": event.result}

    response = client.get("/hello")
    assert response.json == {"replaced": "Hello world"}


def test_a_listener_may_assign_response_before_rendering(app, client):
    @app.listen("response", priority=-200)
    def replace(event):
        event.response = HTMLResponse("<p>mine</p>", status=202)

    response = client.get("/hello")
    assert response.status_code == 202
    assert response.text == "<p>mine</p>"


@pytest.mark.parametrize(
    "make_response",
    [
        lambda: JSONResponse({"after": True}, status=201),
        lambda: Response(b"raw", status=201, content_type="text/plain"),
        lambda: werkzeug.Response("wz", status=201, mimetype="text/plain"),
    ],
    ids=["JSONResponse", "Response", "werkzeug.Response"],
)
def test_a_listener_may_replace_the_rendered_response(app, client, make_response):
    @app.listen("response")
    def replace(event):
        if acting(event):
            event.response = make_response()

    response = client.get("/hello", headers=ACT)
    assert response.status_code == 201
    assert_unaffected(client)


def test_a_listener_may_change_the_rendered_response(app, client):
    @app.listen("response")
    def decorate(event):
        event.response.headers["X-Seen"] = event.state

    response = client.get("/hello")
    assert response.headers["X-Seen"] == "response"
    assert response.text == "Hello world"


# -- default responses of the failure states ---------------------------------------------------


def test_route_not_found_answers_404(client):
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json == {"message": "Not Found"}
    assert response.mimetype == "application/json"
    assert_unaffected(client)


def test_method_not_allowed_answers_405_with_allow(client):
    response = client.post("/hello")
    assert response.status_code == 405
    assert response.json == {"message": "Method Not Allowed"}
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert allowed == {"GET", "HEAD", "OPTIONS"}
    assert_unaffected(client)


def test_parameters_failed_answers_400_with_errors(client):
    response = client.get("/items/abc")
    assert response.status_code == 400
    assert response.json == {
        "message": "Bad Request",
        "errors": [{"path": "id", "message": "Expected `int`, got `str`"}],
    }
    assert client.get("/items/1").json == {"id": 1}


def test_a_generic_exception_answers_500_and_is_logged(client, caplog):
    response = client.get("/boom")
    assert response.status_code == 500
    assert response.json == INTERNAL
    assert "boom" not in response.text
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 1
    assert isinstance(logged[0].exc_info[1], RuntimeError)
    assert_unaffected(client)


def test_debug_shows_the_error_in_the_500(make_app):
    client = TestClient(make_app(controllers=[boom], debug=True))
    response = client.get("/boom")
    assert response.status_code == 500
    assert response.json["message"] == "Internal Server Error"
    assert "RuntimeError: boom" in response.text


@pytest.mark.parametrize(
    ("make_error", "status", "body"),
    [
        (lambda: NotFound("no widget"), 404, {"message": "no widget"}),
        (lambda: NotFound(), 404, {"message": "Not Found"}),
        (lambda: BadRequest("why"), 400, {"message": "why"}),
        (lambda: ServiceUnavailable(), 503, {"message": "Service Unavailable"}),
        (lambda: Teapot(), 418, {"message": "I'm a teapot"}),
        (lambda: Teapot("short and stout"), 418, {"message": "short and stout"}),
        (lambda: werkzeug.exceptions.Conflict("taken"), 409, {"message": "taken"}),
        (lambda: werkzeug.exceptions.ImATeapot("wz teapot"), 418, {"message": "wz teapot"}),
    ],
    ids=[
        "NotFound-message",
        "NotFound",
        "BadRequest",
        "ServiceUnavailable",
        "subclass",
        "subclass-message",
        "werkzeug-Conflict",
        "werkzeug-ImATeapot",
    ],
)
def test_a_raised_http_error_keeps_its_status(make_app, make_error, status, body):
    # A fresh exception per request: a raised one keeps its traceback, and so the request.
    @http.GET("/fail")
    def fail() -> str:
        raise make_error()

    client = TestClient(make_app(controllers=[fail, greet]))
    response = client.get("/fail")
    assert response.status_code == status
    assert response.json == body
    assert response.mimetype == "application/json"
    assert_unaffected(client)


def test_a_werkzeug_http_exception_without_description_keeps_its_status(make_app):
    @http.GET("/gone")
    def gone() -> str:
        raise werkzeug.exceptions.Gone()

    response = TestClient(make_app(controllers=[gone])).get("/gone")
    assert response.status_code == 410
    assert set(response.json) == {"message"}


@pytest.mark.parametrize("state", BEFORE_RESPONSE)
@pytest.mark.parametrize(
    ("make_error", "status", "body"),
    [
        (lambda: RuntimeError("hidden"), 500, INTERNAL),
        (lambda: Teapot(), 418, {"message": "I'm a teapot"}),
        (lambda: werkzeug.exceptions.Conflict("taken"), 409, {"message": "taken"}),
    ],
    ids=["RuntimeError", "HTTPError", "werkzeug"],
)
def test_an_exception_in_a_listener_routes_to_controller_error(
    app, client, state, make_error, status, body
):
    routed: list[tuple[str, str]] = []

    @app.listen(state)
    def fail(event):
        if acting(event):
            raise make_error()

    @app.listen("controller_error")
    def look(event):
        routed.append((event.state, type(event.error).__name__))

    response = client.get("/hello", headers=ACT)
    assert response.status_code == status
    assert response.json == body
    assert routed == [("controller_error", type(make_error()).__name__)]
    assert_unaffected(client)


@pytest.mark.parametrize("state", FAILURE_STATES)
def test_an_exception_in_a_failure_state_answers_the_last_resort_500(app, client, caplog, state):
    @app.listen(state)
    def fail(event):
        if acting(event):
            raise RuntimeError("failure in failure")

    response = call(client, state, ACT)
    assert response.status_code == 500
    assert response.json == INTERNAL
    assert any(f"state '{state}'" in message for message in error_logs(caplog))
    assert_unaffected(client)
    assert (
        call(client, state).status_code
        == {
            "route_not_found": 404,
            "method_not_allowed": 405,
            "access_denied": 403,
            "parameters_failed": 400,
            "controller_error": 500,
        }[state]
    )


@pytest.mark.parametrize("priority", [-200, 0])
def test_an_exception_in_response_answers_the_last_resort_500(app, client, caplog, priority):
    @app.listen("response", priority=priority)
    def fail(event):
        if acting(event):
            raise ValueError("render failed")

    response = client.get("/hello", headers=ACT)
    assert response.status_code == 500
    assert response.json == INTERNAL
    assert any("state 'response'" in message for message in error_logs(caplog))
    assert_unaffected(client)


def test_an_unrenderable_result_answers_500(app, client):
    @app.listen("controller", priority=101)
    def spoil(event):
        if acting(event):
            event.result = object()

    response = client.get("/hello", headers=ACT)
    assert response.status_code == 500
    assert response.json == INTERNAL
    assert_unaffected(client)


# -- stalls and loops -----------------------------------------------------------------------


@pytest.mark.parametrize("state", NON_TERMINAL)
def test_a_stall_answers_500_and_is_logged(app, client, caplog, state):
    @app.listen(state)
    def stop_without_choosing(event):
        if acting(event):
            event.stop_propagation()

    response = call(client, state, ACT)
    assert response.status_code == 500
    assert response.json == INTERNAL
    assert any(f"workflow stalled in state '{state}'" in m for m in error_logs(caplog))
    assert_unaffected(client)


def test_a_stall_after_clear_next_answers_500(app, client, caplog):
    @app.listen("auth", priority=101)
    def undo(event):
        event.clear_next()

    response = client.get("/hello")
    assert response.status_code == 500
    assert response.json == INTERNAL
    assert any("workflow stalled in state 'auth'" in m for m in error_logs(caplog))


def test_too_many_moves_answer_500_and_are_logged_as_a_loop(make_app, caplog):
    client = TestClient(make_app(controllers=[greet], limits=Limits(max_hops=2)))
    response = client.get("/hello")
    assert response.status_code == 500
    assert response.json == INTERNAL
    assert any("loop" in message for message in error_logs(caplog))
    assert not any("stalled" in message for message in error_logs(caplog))


def test_moves_within_max_hops_are_answered(make_app):
    app = make_app(controllers=[greet], limits=Limits(max_hops=2))

    @app.listen("request")
    def short_cut(event):
        if acting(event):
            event.send("one move")

    client = TestClient(app)
    assert client.get("/hello", headers=ACT).text == "one move"
    assert client.get("/hello").status_code == 500
    assert client.get("/hello", headers=ACT).text == "one move"


def test_the_default_max_hops_serves_every_built_in_path(client):
    assert client.get("/hello").status_code == 200
    assert client.get("/boom").status_code == 500
    assert client.get("/items/x").status_code == 400


def test_a_stall_is_shown_only_with_debug(make_app):
    def stop(event):
        event.stop_propagation()

    loud = make_app(controllers=[greet], debug=True)
    loud.listen("auth", stop)
    response = TestClient(loud).get("/hello")
    assert response.status_code == 500
    assert response.json["message"] == "Internal Server Error"
    assert "workflow stalled in state 'auth'" in response.text


def test_next_in_response_raises_and_answers_500(app, client):
    raised: list[str] = []

    @app.listen("response")
    def illegal(event):
        if acting(event):
            try:
                event.next("route")
            except IllegalTransition as ex:
                raised.append(str(ex))
                raise

    response = client.get("/hello", headers=ACT)
    assert response.status_code == 500
    assert response.json == INTERNAL
    assert raised and raised[0].startswith("illegal transition from 'response' to 'route'")
    assert_unaffected(client)


# -- exceptions that are never swallowed ------------------------------------------------------


@pytest.mark.parametrize(
    "error_class", [KeyboardInterrupt, SystemExit, GeneratorExit], ids=lambda c: c.__name__
)
@pytest.mark.parametrize("state", ["request", "auth", "controller", "controller_error", "response"])
def test_base_exceptions_reach_the_server(app, client, state, error_class):
    @app.listen(state)
    def interrupt(event):
        if acting(event):
            raise error_class()

    path = "/boom" if state == "controller_error" else "/hello"
    with pytest.raises(error_class):
        client.get(path, headers=ACT)
    assert_unaffected(client)


def test_a_controller_raising_keyboard_interrupt_reaches_the_server(make_app):
    @http.GET("/stop")
    def stop() -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        TestClient(make_app(controllers=[stop])).get("/stop")


# -- no transitions objects per request ------------------------------------------------------


def test_no_transitions_machine_is_built_per_request(app, client, monkeypatch):
    import transitions

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a transitions Machine was built during a request")

    monkeypatch.setattr(transitions.Machine, "__init__", refuse)
    assert client.get("/hello").text == "Hello world"
    assert client.get("/nope").status_code == 404
    assert client.get("/boom").status_code == 500
