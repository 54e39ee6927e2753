"""Middleware: the incoming/outgoing chain, short-circuits, errors, filters, forms, injection.

The contract is the docstring of ``workflowhttp/middleware/__init__.py``: unfiltered global
middlewares run in ``request``; filtered global ones, a controller's and a route's run in
``auth`` once the route is known; by priority, then global → controller → route, then
registration order. Outgoing steps run in reverse in ``response`` for every middleware reached.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from werkzeug.wrappers import Response as WerkzeugResponse

from workflowhttp import (
    AccessDenied,
    App,
    ConfigurationError,
    Conflict,
    HttpEvent,
    JSONResponse,
    Limits,
    NotFound,
    Response,
    http,
    http_workflow,
)
from workflowhttp.middleware import Middleware
from workflowhttp.testing import TestClient

RUNNERS = {
    "request": "run_global_middlewares",
    "auth": "run_route_middlewares",
    "response": "run_outgoing",
}


class Trace:
    """A middleware instance that records its steps in a shared log.

    ``answer`` is what its incoming step returns (``None``: carry on).
    """

    def __init__(self, name: str, log: list[str], answer: Any = None) -> None:
        self.name = name
        self.log = log
        self.answer = answer

    def incoming(self, event: HttpEvent) -> Any:
        self.log.append(f"in:{self.name}")
        return self.answer

    def outgoing(self, event: HttpEvent) -> None:
        self.log.append(f"out:{self.name}")


class Tag:
    """A middleware that notes its name in ``event.store["ran"]`` (incoming only)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def incoming(self, event: HttpEvent) -> None:
        event.store.setdefault("ran", []).append(self.name)


class ReportRan:
    """Send the names the ``Tag`` middlewares noted as the ``X-Ran`` header."""

    def outgoing(self, event: HttpEvent) -> None:
        event.response.headers["X-Ran"] = ",".join(event.store.get("ran", []))


def runner_names(app: App, state: str) -> list[str]:
    return [getattr(function, "__name__", "") for function in app.listeners(state)]


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "workflowhttp" and r.levelno >= logging.ERROR]


# -- order -------------------------------------------------------------------------------------


def test_chain_runs_global_then_controller_then_route_and_back_in_reverse() -> None:
    log: list[str] = []

    @http.controller("/shop").middleware(Trace("controller", log))
    class Shop:
        @http.GET("/items").middleware(Trace("route", log))
        def items(self) -> str:
            log.append("controller")
            return "items"

    app = App(
        controllers=[Shop],
        middlewares=[
            Trace("global", log),
            Middleware(Trace("filtered-global", log), paths=["/shop/*"]),
        ],
    )
    response = TestClient(app).get("/shop/items")
    assert (response.status_code, response.text) == (200, "items")
    assert log == [
        "in:global",
        "in:filtered-global",
        "in:controller",
        "in:route",
        "controller",
        "out:route",
        "out:controller",
        "out:filtered-global",
        "out:global",
    ]


def test_global_incoming_runs_in_request_and_route_ones_in_auth() -> None:
    seen: list[tuple[str, str, str | None]] = []

    class Where:
        def __init__(self, name: str) -> None:
            self.name = name

        def incoming(self, event: HttpEvent) -> None:
            route = event.route.name if event.route is not None else None
            seen.append((self.name, event.state, route))

        def outgoing(self, event: HttpEvent) -> None:
            seen.append((self.name, event.state, event.route.name))

    @http.GET("/x").name("x").middleware(Where("route"))
    def x() -> str:
        return "x"

    app = App(controllers=[x], middlewares=[Where("global"), Middleware(Where("f"), names=["x"])])
    assert TestClient(app).get("/x").status_code == 200
    assert seen == [
        ("global", "request", None),
        ("f", "auth", "x"),
        ("route", "auth", "x"),
        ("route", "response", "x"),
        ("f", "response", "x"),
        ("global", "response", "x"),
    ]


def test_priority_reorders_globals_and_ties_keep_registration_order() -> None:
    log: list[str] = []

    @http.GET("/x")
    def x() -> str:
        return "x"

    app = App(
        controllers=[x],
        middlewares=[
            Trace("a", log),
            Middleware(Trace("late", log), priority=10),
            Trace("b", log),
            Middleware(Trace("early", log), priority=-10),
            Trace("c", log),
        ],
    )
    TestClient(app).get("/x")
    assert log == [
        "in:early",
        "in:a",
        "in:b",
        "in:c",
        "in:late",
        "out:late",
        "out:c",
        "out:b",
        "out:a",
        "out:early",
    ]


def test_priority_reorders_route_level_middlewares_across_levels() -> None:
    log: list[str] = []

    @http.controller("/c").middleware(
        Middleware(Trace("controller+5", log), priority=5), Trace("controller", log)
    )
    class C:
        @(
            http.GET("/x")
            .middleware(Trace("route-1", log))
            .middleware(Trace("route-2", log), Middleware(Trace("route-5", log), priority=-5))
        )
        def x(self) -> str:
            return "x"

    app = App(controllers=[C], middlewares=[Middleware(Trace("global", log), paths=["/c/*"])])
    TestClient(app).get("/c/x")
    incoming = [entry for entry in log if entry.startswith("in:")]
    assert incoming == [
        "in:route-5",
        "in:global",
        "in:controller",
        "in:route-1",
        "in:route-2",
        "in:controller+5",
    ]
    outgoing = [entry.removeprefix("out:") for entry in log if entry.startswith("out:")]
    assert outgoing == [entry.removeprefix("in:") for entry in reversed(incoming)]


def test_an_unfiltered_global_runs_before_route_ones_whatever_their_priority() -> None:
    """Unfiltered globals run in ``request``, before the route is even known."""
    log: list[str] = []

    @http.GET("/x").middleware(Middleware(Trace("route", log), priority=-1000))
    def x() -> str:
        return "x"

    app = App(controllers=[x], middlewares=[Middleware(Trace("global", log), priority=1000)])
    TestClient(app).get("/x")
    assert log == ["in:global", "in:route", "out:route", "out:global"]


# -- short-circuit -----------------------------------------------------------------------------


def test_a_global_incoming_that_answers_ends_the_chain() -> None:
    log: list[str] = []

    @http.GET("/x").middleware(Trace("route", log))
    def x() -> str:
        log.append("controller")
        return "x"

    gate = Trace("gate", log, answer=JSONResponse({"message": "maintenance"}, 503))
    app = App(controllers=[x], middlewares=[Trace("first", log), gate, Trace("after", log)])
    response = TestClient(app).get("/x")
    assert (response.status_code, response.json) == (503, {"message": "maintenance"})
    assert log == ["in:first", "in:gate", "out:gate", "out:first"]


def test_a_route_incoming_that_answers_ends_the_chain() -> None:
    log: list[str] = []
    calls: list[str] = []

    @http.controller("/c").middleware(Trace("controller", log))
    class C:
        def __init__(self) -> None:
            calls.append("built")

        @http.GET("/x").middleware(
            Trace("gate", log, answer=Response("cached", headers={"X-Cache": "hit"})),
            Trace("after", log),
        )
        def x(self) -> str:
            calls.append("called")
            return "fresh"

    app = App(controllers=[C], middlewares=[Trace("global", log)])
    response = TestClient(app).get("/c/x")
    assert (response.status_code, response.text, response.headers["X-Cache"]) == (
        200,
        "cached",
        "hit",
    )
    assert calls == []  # neither built nor called
    assert log == [
        "in:global",
        "in:controller",
        "in:gate",
        "out:gate",
        "out:controller",
        "out:global",
    ]


def test_a_werkzeug_response_answers_too() -> None:
    @http.GET("/x").middleware(Trace("gate", [], answer=WerkzeugResponse("teapot", status=418)))
    def x() -> str:
        raise AssertionError("not called")

    response = TestClient(App(controllers=[x])).get("/x")
    assert (response.status_code, response.text) == (418, "teapot")


def test_an_incoming_that_schedules_a_state_ends_the_chain() -> None:
    log: list[str] = []

    class Deny:
        def incoming(self, event: HttpEvent) -> None:
            log.append("in:deny")
            event.access_denied("members only")

        def outgoing(self, event: HttpEvent) -> None:
            log.append("out:deny")

    @http.GET("/x").middleware(Deny(), Trace("after", log))
    def x() -> str:
        raise AssertionError("not called")

    response = TestClient(App(controllers=[x], middlewares=[Trace("global", log)])).get("/x")
    assert (response.status_code, response.json) == (403, {"message": "members only"})
    assert log == ["in:global", "in:deny", "out:deny", "out:global"]


def test_routes_denied_by_an_auth_listener_run_no_route_middleware() -> None:
    log: list[str] = []

    @http.GET("/x").middleware(Trace("route", log))
    def x() -> str:
        raise AssertionError("not called")

    app = App(controllers=[x], middlewares=[Trace("global", log)])
    app.listen(http_workflow.on_auth, lambda event: event.access_denied())
    assert TestClient(app).get("/x").status_code == 403
    assert log == ["in:global", "out:global"]


# -- outgoing ----------------------------------------------------------------------------------


def test_outgoing_changes_the_response() -> None:
    class SecurityHeaders:
        def outgoing(self, event: HttpEvent) -> None:
            event.response.headers["X-Content-Type-Options"] = "nosniff"
            event.response.headers["X-Frame-Options"] = "DENY"

    class Retag:
        def outgoing(self, event: HttpEvent) -> None:
            event.response.status = 202
            event.response.headers["X-Seen-Status"] = "202"

    @http.GET("/x").middleware(Retag)
    def x() -> dict[str, int]:
        return {"x": 1}

    @http.GET("/n/{n}")
    def number(n: int) -> int:
        return n

    client = TestClient(App(controllers=[x, number], middlewares=[SecurityHeaders]))
    response = client.get("/x")
    assert (response.status_code, response.json) == (202, {"x": 1})
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Seen-Status"] == "202"
    # Kernel answers (404, 405, 400) pass through the global outgoing steps too.
    for method, path in (("GET", "/nope"), ("POST", "/x"), ("GET", "/n/abc")):
        answer = client.open(path, method=method)
        assert answer.status_code in (400, 404, 405), answer
        assert answer.headers["X-Frame-Options"] == "DENY", (method, path)


def test_outgoing_replaces_the_response_and_the_next_outer_step_sees_it() -> None:
    seen: list[int] = []

    class Outer:
        def outgoing(self, event: HttpEvent) -> None:
            seen.append(event.response.status)

    class Wrap:
        def outgoing(self, event: HttpEvent) -> Response:
            return JSONResponse({"wrapped": event.response.body.decode()}, 200)

    @http.GET("/x").middleware(Wrap)
    def x() -> str:
        return "inner"

    response = TestClient(App(controllers=[x], middlewares=[Outer])).get("/x")
    assert response.json == {"wrapped": "inner"}
    assert response.content_type == "application/json"
    assert seen == [200]


# -- errors ------------------------------------------------------------------------------------


class Failing:
    """A middleware raising ``kind(message)`` on ``/y`` in ``step`` (incoming or outgoing).

    A fresh exception per raise: one kept between requests would keep the traceback, and so
    the request that raised it, alive.
    """

    def __init__(self, kind: type[BaseException], message: str, step: str) -> None:
        self.kind = kind
        self.message = message
        self.step = step

    def incoming(self, event: HttpEvent) -> None:
        if self.step == "incoming" and event.path == "/y":
            raise self.kind(self.message)

    def outgoing(self, event: HttpEvent) -> None:
        if self.step == "outgoing" and event.path == "/y":
            raise self.kind(self.message)


INTERNAL = {"message": "Internal Server Error"}
ERRORS = [
    pytest.param(Conflict, "already taken", 409, {"message": "already taken"}, id="http-error"),
    pytest.param(NotFound, "no such shelf", 404, {"message": "no such shelf"}, id="not-found"),
    pytest.param(AccessDenied, "members only", 403, {"message": "members only"}, id="denied"),
    pytest.param(KeyError, "shelf", 500, INTERNAL, id="key-error"),
    pytest.param(LookupError, "no such key", 500, INTERNAL, id="lookup-error"),
    pytest.param(RuntimeError, "boom", 500, INTERNAL, id="runtime"),
]

PLACES = [
    pytest.param("global", "incoming", "request", id="global-incoming"),
    pytest.param("filtered", "incoming", "auth", id="filtered-incoming"),
    pytest.param("route", "incoming", "auth", id="route-incoming"),
    pytest.param("global", "outgoing", "response", id="global-outgoing"),
    pytest.param("route", "outgoing", "response", id="route-outgoing"),
]


def build_failing_app(place: str, middleware: Failing) -> App:
    @http.GET("/x")
    def plain() -> str:
        return "x"

    @http.GET("/y").middleware(middleware)
    def guarded() -> str:
        return "y"

    if place == "global":
        return App(controllers=[plain, guarded], middlewares=[middleware])
    if place == "filtered":
        return App(controllers=[plain, guarded], middlewares=[Middleware(middleware, paths=["/y"])])
    return App(controllers=[plain, guarded])


@pytest.mark.parametrize(("place", "step", "state"), PLACES)
@pytest.mark.parametrize(("kind", "message", "status", "body"), ERRORS)
def test_errors_in_a_middleware_map_like_controller_errors(
    caplog: pytest.LogCaptureFixture,
    place: str,
    step: str,
    state: str,
    kind: type[BaseException],
    message: str,
    status: int,
    body: dict[str, str],
) -> None:
    app = build_failing_app(place, Failing(kind, message, step))
    client = TestClient(app)
    response = client.get("/y")
    assert (response.status_code, response.json) == (status, body)
    assert response.content_type == "application/json"
    assert "Traceback" not in response.text
    logged = error_records(caplog)
    if status == 500:
        (record,) = logged
        assert f"in state '{state}'" in record.getMessage()
        assert record.exc_info is not None
        assert type(record.exc_info[1]) is kind
        assert message in str(record.exc_info[1])
    else:
        assert logged == []
    # The next request is unaffected.
    assert (client.get("/x").status_code, client.get("/x").text) == (200, "x")


@pytest.mark.parametrize(("place", "step", "state"), PLACES[:3])
def test_a_failing_middleware_never_makes_a_route_look_missing(
    place: str, step: str, state: str
) -> None:
    app = build_failing_app(place, Failing(LookupError, "no such key", step))
    assert TestClient(app).get("/y").status_code == 500


def test_outgoing_of_the_middlewares_before_a_failing_one_still_run() -> None:
    log: list[str] = []

    @http.GET("/y")
    def y() -> str:
        raise AssertionError("not called")

    app = App(
        controllers=[y],
        middlewares=[Trace("outer", log), Failing(Conflict, "busy", "incoming")],
    )
    response = TestClient(app).get("/y")
    assert response.status_code == 409
    assert log[0] == "in:outer"
    assert log[-1] == "out:outer"


BAD_RETURNS = [
    pytest.param({"message": "no"}, "dict", id="dict"),
    pytest.param("forbidden", "str", id="str"),
    pytest.param(("body", 403), "tuple", id="tuple"),
    pytest.param(True, "bool", id="true"),
]


@pytest.mark.parametrize("step", ["incoming", "outgoing"])
@pytest.mark.parametrize(("value", "type_name"), BAD_RETURNS)
def test_returning_something_else_than_a_response_is_a_configuration_error(
    caplog: pytest.LogCaptureFixture, step: str, value: Any, type_name: str
) -> None:
    class Sloppy:
        def incoming(self, event: HttpEvent) -> Any:
            return value if step == "incoming" else None

        def outgoing(self, event: HttpEvent) -> Any:
            return value if step == "outgoing" else None

    @http.GET("/x")
    def x() -> str:
        return "x"

    client = TestClient(App(controllers=[x], middlewares=[Sloppy]))
    response = client.get("/x")
    assert (response.status_code, response.json) == (500, {"message": "Internal Server Error"})
    (record,) = error_records(caplog)
    assert record.exc_info is not None
    error = record.exc_info[1]
    assert isinstance(error, ConfigurationError)
    assert f"Sloppy.{step}" in str(error)
    assert type_name in str(error)


# -- filters -----------------------------------------------------------------------------------


@http.controller("/admin").group("admin")
class AdminController:
    @http.GET("/users").name("admin.users")
    def users(self) -> str:
        return "users"

    @http.DELETE("/users/{id}").name("admin.delete")
    def delete(self, id: int) -> None:
        return None


@http.controller("/api")
class ApiController:
    @http.GET("/items").name("api.items")
    def items(self) -> list[int]:
        return [1]

    @http.POST("/items").name("api.create")
    def create(self) -> dict[str, int]:
        return {"id": 2}

    @http.GET("/health").name("api.health").group("probe")
    def health(self) -> str:
        return "ok"


@http.GET("/public").name("public")
def public() -> str:
    return "public"


@pytest.fixture
def filtered_client() -> TestClient:
    app = App(
        controllers=[AdminController, ApiController, public],
        middlewares=[
            ReportRan,
            Tag("everywhere"),
            Middleware(Tag("groups"), groups=["admin", "nobody"]),
            Middleware(Tag("names"), names=["api.*"], exclude_names=["api.health"]),
            Middleware(Tag("paths"), paths=["/api/*"]),
            Middleware(Tag("methods"), methods=["post", "DELETE"]),
            Middleware(Tag("controllers"), controllers=[AdminController]),
            Middleware(Tag("not-admin"), exclude_groups=["admin"]),
            Middleware(Tag("get-api"), paths=["/api/*"], methods=["GET"]),
            Middleware(Tag("not-probes"), paths=["/api/*"], exclude_groups=["probe"]),
            Middleware(Tag("not-public"), exclude_paths=["/public"], exclude_methods=["POST"]),
            Middleware(Tag("not-admin-ctl"), exclude_controllers=[AdminController]),
        ],
    )
    return TestClient(app)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        (
            "GET",
            "/admin/users",
            "everywhere,groups,controllers,not-public",
        ),
        (
            "DELETE",
            "/admin/users/3",
            "everywhere,groups,methods,controllers,not-public",
        ),
        (
            "GET",
            "/api/items",
            "everywhere,names,paths,not-admin,get-api,not-probes,not-public,not-admin-ctl",
        ),
        (
            "POST",
            "/api/items",
            "everywhere,names,paths,methods,not-admin,not-probes,not-admin-ctl",
        ),
        (
            "GET",
            "/api/health",
            "everywhere,paths,not-admin,get-api,not-public,not-admin-ctl",
        ),
        ("GET", "/public", "everywhere,not-admin,not-admin-ctl"),
        ("GET", "/nowhere", "everywhere"),
        ("PUT", "/public", "everywhere"),
    ],
    ids=[
        "group",
        "group-and-method",
        "name-and-path",
        "method",
        "excluded-name-and-group",
        "excluded-path",
        "not-found-runs-unfiltered-only",
        "method-not-allowed-runs-unfiltered-only",
    ],
)
def test_filters_select_routes(
    filtered_client: TestClient, method: str, path: str, expected: str
) -> None:
    response = filtered_client.open(path, method=method)
    assert response.headers["X-Ran"] == expected


def test_filters_are_resolved_at_start_up(
    filtered_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_more(self: Middleware, route: Any) -> bool:
        raise AssertionError("filters are evaluated per request")

    monkeypatch.setattr(Middleware, "selects", no_more)
    assert filtered_client.get("/api/items").headers["X-Ran"].startswith("everywhere,names")
    assert filtered_client.get("/nowhere").status_code == 404


def test_route_and_controller_middlewares_take_filters_too() -> None:
    @http.controller("/c").middleware(Middleware(Tag("controller-get"), methods=["GET"]))
    class C:
        @http.GET("/x")
        def x(self) -> str:
            return "x"

        @http.POST("/x").middleware(Middleware(Tag("route-named"), names=["C.*"]), Tag("plain"))
        def post_x(self) -> str:
            return "posted"

    client = TestClient(App(controllers=[C], middlewares=[ReportRan]))
    assert client.get("/c/x").headers["X-Ran"] == "controller-get"
    assert client.post("/c/x").headers["X-Ran"] == "route-named,plain"


@pytest.mark.parametrize(
    "options",
    [{"groups": "admin"}, {"names": "api.*"}, {"exclude_paths": "/x"}, {"methods": "GET"}],
    ids=["groups", "names", "exclude-paths", "methods"],
)
def test_a_filter_given_as_a_string_is_a_configuration_error(options: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="not the string"):
        Middleware(Tag("x"), **options)  # type: ignore[arg-type]


# -- forms, injection, configuration ----------------------------------------------------------


class Clock:
    """A service the middleware classes below get injected."""

    def __init__(self) -> None:
        self.now = 1000

    def tick(self) -> int:
        self.now += 1
        return self.now


class Stamp:
    built = 0

    def __init__(self, clock: Clock) -> None:
        type(self).built += 1
        self.clock = clock

    def outgoing(self, event: HttpEvent) -> None:
        event.response.headers["X-Stamp"] = str(self.clock.tick())


@http.GET("/x")
def plain_x() -> str:
    return "x"


def test_a_class_is_built_once_with_its_dependencies_injected() -> None:
    Stamp.built = 0

    @http.GET("/y").middleware(Stamp)
    def y() -> str:
        return "y"

    app = App(controllers=[plain_x, y], middlewares=[Stamp], providers=[Clock])
    client = TestClient(app)
    stamps = [client.get("/x").headers["X-Stamp"] for _ in range(3)]
    assert stamps == ["1001", "1002", "1003"]
    assert Stamp.built == 1  # once per app, even when listed twice
    # /y runs it twice (global and route): the global outgoing step runs last.
    assert client.get("/y").headers["X-Stamp"] == "1005"


def test_an_instance_is_used_as_is() -> None:
    stamp = Stamp(Clock())
    client = TestClient(App(controllers=[plain_x], middlewares=[stamp]))
    assert client.get("/x").headers["X-Stamp"] == "1001"
    assert stamp.clock.now == 1001


def test_class_and_instance_forms_behave_alike() -> None:
    class Header:
        def incoming(self, event: HttpEvent) -> None:
            event.store["seen"] = True

        def outgoing(self, event: HttpEvent) -> None:
            event.response.headers["X-Seen"] = str(event.store.get("seen"))

    for form in (Header, Header(), Middleware(Header), Middleware(Header())):
        response = TestClient(App(controllers=[plain_x], middlewares=[form])).get("/x")
        assert response.headers["X-Seen"] == "True", form


def test_a_missing_provider_is_a_configuration_error_at_build() -> None:
    with pytest.raises(ConfigurationError, match=r"middleware Stamp.*'clock'"):
        App(controllers=[plain_x], middlewares=[Stamp])

    @http.GET("/y").middleware(Stamp)
    def y() -> str:
        return "y"

    with pytest.raises(ConfigurationError, match=r"middleware Stamp.*'clock'"):
        App(controllers=[y])


class Inert:
    """Neither incoming nor outgoing."""

    def handle(self, event: HttpEvent) -> None:
        pass


@pytest.mark.parametrize("form", [Inert, Inert(), Middleware(Inert, priority=1)])
def test_a_middleware_with_neither_step_is_a_configuration_error(form: Any) -> None:
    with pytest.raises(ConfigurationError, match="Inert has neither incoming"):
        App(controllers=[plain_x], middlewares=[form])

    @http.GET("/y").middleware(form)
    def y() -> str:
        return "y"

    with pytest.raises(ConfigurationError, match="Inert has neither incoming"):
        App(controllers=[y])
    app = App(controllers=[plain_x])
    with pytest.raises(ConfigurationError, match="Inert has neither incoming"):
        app.add_controller(y)


def test_a_step_that_is_not_a_one_argument_callable_is_a_configuration_error() -> None:
    class NotCallable:
        incoming = "nope"

    class TwoArguments:
        def outgoing(self, event: HttpEvent, extra: int) -> None:
            pass

    with pytest.raises(ConfigurationError, match=r"NotCallable\.incoming is not callable"):
        App(controllers=[plain_x], middlewares=[NotCallable])
    with pytest.raises(ConfigurationError, match="exactly one"):
        App(controllers=[plain_x], middlewares=[TwoArguments])


@pytest.mark.parametrize("priority", ["1", 1.5, True, None], ids=["str", "float", "bool", "none"])
def test_priority_must_be_an_int(priority: Any) -> None:
    with pytest.raises(ConfigurationError, match="priority"):
        Middleware(Tag("x"), priority=priority)


# -- cost: an app without middleware carries no runner -----------------------------------------


def test_an_app_without_middleware_has_no_runner_listeners() -> None:
    app = App(controllers=[plain_x])
    for state, runner in RUNNERS.items():
        assert runner not in runner_names(app, state)
    assert TestClient(app).get("/x").text == "x"


def test_a_global_middleware_brings_the_runners_in() -> None:
    app = App(controllers=[plain_x], middlewares=[Tag("x")])
    for state, runner in RUNNERS.items():
        assert runner in runner_names(app, state)
    # Where they sit among the kernel's listeners of the same priority.
    request = runner_names(app, "request")  # the request checks run before the walk
    assert "check_request" not in request
    assert request.index("run_global_middlewares") < request.index("schedule_route")
    auth = runner_names(app, "auth")
    assert auth.index("run_route_middlewares") < auth.index("schedule_resolve_parameters")
    response = runner_names(app, "response")
    assert response.index("render_result") < response.index("run_outgoing")


def test_a_route_middleware_added_later_brings_the_runners_in() -> None:
    @http.GET("/y").middleware(ReportRan, Tag("route"))
    def y() -> str:
        return "y"

    app = App(controllers=[plain_x])
    client = TestClient(app)
    assert client.get("/x").status_code == 200
    app.add_controller(y)
    for state, runner in RUNNERS.items():
        assert runner in runner_names(app, state)
    assert client.get("/y").headers["X-Ran"] == "route"
    assert "X-Ran" not in client.get("/x").headers


# -- isolation ---------------------------------------------------------------------------------


def test_the_next_request_is_unaffected_by_a_failed_one(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []

    class FailOnce:
        def __init__(self) -> None:
            self.failed = False

        def incoming(self, event: HttpEvent) -> Any:
            event.store["ran"] = ["fail-once"]
            if not self.failed:
                self.failed = True
                raise RuntimeError("first request fails")
            return None

    @http.GET("/x").middleware(Trace("route", log))
    def x() -> str:
        return "x"

    client = TestClient(App(controllers=[x], middlewares=[ReportRan, FailOnce(), Trace("g", log)]))
    first = client.get("/x")
    assert first.status_code == 500
    assert first.headers["X-Ran"] == "fail-once"
    assert log == []
    log.clear()
    second = client.get("/x")
    assert (second.status_code, second.text, second.headers["X-Ran"]) == (200, "x", "fail-once")
    assert log == ["in:g", "in:route", "out:route", "out:g"]
    third = client.get("/x")
    assert third.status_code == 200
    assert len(error_records(caplog)) == 1


def test_several_apps_share_controllers_with_their_own_middlewares() -> None:
    @http.GET("/shared")
    def shared() -> str:
        return "shared"

    one = TestClient(App(controllers=[shared], middlewares=[ReportRan, Tag("one")]))
    two = TestClient(App(controllers=[shared], middlewares=[ReportRan, Tag("two")]))
    bare = TestClient(App(controllers=[shared]))
    assert one.get("/shared").headers["X-Ran"] == "one"
    assert two.get("/shared").headers["X-Ran"] == "two"
    assert "X-Ran" not in bare.get("/shared").headers


def test_a_request_refused_by_the_request_checks_runs_no_middleware() -> None:
    """The kernel's checks (sizes, query, hosts) come before the chain, in ``request``."""
    log: list[str] = []
    app = App(
        controllers=[plain_x],
        middlewares=[Trace("global", log)],
        limits=Limits(max_content_length=10),
    )
    client = TestClient(app)
    assert client.post("/x", data=b"x" * 100).status_code == 413
    assert client.get("/x?%zz").status_code == 400
    assert log == []
    assert client.get("/x").status_code == 200
    assert log == ["in:global", "out:global"]


class _Blocklist:
    """A global middleware without filters: it runs in ``request``, before routing."""

    def incoming(self, event):
        if event.environ.get("REMOTE_ADDR") == "203.0.113.9":
            event.access_denied("Blocked")


@http.GET("/open")
def open_route() -> dict:
    return {"open": True}


def test_a_global_middleware_can_deny_access_before_routing():
    # Fails on the old code: `request` had no access_denied edge, so following
    # docs/middleware.md answered 500 (IllegalTransition).
    client = TestClient(App(controllers=[open_route], middlewares=[_Blocklist]))
    blocked = client.get("/open", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert (blocked.status_code, blocked.json) == (403, {"message": "Blocked"})
    unknown = client.get("/nowhere", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert unknown.status_code == 403  # refused before routing: no 404 leaks the route table
    assert client.get("/open").json == {"open": True}


def test_a_request_listener_can_deny_access():
    app = App(controllers=[open_route])

    @app.listen(http_workflow.on_request)
    def deny(event):
        if "HTTP_X_BANNED" in event.environ:
            event.access_denied()

    client = TestClient(app)
    assert client.get("/open", headers={"X-Banned": "1"}).status_code == 403
    assert client.get("/open").status_code == 200
