"""Configuration errors: raised when the App is built (or at app.listen / app.add_controller).

DESIGN.md §2: unknown state names, duplicate routes, annotations that cannot be resolved,
services nobody provides and listeners with bad signatures are ``ConfigurationError`` at
build time, never at the first request. A failed call leaves the app serving as before.
"""

from __future__ import annotations

from typing import Any

import pytest

from workflowhttp import (
    App,
    ConfigurationError,
    HttpEvent,
    Limits,
    http,
    http_workflow,
    listener,
)
from workflowhttp.testing import TestClient


@http.GET("/hello")
def greet(name: str = "world") -> str:
    return f"Hello {name}"


@pytest.fixture
def app(make_app) -> App:
    return make_app(controllers=[greet])


@pytest.fixture
def client(app: App) -> TestClient:
    return TestClient(app)


def assert_unaffected(client: TestClient) -> None:
    response = client.get("/hello")
    assert response.status_code == 200
    assert response.text == "Hello world"


class Service:
    """A service nobody provides."""


class Provided:
    """A service the apps below provide."""


def on_event(event: HttpEvent) -> None:
    pass


# -- unknown state names ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nope", "Request", "on_request", "routes", "", "error"], ids=repr)
def test_listen_to_an_unknown_state_is_refused(app, client, name):
    with pytest.raises(ConfigurationError, match="unknown workflow state"):
        app.listen(name, on_event)
    with pytest.raises(ConfigurationError, match="unknown workflow state"):
        app.listen(name)
    assert_unaffected(client)


def test_listener_marker_with_an_unknown_state_is_refused():
    with pytest.raises(ConfigurationError, match="unknown workflow state"):
        listener("authentication")


def test_every_state_name_and_token_is_accepted(app):
    for state in http_workflow.states:
        app.listen(state, on_event)
        app.listen(getattr(http_workflow, f"on_{state}"), on_event)


# -- duplicate routes ------------------------------------------------------------------------


def _route(method: str, path: str, name: str) -> Any:
    def endpoint(**path_params: str) -> str:  # takes whatever placeholders the path has
        return name

    endpoint.__name__ = endpoint.__qualname__ = name
    return getattr(http, method)(path)(endpoint)


DUPLICATES = [
    (("GET", "/x"), ("GET", "/x")),
    (("GET", "/x"), ("GET", "/x/")),
    (("GET", "/x/"), ("GET", "/x")),
    (("POST", "/x/{id}"), ("POST", "/x/{id}")),
    (("ANY", "/x"), ("GET", "/x")),
    (("GET", "/x"), ("ANY", "/x")),
]


@pytest.mark.parametrize(
    ("first", "second"),
    DUPLICATES,
    ids=[f"{a[0]} {a[1]} + {b[0]} {b[1]}" for a, b in DUPLICATES],
)
def test_duplicate_routes_are_refused_when_the_app_is_built(first, second):
    with pytest.raises(ConfigurationError, match="duplicate route"):
        App(controllers=[_route(*first, name="one"), _route(*second, name="two")])


@pytest.mark.parametrize(
    ("first", "second"),
    DUPLICATES,
    ids=[f"{a[0]} {a[1]} + {b[0]} {b[1]}" for a, b in DUPLICATES],
)
def test_duplicate_routes_are_refused_by_add_controller(make_app, first, second):
    app = make_app(controllers=[greet, _route(*first, name="one")])
    with pytest.raises(ConfigurationError, match="duplicate route"):
        app.add_controller(_route(*second, name="two"))
    client = TestClient(app)
    assert_unaffected(client)
    method, path = first
    response = client.open(path.replace("{id}", "1"), method="GET" if method == "ANY" else method)
    assert response.text == "one"


def test_a_duplicate_in_a_controller_class_is_refused():
    @http.controller("/users")
    class Users:
        @http.GET("/")
        def index(self) -> str:
            return "index"

        @http.GET("")
        def again(self) -> str:
            return "again"

    with pytest.raises(ConfigurationError, match="duplicate route"):
        App(controllers=[Users])


def test_a_controller_path_duplicating_a_function_route_is_refused():
    @http.controller("/users")
    class Users:
        @http.GET("/list")
        def index(self) -> str:
            return "index"

    listing = _route("GET", "/users/list", name="listing")
    with pytest.raises(ConfigurationError, match="duplicate route"):
        App(controllers=[listing, Users])


def test_a_failed_add_controller_adds_none_of_its_routes(app, client):
    class Mixed:
        @http.GET("/fresh")
        def a_fresh(self) -> str:
            return "fresh"

        @http.GET("/hello")
        def b_clash(self) -> str:
            return "clash"

    with pytest.raises(ConfigurationError, match="duplicate route"):
        app.add_controller(Mixed)
    assert_unaffected(client)
    assert client.get("/fresh").status_code == 404


@pytest.mark.parametrize(
    ("first", "second"),
    [(("GET", "/x"), ("POST", "/x")), (("GET", "/x/{id}"), ("GET", "/x/new"))],
    ids=["other-method", "static-beside-parameter"],
)
def test_routes_that_differ_are_not_duplicates(first, second):
    client = TestClient(App(controllers=[_route(*first, name="one"), _route(*second, name="two")]))
    assert client.open("/x/new" if "new" in second[1] else "/x", method=second[0]).text == "two"


# -- annotations that cannot be resolved -------------------------------------------------------


def test_an_unresolvable_controller_parameter_annotation_is_refused():
    @http.GET("/x")
    def controller(thing: NoSuchType) -> str:  # type: ignore[name-defined]  # noqa: F821
        return "x"

    with pytest.raises(ConfigurationError, match="controller"):
        App(controllers=[controller])


def test_an_unresolvable_annotation_in_a_controller_constructor_is_refused():
    class Broken:
        def __init__(self, thing: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
            self.thing = thing

        @http.GET("/x")
        def show(self) -> str:
            return "x"

    with pytest.raises(ConfigurationError, match="Broken"):
        App(controllers=[Broken])


def test_an_unresolvable_annotation_in_a_listener_constructor_is_refused():
    class BrokenListener:
        def __init__(self, thing: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
            self.thing = thing

        @listener("auth")
        def check(self, event: HttpEvent) -> None:
            pass

    with pytest.raises(ConfigurationError, match="BrokenListener"):
        App(controllers=[greet], listeners=[BrokenListener])


def test_an_unresolvable_annotation_is_refused_by_add_controller(app, client):
    @http.GET("/later")
    def later(thing: NoSuchType) -> str:  # type: ignore[name-defined]  # noqa: F821
        return "x"

    with pytest.raises(ConfigurationError):
        app.add_controller(later)
    assert_unaffected(client)
    assert client.get("/later").status_code == 404


# -- services nobody provides ------------------------------------------------------------------


def test_a_controller_constructor_needing_an_unprovided_service_is_refused():
    class NeedsService:
        def __init__(self, service: Service) -> None:
            self.service = service

        @http.GET("/x")
        def show(self) -> str:
            return "x"

    with pytest.raises(ConfigurationError, match="Service"):
        App(controllers=[NeedsService])


def test_a_controller_parameter_of_an_unprovided_service_is_refused():
    @http.GET("/x")
    def show(service: Service) -> str:
        return "x"

    with pytest.raises(ConfigurationError, match="Service"):
        App(controllers=[show])


def test_a_listener_constructor_needing_an_unprovided_service_is_refused():
    class NeedsService:
        def __init__(self, service: Service) -> None:
            self.service = service

        @listener("auth")
        def check(self, event: HttpEvent) -> None:
            pass

    with pytest.raises(ConfigurationError, match="Service"):
        App(controllers=[greet], listeners=[NeedsService])


def test_a_provider_needing_an_unprovided_service_is_refused():
    class Repository:
        def __init__(self, service: Service) -> None:
            self.service = service

    with pytest.raises(ConfigurationError, match="Service"):
        App(controllers=[greet], providers=[Repository])


def test_an_unannotated_constructor_parameter_is_refused():
    class Untyped:
        def __init__(self, thing) -> None:  # type: ignore[no-untyped-def]
            self.thing = thing

        @http.GET("/x")
        def show(self) -> str:
            return "x"

    with pytest.raises(ConfigurationError, match="thing"):
        App(controllers=[Untyped])


def test_an_unprovided_service_is_refused_by_add_controller(app, client):
    @http.GET("/later")
    def later(service: Service) -> str:
        return "x"

    with pytest.raises(ConfigurationError, match="Service"):
        app.add_controller(later)
    assert_unaffected(client)


def test_provided_services_are_accepted():
    class UsesProvided:
        def __init__(self, provided: Provided) -> None:
            self.provided = provided

        @http.GET("/x")
        def show(self, provided: Provided) -> str:
            return "same" if provided is self.provided else "different"

    client = TestClient(App(controllers=[UsesProvided], providers=[Provided]))
    assert client.get("/x").text == "same"


# -- listener signatures ---------------------------------------------------------------------


def no_arguments() -> None:
    pass


def two_arguments(event: HttpEvent, other: Any) -> None:
    pass


def keyword_only(*, event: HttpEvent) -> None:
    pass


BAD_LISTENERS = [no_arguments, two_arguments, keyword_only, lambda: None, lambda a, b: None, 42]
BAD_IDS = ["no-arguments", "two-arguments", "keyword-only", "lambda-0", "lambda-2", "not-callable"]


@pytest.mark.parametrize("function", BAD_LISTENERS, ids=BAD_IDS)
def test_listen_refuses_a_bad_signature(app, client, function):
    with pytest.raises(ConfigurationError, match="listener"):
        app.listen("auth", function)
    assert_unaffected(client)


@pytest.mark.parametrize("function", BAD_LISTENERS[:-1], ids=BAD_IDS[:-1])
def test_listen_decorator_refuses_a_bad_signature(app, client, function):
    with pytest.raises(ConfigurationError, match="listener"):
        app.listen(http_workflow.on_auth)(function)
    assert_unaffected(client)


def test_a_class_listener_method_with_a_bad_signature_is_refused():
    class TwoArguments:
        @listener("auth")
        def check(self, event: HttpEvent, extra: Any) -> None:
            pass

    class NoEvent:
        @listener("auth")
        def check(self) -> None:
            pass

    for bad in (TwoArguments, NoEvent):
        with pytest.raises(ConfigurationError, match="listener"):
            App(controllers=[greet], listeners=[bad])


def test_a_listener_class_without_listener_methods_is_refused():
    class Nothing:
        def check(self, event: HttpEvent) -> None:
            pass

    with pytest.raises(ConfigurationError):
        App(controllers=[greet], listeners=[Nothing])


@pytest.mark.parametrize("priority", ["high", 1.5, None, True], ids=repr)
def test_a_priority_that_is_not_an_int_is_refused(app, client, priority):
    with pytest.raises(ConfigurationError, match="priority"):
        app.listen("auth", on_event, priority=priority)
    assert_unaffected(client)


def test_good_listener_signatures_are_accepted(app, client):
    class Bound:
        def method(self, event: HttpEvent) -> None:
            event.store["bound"] = True

    def with_default(event: HttpEvent, extra: int = 1) -> None:
        pass

    def with_var_args(*args: Any) -> None:
        pass

    class CallableObject:
        def __call__(self, event: HttpEvent) -> None:
            pass

    for function in (Bound().method, with_default, with_var_args, CallableObject(), print):
        app.listen("auth", function)
    assert client.get("/hello").status_code == 200


# -- controllers -----------------------------------------------------------------------------


def not_a_route() -> str:
    return "x"


class NoRoutes:
    def show(self) -> str:
        return "x"


@http.controller("/empty")
class EmptyController:
    pass


@pytest.mark.parametrize(
    "controller",
    [not_a_route, NoRoutes, EmptyController],
    ids=["undecorated-function", "class-without-routes", "empty-controller"],
)
def test_a_controller_without_routes_is_refused(make_app, controller):
    with pytest.raises(ConfigurationError, match="no routes"):
        make_app(controllers=[greet, controller])
    app = make_app()
    with pytest.raises(ConfigurationError, match="no routes"):
        app.add_controller(controller)
    assert_unaffected(TestClient(app))


def test_an_async_function_controller_is_refused():
    @http.GET("/x")
    async def show() -> str:
        return "x"

    with pytest.raises(ConfigurationError, match="async"):
        App(controllers=[show])


def test_an_async_method_controller_is_refused():
    class AsyncController:
        @http.GET("/x")
        async def show(self) -> str:
            return "x"

    with pytest.raises(ConfigurationError, match="async"):
        App(controllers=[AsyncController])


def test_an_async_generator_controller_is_refused():
    @http.GET("/x")
    async def stream() -> Any:
        yield b"x"

    with pytest.raises(ConfigurationError, match="async"):
        App(controllers=[stream])


def test_an_async_controller_is_refused_by_add_controller(app, client):
    @http.GET("/x")
    async def show() -> str:
        return "x"

    with pytest.raises(ConfigurationError, match="async"):
        app.add_controller(show)
    assert_unaffected(client)
    assert client.get("/x").status_code == 404


# -- limits ----------------------------------------------------------------------------------

BAD_LIMITS = [
    {"max_hops": 0},
    {"max_hops": -1},
    {"max_hops": "32"},
    {"max_hops": 2.5},
    {"max_hops": True},
    {"max_hops": None},
    {"max_content_length": 0},
    {"max_json_depth": -5},
    {"max_params": "many"},
    {"max_form_parts": 0},
    {"max_form_files": 1.0},
    {"max_form_memory_size": -1},
    {"no_such_limit": 1},
]


@pytest.mark.parametrize(
    "overrides", BAD_LIMITS, ids=[f"{k}={v!r}" for d in BAD_LIMITS for k, v in d.items()]
)
def test_bad_limits_are_refused(overrides):
    with pytest.raises(ConfigurationError):
        Limits(**overrides)


@pytest.mark.parametrize(
    "limits", [{"max_hops": 3}, 32, "strict", object()], ids=["dict", "int", "str", "object"]
)
def test_app_limits_must_be_a_limits(limits):
    with pytest.raises(ConfigurationError, match="limits"):
        App(controllers=[greet], limits=limits)


def test_good_limits_are_accepted():
    app = App(controllers=[greet], limits=Limits(max_hops=10, max_json_depth=5))
    assert TestClient(app).get("/hello").text == "Hello world"


# -- nothing is checked late -------------------------------------------------------------------


# Module level: with postponed annotations, get_type_hints cannot see a test's locals.
class Repository:
    def __init__(self, provided: Provided) -> None:
        self.provided = provided


@http.controller("/repo")
class RepoController:
    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    @http.GET("/{id}")
    def show(self, id: int, repository: Repository) -> dict[str, Any]:
        return {"id": id, "same": repository is self.repository}


class RepoListener:
    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    @listener(http_workflow.on_auth, priority=5)
    def check(self, event: HttpEvent) -> None:
        event.store["listener repo"] = self.repository.provided


def test_a_valid_app_with_services_everywhere_is_built_and_serves():
    app = App(
        controllers=[RepoController, greet],
        listeners=[RepoListener],
        providers=[Provided, Repository],
    )
    assert TestClient(app).get("/repo/3").json == {"id": 3, "same": True}


def test_debug_set_on_a_built_app_shows_the_traceback_and_unset_hides_it():
    @http.GET("/boom")
    def boom() -> str:
        raise RuntimeError("kaput")

    app = App(controllers=[boom])
    client = TestClient(app)
    assert client.get("/boom").json == {"message": "Internal Server Error"}
    app.debug = True  # as `workflowhttp dev --debug` does, after the app is built
    shown = client.get("/boom").json
    assert shown["error"] == "RuntimeError: kaput" and shown["traceback"]
    app.debug = False
    assert client.get("/boom").json == {"message": "Internal Server Error"}
