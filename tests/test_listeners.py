"""Listeners: their order, stop_propagation, tokens, the ways to register them, and isolation.

DESIGN.md §3: lower priority runs first, ties in registration order; users default to 0, the
kernel sits at 100, response rendering at -100 and the route fallback at 1000.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from workflowhttp import (
    App,
    HTMLResponse,
    HttpEvent,
    JSONResponse,
    Response,
    http,
    http_workflow,
    listener,
)
from workflowhttp.testing import TestClient

ACT = {"X-Act": "1"}

STATES = [
    "request",
    "route",
    "route_not_found",
    "method_not_allowed",
    "auth",
    "resolve_parameters",
    "controller",
    "access_denied",
    "parameters_failed",
    "controller_error",
    "response",
]


@http.GET("/hello")
def greet(name: str = "world") -> str:
    return f"Hello {name}"


@http.GET("/items/{id}")
def item(id: int) -> dict[str, int]:
    return {"id": id}


@http.GET("/boom")
def boom() -> str:
    raise RuntimeError("boom")


@http.controller("/admin").group("secret")
class AdminController:
    @http.GET("/")
    def index(self) -> str:
        return "admin"


# How to reach each state: (method, path, headers). access_denied needs the deny listener below.
REACH: dict[str, tuple[str, str]] = {
    "request": ("GET", "/hello"),
    "route": ("GET", "/hello"),
    "auth": ("GET", "/hello"),
    "resolve_parameters": ("GET", "/hello"),
    "controller": ("GET", "/hello"),
    "response": ("GET", "/hello"),
    "route_not_found": ("GET", "/nope"),
    "method_not_allowed": ("POST", "/hello"),
    "access_denied": ("GET", "/admin"),
    "parameters_failed": ("GET", "/items/abc"),
    "controller_error": ("GET", "/boom"),
}


@pytest.fixture
def app(make_app) -> App:
    app = make_app(controllers=[greet, item, boom, AdminController])

    @app.listen(http_workflow.on_auth, priority=-1000)
    def deny_secret(event):
        if "secret" in event.route.groups:
            event.access_denied()

    return app


@pytest.fixture
def client(app: App) -> TestClient:
    return TestClient(app)


def acting(event: HttpEvent) -> bool:
    return event.environ.get("HTTP_X_ACT") == "1"


def assert_unaffected(client: TestClient) -> None:
    response = client.get("/hello")
    assert response.status_code == 200
    assert response.text == "Hello world"


def recorder(log: list[Any], label: Any):
    def record(event: HttpEvent) -> None:
        log.append(label)

    return record


# -- order ----------------------------------------------------------------------------------


def test_lower_priority_runs_first(app, client):
    order: list[int] = []
    for priority in (5, -5, 50, 0, -50, 3):
        app.listen("auth", recorder(order, priority), priority=priority)

    assert client.get("/hello").status_code == 200
    assert order == [-50, -5, 0, 3, 5, 50]


def test_equal_priorities_run_in_registration_order(app, client):
    order: list[str] = []
    for label in ("first", "second", "third", "fourth"):
        app.listen("controller", recorder(order, label), priority=7)

    assert client.get("/hello").status_code == 200
    assert order == ["first", "second", "third", "fourth"]


def test_order_mixes_priorities_and_ties(app, client):
    order: list[str] = []
    app.listen("request", recorder(order, "b@1"), priority=1)
    app.listen("request", recorder(order, "a@0"))
    app.listen("request", recorder(order, "c@1"), priority=1)
    app.listen("request", recorder(order, "d@-1"), priority=-1)
    app.listen("request", recorder(order, "e@0"))

    assert client.get("/hello").status_code == 200
    assert order == ["d@-1", "a@0", "e@0", "b@1", "c@1"]


def test_order_is_the_same_for_every_request(app, client):
    order: list[str] = []
    app.listen("route", recorder(order, "late"), priority=2)
    app.listen("route", recorder(order, "early"), priority=1)

    client.get("/hello")
    client.get("/nope")
    assert order == ["early", "late", "early", "late"]


def test_user_default_priority_runs_before_the_kernel(app, client):
    seen: list[tuple[str, Any]] = []

    @app.listen("route")
    def before_routing(event):
        seen.append(("route", event.route))

    @app.listen("controller")
    def before_controller(event):
        seen.append(("controller", event.result))

    assert client.get("/hello").text == "Hello world"
    assert seen == [("route", None), ("controller", None)]


def test_a_listener_at_101_runs_after_the_kernel(app, client):
    seen: list[tuple[str, Any]] = []

    @app.listen("route", priority=101)
    def after_routing(event):
        seen.append(("route", event.route.name))

    @app.listen("resolve_parameters", priority=101)
    def after_resolving(event):
        seen.append(("resolve_parameters", dict(event.parameters)))

    @app.listen("controller", priority=101)
    def after_controller(event):
        seen.append(("controller", event.result))

    assert client.get("/hello?name=al").text == "Hello al"
    assert seen == [
        ("route", "greet"),
        ("resolve_parameters", {"name": "al"}),
        ("controller", "Hello al"),
    ]


def test_a_user_listener_at_100_runs_after_the_kernel_registered_before_it(app, client):
    seen: list[Any] = []

    @app.listen("controller", priority=100)
    def tie(event):
        seen.append(event.result)

    assert client.get("/hello").status_code == 200
    assert seen == ["Hello world"]


def test_the_route_fallback_runs_at_1000(app, client):
    seen: list[tuple[int, bool]] = []
    app.listen("route", lambda event: seen.append((999, event.has_next())), priority=999)
    app.listen("route", lambda event: seen.append((1001, event.has_next())), priority=1001)

    assert client.get("/nope").status_code == 404
    assert seen == [(999, False), (1001, True)]


def test_rendering_runs_at_minus_100(app, client):
    seen: list[tuple[int, bool]] = []
    app.listen("response", lambda event: seen.append((-101, event.response is None)), priority=-101)
    app.listen("response", lambda event: seen.append((-99, event.response is None)), priority=-99)

    assert client.get("/hello").status_code == 200
    assert seen == [(-101, True), (-99, False)]


def test_a_user_listener_can_take_over_a_kernel_step(app, client):
    @app.listen("route")
    def reroute(event):
        if event.path == "/legacy":
            event.route_found(greet)

    assert client.get("/legacy").text == "Hello world"
    assert client.get("/legacy?name=old").text == "Hello old"


def test_a_user_listener_can_take_over_routing_of_a_matched_path(app, client):
    @app.listen("route")
    def reroute(event):
        if event.path == "/items/1":
            event.route_found(greet)

    assert client.get("/items/1").text == "Hello world"
    assert client.get("/items/2").json == {"id": 2}


def test_a_user_listener_can_take_over_parameter_resolution(app, client):
    @app.listen("resolve_parameters")
    def resolve(event):
        if event.route.endpoint is item:
            event.parameters = {"id": 99}
            event.next("controller")

    assert client.get("/items/abc").json == {"id": 99}
    assert client.get("/hello?name=x").text == "Hello x"


def test_a_user_listener_can_take_over_the_controller(app, client):
    @app.listen("controller")
    def answer(event):
        if event.route.endpoint is boom:
            event.result = {"defused": True}
            event.next("response")

    response = client.get("/boom")
    assert response.status_code == 200
    assert response.json == {"defused": True}


# -- stop_propagation ------------------------------------------------------------------------


def test_stop_propagation_skips_the_rest_of_the_state_only(app, client):
    seen: list[str] = []

    @app.listen("request")
    def take_over(event):
        event.next("route")
        event.stop_propagation()
        seen.append("request: stopped")

    app.listen("request", recorder(seen, "request: skipped"), priority=1)
    app.listen("route", recorder(seen, "route: runs"))
    app.listen("auth", recorder(seen, "auth: runs"))

    assert client.get("/hello").text == "Hello world"
    assert seen == ["request: stopped", "route: runs", "auth: runs"]


def test_stop_propagation_keeps_the_scheduled_next(app, client):
    skipped: list[str] = []

    @app.listen("auth")
    def deny_and_stop(event):
        if acting(event):
            event.access_denied("stopped here")
            event.stop_propagation()

    app.listen("auth", recorder(skipped, "skipped"), priority=1)

    response = client.get("/hello", headers=ACT)
    assert response.status_code == 403
    assert response.json == {"message": "stopped here"}
    assert skipped == []
    assert_unaffected(client)
    assert skipped == ["skipped"]


def test_stop_propagation_after_send_skips_the_controller(app, client):
    calls: list[str] = []

    @http.GET("/counted")
    def counted() -> str:
        calls.append("controller")
        return "from controller"

    app.add_controller(counted)

    @app.listen("controller")
    def answer(event):
        if acting(event):
            event.send("from listener")
            event.stop_propagation()

    assert client.get("/counted", headers=ACT).text == "from listener"
    assert calls == []
    assert client.get("/counted").text == "from controller"


def test_stop_propagation_after_the_kernel_skips_later_listeners(app, client):
    seen: list[str] = []

    @app.listen("controller", priority=101)
    def stop(event):
        event.stop_propagation()

    app.listen("controller", recorder(seen, "skipped"), priority=102)
    app.listen("response", recorder(seen, "response"))

    assert client.get("/hello").text == "Hello world"
    assert seen == ["response"]


def test_stop_propagation_does_not_carry_into_the_next_request(app, client):
    seen: list[str] = []

    @app.listen("request")
    def maybe_stop(event):
        if acting(event):
            event.send("stopped")
            event.stop_propagation()

    app.listen("request", recorder(seen, "second"), priority=1)

    assert client.get("/hello", headers=ACT).text == "stopped"
    assert seen == []
    assert client.get("/hello").text == "Hello world"
    assert seen == ["second"]


# -- tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("state", STATES)
def test_there_is_a_token_for_every_state(state):
    token = getattr(http_workflow, f"on_{state}")
    assert token is getattr(http_workflow, f"on_{state}")


def test_an_unknown_token_is_an_attribute_error():
    with pytest.raises(AttributeError, match="on_nope"):
        http_workflow.on_nope  # noqa: B018


@pytest.mark.parametrize("form", ["token", "name"])
@pytest.mark.parametrize("state", STATES)
def test_a_listener_runs_in_its_state(app, client, state, form):
    seen: list[str] = []
    token = getattr(http_workflow, f"on_{state}") if form == "token" else state
    app.listen(token, lambda event: seen.append(event.state))

    method, path = REACH[state]
    client.open(path, method=method)
    assert seen == [state]


def test_a_request_passes_through_its_states_in_order(app, client):
    seen: list[str] = []
    for state in STATES:
        app.listen(getattr(http_workflow, f"on_{state}"), lambda event: seen.append(event.state))

    client.get("/hello")
    client.get("/nope")
    client.get("/boom")
    assert seen == [
        *["request", "route", "auth", "resolve_parameters", "controller", "response"],
        *["request", "route", "route_not_found", "response"],
        *["request", "route", "auth", "resolve_parameters", "controller", "controller_error"],
        "response",
    ]


# -- registration forms ----------------------------------------------------------------------


def test_listen_as_a_decorator_returns_the_function(app, client):
    def mark(event):
        event.store["marked"] = True

    assert app.listen(http_workflow.on_auth)(mark) is mark
    assert app.listen("auth", priority=3)(mark) is mark


def test_listen_direct_form_returns_the_function(app):
    def mark(event):
        pass

    assert app.listen(http_workflow.on_auth, mark) is mark
    assert app.listen("auth", mark, priority=-3) is mark


def test_listen_direct_form_with_priority(app, client):
    order: list[str] = []

    def late(event):
        order.append("late")

    def early(event):
        order.append("early")

    app.listen(http_workflow.on_auth, late, priority=20)
    app.listen(http_workflow.on_auth, early, priority=10)
    client.get("/hello")
    assert order == ["early", "late"]


def test_the_design_example_listeners(make_app):
    app = make_app(controllers=[greet, AdminController])

    @app.listen(http_workflow.on_controller)
    def deny_secret(event):
        if "secret" in event.route.groups:
            event.access_denied()

    @app.listen(http_workflow.on_access_denied, priority=50)
    def custom_403(event):
        event.send(HTMLResponse("<h1>No entry</h1>", status=403))

    client = TestClient(app)
    response = client.get("/admin")
    assert response.status_code == 403
    assert response.text == "<h1>No entry</h1>"
    assert response.mimetype == "text/html"
    assert_unaffected(client)


def test_a_listener_added_after_requests_applies_to_the_next_one(app, client):
    assert_unaffected(client)
    app.listen("request", lambda event: event.send("new listener"))
    assert client.get("/hello").text == "new listener"


def test_listener_with_optional_extra_arguments_is_accepted(app, client):
    seen: list[Any] = []

    def flexible(event, extra=None, *args, **kwargs):
        seen.append((event.state, extra))

    app.listen("auth", flexible)
    client.get("/hello")
    assert seen == [("auth", None)]


# -- class listeners and listener objects ----------------------------------------------------


class UserStore:
    def __init__(self) -> None:
        self.users = {"tok-ann": "ann"}


class AuthListener:
    built: list[UserStore] = []

    def __init__(self, users: UserStore) -> None:
        self.users = users
        AuthListener.built.append(users)

    @listener(http_workflow.on_auth, priority=10)
    def check(self, event: HttpEvent) -> None:
        token = event.environ.get("HTTP_AUTHORIZATION", "")
        user = self.users.users.get(token)
        if user is None:
            event.access_denied("who are you?")
        event.store["user"] = user

    @listener("response")
    def tag(self, event: HttpEvent) -> None:
        event.response.headers["X-User"] = event.store.get("user") or "-"


@http.GET("/whoami")
def whoami(event: HttpEvent) -> dict[str, Any]:
    return {"user": event.store["user"]}


@pytest.fixture
def built() -> Any:
    AuthListener.built = []
    yield AuthListener.built
    AuthListener.built = []


def test_a_class_listener_is_built_once_with_injected_services(make_app, built):
    store = UserStore()
    app = make_app(controllers=[whoami], listeners=[AuthListener], providers=[store])
    client = TestClient(app)

    response = client.get("/whoami", headers={"Authorization": "tok-ann"})
    assert response.status_code == 200
    assert response.json == {"user": "ann"}
    assert response.headers["X-User"] == "ann"
    denied = client.get("/whoami")
    assert denied.status_code == 403
    assert denied.json == {"message": "who are you?"}
    assert denied.headers["X-User"] == "-"
    assert client.get("/whoami", headers={"Authorization": "tok-ann"}).status_code == 200
    assert built == [store]


def test_a_class_listener_gets_a_provided_class(make_app, built):
    app = make_app(controllers=[whoami], listeners=[AuthListener], providers=[UserStore])
    assert len(built) <= 1
    client = TestClient(app)
    assert client.get("/whoami", headers={"Authorization": "tok-ann"}).json == {"user": "ann"}
    assert client.get("/whoami", headers={"Authorization": "tok-ann"}).json == {"user": "ann"}
    assert len(built) == 1
    assert isinstance(built[0], UserStore)


def test_class_listener_priorities_interleave_with_function_listeners(make_app, built):
    order: list[str] = []
    app = make_app(controllers=[whoami], listeners=[AuthListener], providers=[UserStore])
    app.listen(
        "auth", lambda event: order.append(f"fn@9 user={event.store.get('user')}"), priority=9
    )
    app.listen(
        "auth", lambda event: order.append(f"fn@11 user={event.store.get('user')}"), priority=11
    )

    TestClient(app).get("/whoami", headers={"Authorization": "tok-ann"})
    assert order == ["fn@9 user=None", "fn@11 user=ann"]


def test_a_listener_instance_is_used_as_is(make_app, built):
    instance = AuthListener(UserStore())
    app = make_app(controllers=[whoami], listeners=[instance])
    client = TestClient(app)
    assert client.get("/whoami", headers={"Authorization": "tok-ann"}).json == {"user": "ann"}
    assert client.get("/whoami").status_code == 403
    assert len(built) == 1


class Counter:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @listener("request")
    @listener(http_workflow.on_response, priority=-200)
    def both(self, event: HttpEvent) -> None:
        self.seen.append(event.state)


def test_one_method_may_listen_to_several_states(make_app):
    counter = Counter()
    client = TestClient(make_app(listeners=[counter]))
    assert client.get("/hello").status_code == 200
    assert counter.seen == ["request", "response"]


@listener("request", priority=-5)
def stamp(event: HttpEvent) -> None:
    event.store["stamped"] = True


def test_a_marked_function_is_a_listener(make_app):
    seen: list[Any] = []
    app = make_app(listeners=[stamp])
    app.listen("request", lambda event: seen.append(event.store.get("stamped")), priority=-6)
    app.listen("request", lambda event: seen.append(event.store.get("stamped")))

    assert TestClient(app).get("/hello").status_code == 200
    assert seen == [None, True]


def test_add_listener_after_the_build(make_app, built):
    app = make_app(controllers=[whoami], providers=[UserStore])
    client = TestClient(app)
    assert client.get("/whoami").status_code == 500  # no listener filled the store
    app.add_listener(AuthListener)
    assert client.get("/whoami", headers={"Authorization": "tok-ann"}).json == {"user": "ann"}
    assert client.get("/whoami").status_code == 403


# -- several apps, isolation -----------------------------------------------------------------


@http.controller("/notes")
class Notes:
    def __init__(self, store: UserStore) -> None:
        self.store = store

    @http.GET("/{id}")
    def show(self, id: int) -> dict[str, Any]:
        return {"id": id}


def test_several_apps_share_controllers_without_interference(make_app, built):
    plain = make_app(controllers=[greet, Notes], providers=[UserStore])
    guarded = make_app(
        controllers=[greet, Notes, whoami], listeners=[AuthListener], providers=[UserStore]
    )

    @guarded.listen("controller", priority=101)
    def shout(event):
        if isinstance(event.result, str):
            event.result = event.result.upper()

    plain_client = TestClient(plain)
    guarded_client = TestClient(guarded)
    auth = {"Authorization": "tok-ann"}

    assert plain_client.get("/hello").text == "Hello world"
    assert guarded_client.get("/hello").status_code == 403
    assert guarded_client.get("/hello", headers=auth).text == "HELLO WORLD"
    assert plain_client.get("/hello").text == "Hello world"
    assert plain_client.get("/notes/1").json == {"id": 1}
    assert guarded_client.get("/notes/2", headers=auth).json == {"id": 2}
    assert plain_client.get("/whoami").status_code == 404
    assert "X-User" not in plain_client.get("/notes/3").headers
    assert len(built) == 1


def test_a_class_listener_is_built_once_per_app(make_app, built):
    first = make_app(controllers=[whoami], listeners=[AuthListener], providers=[UserStore])
    second = make_app(controllers=[whoami], listeners=[AuthListener], providers=[UserStore])
    for app in (first, second, first, second):
        response = TestClient(app).get("/whoami", headers={"Authorization": "tok-ann"})
        assert response.json == {"user": "ann"}
    assert len(built) == 2
    assert built[0] is not built[1]


def test_listening_on_one_app_does_not_touch_another(make_app):
    first = make_app()
    second = make_app()
    first.listen("request", lambda event: event.send("first only"))

    assert TestClient(first).get("/hello").text == "first only"
    assert TestClient(second).get("/hello").text == "Hello world"


def test_decorating_routes_registers_nothing_globally(make_app):
    @http.GET("/local")
    def local() -> str:
        return "local"

    assert TestClient(make_app()).get("/local").status_code == 404
    assert TestClient(make_app(controllers=[local])).get("/local").text == "local"


# -- the next request after a failure ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("POST", "/hello", 405),
        ("GET", "/admin", 403),
        ("GET", "/items/abc", 400),
        ("GET", "/boom", 500),
    ],
    ids=["404", "405", "403", "400", "500"],
)
def test_the_next_request_after_a_failure_is_unaffected(app, client, method, path, status):
    seen: list[tuple[Any, ...]] = []

    @app.listen("request")
    def fresh(event):
        seen.append((event.route, event.error, event.result, dict(event.store)))
        event.store["dirty"] = True

    assert client.open(path, method=method).status_code == status
    assert_unaffected(client)
    assert client.get("/items/5").json == {"id": 5}
    assert seen == [(None, None, None, {})] * 3


def test_a_failing_listener_does_not_break_later_requests(app, client):
    calls: list[int] = []

    @app.listen("auth")
    def flaky(event):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first call fails")

    assert client.get("/hello").status_code == 500
    assert_unaffected(client)
    assert_unaffected(client)
    assert len(calls) == 3


class _DeclaredOrder:
    """Methods of equal priority, declared in non-alphabetical order."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @listener(http_workflow.on_request)
    def zulu(self, event):
        self.seen.append("zulu")

    @listener(http_workflow.on_request)
    def alpha(self, event):
        self.seen.append("alpha")

    @listener(http_workflow.on_request)
    def mike(self, event):
        self.seen.append("mike")


@pytest.mark.parametrize("given", ["instance", "class"])
def test_a_listener_class_runs_equal_priorities_in_declaration_order(given):
    # Fails on the old code: inspect.getmembers() sorted the methods by name.
    instance = _DeclaredOrder()
    given_item = instance if given == "instance" else _DeclaredOrder
    app = App(controllers=[greet], listeners=[given_item])
    client = TestClient(app)
    assert client.get("/hello").status_code == 200
    names = [getattr(fn, "__name__", "") for fn in app.listeners("request")[:3]]
    assert names == ["zulu", "alpha", "mike"]
    if given == "instance":
        assert instance.seen == ["zulu", "alpha", "mike"]


# -- what a listener returns is never ignored ---------------------------------------------------


def test_a_listener_returning_a_response_sends_it():
    # Fails on the old code: the returned response was silently dropped (the 404 went out).
    app = App(controllers=[greet])

    @app.listen(http_workflow.on_route_not_found)
    def friendly_404(event):
        return JSONResponse({"message": "Nothing here", "path": event.path}, 404)

    answer = TestClient(app).get("/nowhere")
    assert (answer.status_code, answer.json) == (
        404,
        {"message": "Nothing here", "path": "/nowhere"},
    )


def test_a_response_listener_returning_a_response_replaces_it():
    app = App(controllers=[greet])

    @app.listen(http_workflow.on_response)
    def replace(event):
        return Response("replaced", status=202)

    answer = TestClient(app).get("/hello")
    assert (answer.status_code, answer.text) == (202, "replaced")


@pytest.mark.parametrize(
    "value", [{"a": 1}, "text", 0, False], ids=["dict", "str", "zero", "false"]
)
def test_a_listener_returning_anything_else_is_a_logged_500_naming_it(caplog, value):
    app = App(controllers=[greet])

    @app.listen(http_workflow.on_auth)
    def oops(event):
        return value

    with caplog.at_level(logging.ERROR):
        answer = TestClient(app).get("/hello")
    assert answer.status_code == 500
    assert (
        "listener test_a_listener_returning_anything_else_is_a_logged_500_naming_it.<locals>.oops"
        in caplog.text
    )
    assert f"returned a {type(value).__qualname__}" in caplog.text
