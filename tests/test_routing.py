"""Routing: route declarations, the compiled router, HEAD/OPTIONS/405/404 and ``url_for``."""

from __future__ import annotations

import pytest

from workflowhttp import App, ConfigurationError, HttpEvent, Route, http, http_workflow
from workflowhttp.routing import Miss
from workflowhttp.testing import TestClient

ALL_VERBS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def client_for(*controllers, **options) -> TestClient:
    return TestClient(App(controllers=list(controllers), **options))


# -- verbs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ALL_VERBS)
def test_each_verb_decorator_routes_its_method(verb):
    @getattr(http, verb)("/thing")
    def thing() -> str:
        return "done"

    client = client_for(thing)
    response = client.open("/thing", method=verb)
    assert response.status_code == 200
    if verb != "HEAD":
        assert response.text == "done"
    assert response.headers["Content-Length"] == "4"


@pytest.mark.parametrize("verb", ["POST", "PUT", "PATCH", "DELETE"])
def test_a_verb_decorator_answers_only_its_method(verb):
    @getattr(http, verb)("/thing")
    def thing() -> str:
        return "done"

    response = client_for(thing).get("/thing")
    assert response.status_code == 405
    assert response.json == {"message": "Method Not Allowed"}
    assert response.headers["Allow"] == f"{verb}, OPTIONS"


def test_chained_verbs_add_methods():
    @http.GET("/x").POST().PUT()
    def x(event: HttpEvent) -> str:
        return event.method

    client = client_for(x)
    assert client.get("/x").text == "GET"
    assert client.post("/x").text == "POST"
    assert client.put("/x").text == "PUT"
    response = client.delete("/x")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD, POST, PUT, OPTIONS"


@pytest.mark.parametrize("verb", ALL_VERBS)
def test_every_verb_can_be_chained(verb):
    @getattr(http.POST("/y"), verb)()
    def chained(event: HttpEvent) -> str:
        return event.method

    (route,) = App(controllers=[chained]).routes
    expected = ("POST",) if verb == "POST" else ("POST", verb)
    assert route.methods == expected
    response = client_for(chained).open("/y", method=verb)
    assert response.status_code == 200


def test_decorating_something_not_callable_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="not callable"):
        http.GET("/x")("not a function")


def test_controller_decorates_classes_only():
    def function() -> str:
        return ""

    with pytest.raises(ConfigurationError, match="decorates classes"):
        http.controller("/base")(function)


def test_converter_inside_a_mixed_segment_is_a_configuration_error():
    @http.GET("/files/{name:path}.txt")
    def bad(name: str) -> str:
        return name

    with pytest.raises(ConfigurationError, match="whole segment"):
        App(controllers=[bad])


def test_route_repr():
    routes = {route.name: route for route in App(controllers=[UserController]).routes}
    route = routes["UserController.show"]
    assert repr(route) == "<Route GET /users/{id} UserController.show>"


def test_chained_verbs_on_a_spec_do_not_repeat_a_method():
    @http.GET("/x").GET().POST()
    def x() -> str:
        return "x"

    (route,) = App(controllers=[x]).routes
    assert route.methods == ("GET", "POST")


@pytest.mark.parametrize("verb", ALL_VERBS)
def test_any_answers_every_method(verb):
    @http.ANY("/any")
    def anything(event: HttpEvent) -> str:
        return event.method

    response = client_for(anything).open("/any", method=verb)
    assert response.status_code == 200
    if verb != "HEAD":
        assert response.text == verb


def test_chained_any_replaces_the_methods():
    @http.GET("/any").ANY()
    def anything() -> str:
        return "ok"

    (route,) = App(controllers=[anything]).routes
    assert route.methods == ("*",)
    assert client_for(anything).patch("/any").text == "ok"


def test_any_beside_another_method_on_the_same_path_is_a_duplicate():
    @http.ANY("/x")
    def anything() -> str:
        return "any"

    @http.GET("/x")
    def get() -> str:
        return "get"

    with pytest.raises(ConfigurationError, match="duplicate route"):
        App(controllers=[anything, get])


def test_same_method_and_path_twice_is_a_configuration_error():
    @http.GET("/x")
    def one() -> str:
        return "1"

    @http.GET("/x/")
    def two() -> str:
        return "2"

    with pytest.raises(ConfigurationError, match="duplicate route GET /x"):
        App(controllers=[one, two])


def test_different_methods_on_one_path_go_to_different_controllers():
    @http.GET("/x")
    def read() -> str:
        return "read"

    @http.POST("/x")
    def write() -> str:
        return "write"

    client = client_for(read, write)
    assert client.get("/x").text == "read"
    assert client.post("/x").text == "write"


def test_one_function_with_two_decorators_has_two_routes():
    @http.GET("/a").name("a")
    @http.GET("/b").name("b")
    def both() -> str:
        return "both"

    app = App(controllers=[both])
    assert sorted(route.path for route in app.routes) == ["/a", "/b"]
    client = TestClient(app)
    assert client.get("/a").text == "both"
    assert client.get("/b").text == "both"


# -- route metadata ---------------------------------------------------------------------------


def test_name_group_data_description_reach_the_route():
    @(
        http.GET("/meta")
        .name("meta")
        .group("a", "b")
        .group("b", "c")
        .data("key", 1)
        .data("other", [2])
        .description("A route.")
    )
    def meta() -> str:
        return "meta"

    (route,) = App(controllers=[meta]).routes
    assert isinstance(route, Route)
    assert route.name == "meta"
    assert route.groups == ("a", "b", "c")
    assert route.data == {"key": 1, "other": [2]}
    assert route.description == "A route."
    assert route.path == "/meta"
    assert route.methods == ("GET",)
    assert route.endpoint is meta
    assert route.controller is None


def test_default_route_names():
    @http.GET("/f")
    def function_name() -> str:
        return "f"

    class Things:
        @http.GET("/c")
        def method_name(self) -> str:
            return "c"

    names = {route.path: route.name for route in App(controllers=[function_name, Things]).routes}
    assert names == {"/f": "function_name", "/c": "Things.method_name"}


def test_the_listener_sees_the_matched_route():
    @http.GET("/seen/{id}").group("g").data("k", "v").name("seen")
    def seen(id: int) -> str:
        return "ok"

    app = App(controllers=[seen])
    captured = {}

    @app.listen(http_workflow.on_controller)
    def look(event: HttpEvent) -> None:
        route = event.route
        captured.update(
            name=route.name,
            groups=route.groups,
            data=route.data,
            path=route.path,
            params=dict(event.path_params),
            endpoint=route.endpoint,
        )

    assert TestClient(app).get("/seen/7").status_code == 200
    assert captured == {
        "name": "seen",
        "groups": ("g",),
        "data": {"k": "v"},
        "path": "/seen/{id}",
        "params": {"id": "7"},
        "endpoint": seen,
    }


def test_route_data_is_copied_per_route():
    spec = http.GET("/x").data("k", 1)

    @spec
    def x() -> str:
        return "x"

    (route,) = App(controllers=[x]).routes
    route.data["k"] = 2
    (again,) = App(controllers=[x]).routes
    assert again.data == {"k": 1}


# -- controller classes -----------------------------------------------------------------------


@http.controller("/users").group("admin", "users")
class UserController:
    @http.GET("/")
    def index(self) -> str:
        return "index"

    @http.GET("/{id}").group("detail", "admin")
    def show(self, id: int) -> dict:
        return {"id": id}

    @http.GET("/admin")
    def admin(self) -> str:
        return "admin page"


def test_controller_base_path_is_joined():
    client = client_for(UserController)
    assert client.get("/users").text == "index"
    assert client.get("/users/").text == "index"
    assert client.get("/users/3").json == {"id": 3}


def test_controller_routes_carry_full_paths_and_class_groups_first():
    routes = {route.name: route for route in App(controllers=[UserController]).routes}
    assert routes["UserController.index"].path == "/users"
    assert routes["UserController.show"].path == "/users/{id}"
    assert routes["UserController.show"].groups == ("admin", "users", "detail")
    assert routes["UserController.admin"].groups == ("admin", "users")
    assert routes["UserController.show"].controller is UserController
    assert routes["UserController.show"].endpoint is UserController.show


def test_bare_controller_decorator():
    @http.controller
    class Bare:
        @http.GET("/bare")
        def bare(self) -> str:
            return "bare"

    assert client_for(Bare).get("/bare").text == "bare"


def test_undecorated_class_with_routes_is_a_controller():
    class Plain:
        @http.GET("/plain")
        def plain(self) -> str:
            return "plain"

    assert client_for(Plain).get("/plain").text == "plain"


def test_controller_base_path_without_leading_slash():
    @http.controller("api/")
    class Api:
        @http.GET("items")
        def items(self) -> list:
            return [1]

    assert client_for(Api).get("/api/items").json == [1]


def test_controller_at_root_path():
    @http.controller("/api")
    class Api:
        @http.GET("/")
        def root(self) -> str:
            return "root"

    @http.GET("/")
    def home() -> str:
        return "home"

    client = client_for(Api, home)
    assert client.get("/").text == "home"
    assert client.get("/api").text == "root"


def test_staticmethod_controller():
    class Static:
        @http.GET("/static")
        @staticmethod
        def static() -> str:
            return "static"

    assert client_for(Static).get("/static").text == "static"


def test_the_same_controller_serves_two_apps():
    first = client_for(UserController)
    second = client_for(UserController)
    assert first.get("/users/1").json == {"id": 1}
    assert second.get("/users/2").json == {"id": 2}


def test_a_controller_without_routes_is_a_configuration_error():
    class Empty:
        def nothing(self) -> str:
            return ""

    with pytest.raises(ConfigurationError, match="declares no routes"):
        App(controllers=[Empty])


def test_a_function_without_routes_is_a_configuration_error():
    def nothing() -> str:
        return ""

    with pytest.raises(ConfigurationError, match="declares no routes"):
        App(controllers=[nothing])


def test_add_controller_after_build():
    @http.GET("/late")
    def late() -> str:
        return "late"

    app = App(controllers=[UserController])
    app.add_controller(late)
    assert TestClient(app).get("/late").text == "late"


# -- path templates ---------------------------------------------------------------------------


def test_path_parameter_matches_one_segment():
    @http.GET("/items/{name}")
    def item(name: str) -> str:
        return name

    client = client_for(item)
    assert client.get("/items/apple").text == "apple"
    assert client.get("/items/a%20b").text == "a b"
    assert client.get("/items/apple/core").status_code == 404
    assert client.get("/items/").status_code == 404


def test_path_parameter_with_an_encoded_slash_stays_one_value():
    @http.GET("/items/{name}")
    def item(name: str) -> str:
        return name

    # werkzeug's test client decodes %2F before the app sees PATH_INFO, like every WSGI server.
    assert client_for(item).get("/items/a%2Fb").status_code == 404


def test_two_path_parameters():
    @http.GET("/a/{x}/b/{y}")
    def both(x: str, y: int) -> dict:
        return {"x": x, "y": y}

    assert client_for(both).get("/a/one/b/2").json == {"x": "one", "y": 2}


def test_path_converter_takes_the_rest():
    @http.GET("/files/{rest:path}")
    def files(rest: str) -> str:
        return rest

    client = client_for(files)
    assert client.get("/files/a").text == "a"
    assert client.get("/files/a/b/c.txt").text == "a/b/c.txt"
    assert client.get("/files").status_code == 404


def test_path_converter_keeps_its_trailing_slash_insignificant():
    @http.GET("/files/{rest:path}")
    def files(rest: str) -> str:
        return rest

    assert client_for(files).get("/files/a/b/").text == "a/b"


@pytest.mark.parametrize(
    "path",
    ["/files/../secret", "/files/a/../../secret", "/files/a/..", "/files/..", "/files/a/%2e%2e/b"],
    ids=["leading", "middle", "trailing", "alone", "encoded"],
)
def test_path_converter_never_matches_a_dotdot_segment(path):
    @http.GET("/files/{rest:path}")
    def files(rest: str) -> str:
        return rest

    response = client_for(files).get(path)
    assert response.status_code == 404
    assert response.json == {"message": "Not Found"}


def test_path_converter_accepts_dots_that_are_not_a_segment():
    @http.GET("/files/{rest:path}")
    def files(rest: str) -> str:
        return rest

    client = client_for(files)
    assert client.get("/files/a..b/.hidden/...").text == "a..b/.hidden/..."


def test_a_simple_parameter_is_never_dotdot():
    @http.GET("/items/{name}")
    def item(name: str) -> str:
        return name

    assert client_for(item).get("/items/..").status_code == 404


def test_mixed_segment_parameters():
    @http.GET("/files/{name}.{ext}")
    def file(name: str, ext: str) -> dict:
        return {"name": name, "ext": ext}

    client = client_for(file)
    assert client.get("/files/report.pdf").json == {"name": "report", "ext": "pdf"}
    assert client.get("/files/archive.tar.gz").json == {"name": "archive", "ext": "tar.gz"}
    assert client.get("/files/noext").status_code == 404


def test_mixed_segment_with_a_prefix():
    @http.GET("/v{version}/ping")
    def ping(version: int) -> dict:
        return {"version": version}

    client = client_for(ping)
    assert client.get("/v2/ping").json == {"version": 2}
    assert client.get("/x2/ping").status_code == 404


def test_mixed_segment_beats_a_simple_parameter():
    @http.GET("/files/{name}.json")
    def as_json(name: str) -> str:
        return "json " + name

    @http.GET("/files/{anything}")
    def other(anything: str) -> str:
        return "other " + anything

    client = client_for(other, as_json)
    assert client.get("/files/a.json").text == "json a"
    assert client.get("/files/a.txt").text == "other a.txt"


def test_a_static_segment_must_follow_a_path_converter():
    @http.GET("/files/{rest:path}/{tail}")
    def bad(rest: str, tail: str) -> str:
        return rest

    with pytest.raises(ConfigurationError, match="a static segment must follow"):
        App(controllers=[bad])


def test_only_whole_name_segments_may_follow_a_path_converter():
    @http.GET("/files/{rest:path}/edit/v{tail}")
    def bad(rest: str, tail: str) -> str:
        return rest

    with pytest.raises(ConfigurationError, match="only static segments and whole"):
        App(controllers=[bad])


def test_a_path_converter_followed_by_a_static_segment_and_a_name():
    # The listener hooks' registration path: /{resource:path}/_hooks/listeners/http/{id}.
    @http.PUT("/{resource:path}/_hooks/listeners/http/{id}")
    def listener(resource: str, id: str) -> str:
        return f"{resource} {id}"

    @http.PUT("/{resource:path}/_hooks/listeners/http/all")
    def every(resource: str) -> str:
        return f"all of {resource}"

    client = TestClient(App(controllers=[listener, every]))
    assert client.put("/data/orders/_hooks/listeners/http/audit").text == "data/orders audit"
    assert client.put("/data/orders/_hooks/listeners/http/all").text == "all of data/orders"
    for refused in (
        "/data/_hooks/listeners/http/..",
        "/_hooks/listeners/http/x",
        "/data/_hooks/listeners/http/",
        "/data/_hooks/listeners/http/a/b",
    ):
        assert client.put(refused).status_code == 404, refused


def test_a_path_converter_followed_by_static_segments():
    @http.GET("/{resource:path}/_hooks/route")
    def hook(resource: str) -> str:
        return "hook " + resource

    @http.GET("/{resource:path}/edit")
    def edit(resource: str) -> str:
        return "edit " + resource

    @http.GET("/{anything:path}")
    def other(anything: str) -> str:
        return "other " + anything

    client = client_for(hook, edit, other)
    assert client.get("/data/a/_hooks/route").text == "hook data/a"
    assert client.get("/d/_hooks/route/").text == "hook d"
    assert client.get("/a/b/c/edit").text == "edit a/b/c"
    assert client.get("/_hooks/route").text == "other _hooks/route"  # the value is not empty
    assert client.get("/a/_hooks/route/x").text == "other a/_hooks/route/x"
    assert client.get("/a/../_hooks/route").status_code == 404  # SECURITY: no '..' value
    assert client.post("/a/edit").status_code == 405


def test_unknown_converter_is_a_configuration_error():
    @http.GET("/items/{id:int}")
    def bad(id: int) -> str:
        return ""

    with pytest.raises(ConfigurationError, match="unknown converter"):
        App(controllers=[bad])


def test_route_path_must_be_a_string():
    with pytest.raises(ConfigurationError, match="must be a str"):
        http.GET(42)  # type: ignore[arg-type]


def test_unicode_static_path():
    @http.GET("/café")
    def cafe() -> str:
        return "café"

    client = client_for(cafe)
    response = client.get("/caf%C3%A9")
    assert response.status_code == 200
    assert response.text == "café"


def test_unicode_path_parameter():
    @http.GET("/greet/{name}")
    def greet(name: str) -> str:
        return name

    assert client_for(greet).get("/greet/%E6%97%A5%E6%9C%AC").text == "日本"


# -- precedence --------------------------------------------------------------------------------


@pytest.mark.parametrize("static_first", [True, False], ids=["static-first", "param-first"])
def test_static_beats_parametrised_whatever_the_order(static_first):
    @http.GET("/users/admin")
    def admin() -> str:
        return "admin"

    @http.GET("/users/{id}")
    def user(id: str) -> str:
        return "user " + id

    controllers = [admin, user] if static_first else [user, admin]
    client = client_for(*controllers)
    assert client.get("/users/admin").text == "admin"
    assert client.get("/users/bob").text == "user bob"


@pytest.mark.parametrize("static_first", [True, False], ids=["static-first", "param-first"])
def test_static_beats_parametrised_in_the_middle_of_a_path(static_first):
    @http.GET("/users/me/posts")
    def mine() -> str:
        return "mine"

    @http.GET("/users/{id}/posts")
    def theirs(id: str) -> str:
        return "theirs " + id

    controllers = [mine, theirs] if static_first else [theirs, mine]
    client = client_for(*controllers)
    assert client.get("/users/me/posts").text == "mine"
    assert client.get("/users/42/posts").text == "theirs 42"


def test_matching_backtracks_from_a_static_dead_end():
    @http.GET("/a/static/x")
    def static() -> str:
        return "static"

    @http.GET("/a/{p}/y")
    def param(p: str) -> str:
        return "param " + p

    client = client_for(static, param)
    assert client.get("/a/static/x").text == "static"
    assert client.get("/a/static/y").text == "param static"


def test_parameter_beats_path_converter():
    @http.GET("/docs/{rest:path}")
    def rest(rest: str) -> str:
        return "rest " + rest

    @http.GET("/docs/{page}")
    def page(page: str) -> str:
        return "page " + page

    client = client_for(rest, page)
    assert client.get("/docs/intro").text == "page intro"
    assert client.get("/docs/intro/more").text == "rest intro/more"


def test_static_controller_path_beats_a_parametrised_one():
    client = client_for(UserController)
    assert client.get("/users/admin").text == "admin page"


# -- automatic HEAD and OPTIONS ----------------------------------------------------------------


def test_head_is_served_by_get_without_a_body():
    @http.GET("/page")
    def page() -> str:
        return "<p>hello</p>"

    client = client_for(page)
    got = client.get("/page")
    head = client.head("/page")
    assert head.status_code == 200
    assert head.data == b""
    assert head.headers["Content-Length"] == got.headers["Content-Length"] == "12"
    assert head.headers["Content-Type"] == got.headers["Content-Type"]
    assert sorted(head.headers.keys()) == sorted(got.headers.keys())


def test_head_of_a_json_route_keeps_the_headers():
    @http.GET("/data/{id}")
    def data(id: int) -> dict:
        return {"id": id}

    client = client_for(data)
    head = client.head("/data/5")
    assert head.status_code == 200
    assert head.data == b""
    assert head.headers["Content-Type"] == "application/json"
    assert head.headers["Content-Length"] == str(len(b'{"id":5}'))


def test_head_of_a_streamed_body_sends_no_body():
    @http.GET("/stream")
    def stream():
        yield "a"
        yield "b"

    response = client_for(stream).head("/stream")
    assert response.status_code == 200
    assert response.data == b""


def test_explicit_head_route_wins_over_get():
    @http.GET("/x")
    def get() -> str:
        return "get"

    @http.HEAD("/x")
    def head() -> tuple:
        return "", 200, {"X-Head": "yes"}

    response = client_for(get, head).head("/x")
    assert response.headers["X-Head"] == "yes"


def test_head_on_a_post_only_route_is_405():
    @http.POST("/x")
    def post() -> str:
        return "post"

    response = client_for(post).head("/x")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST, OPTIONS"
    assert response.data == b""


def test_automatic_options():
    @http.GET("/x").POST()
    def x() -> str:
        return "x"

    response = client_for(x).options("/x")
    assert response.status_code == 204
    assert response.headers["Allow"] == "GET, HEAD, POST, OPTIONS"
    assert "Content-Type" not in response.headers
    assert response.data == b""


def test_automatic_options_on_a_parametrised_path():
    @http.DELETE("/items/{id}")
    def delete(id: int) -> None:
        return None

    response = client_for(delete).options("/items/3")
    assert response.status_code == 204
    assert response.headers["Allow"] == "DELETE, OPTIONS"


def test_automatic_options_on_an_unknown_path_is_404():
    @http.GET("/x")
    def x() -> str:
        return "x"

    response = client_for(x).options("/nope")
    assert response.status_code == 404
    assert response.json == {"message": "Not Found"}


def test_explicit_options_route_wins():
    @http.GET("/x")
    def x() -> str:
        return "x"

    @http.OPTIONS("/x")
    def options() -> tuple:
        return "", 200, {"X-Custom": "1"}

    response = client_for(x, options).options("/x")
    assert response.status_code == 200
    assert response.headers["X-Custom"] == "1"


# -- 404 and 405 -------------------------------------------------------------------------------


def test_unknown_path_is_a_json_404(client):
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.content_type == "application/json"
    assert response.json == {"message": "Not Found"}


def test_wrong_method_is_405_with_allow(client):
    response = client.post("/hello")
    assert response.status_code == 405
    assert response.content_type == "application/json"
    assert response.json == {"message": "Method Not Allowed"}
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS"


def test_405_lists_every_method_of_a_parametrised_path():
    @http.GET("/items/{id}")
    def read(id: int) -> str:
        return "read"

    @http.PUT("/items/{id}")
    def replace(id: int) -> str:
        return "replace"

    @http.DELETE("/items/{id}")
    def delete(id: int) -> str:
        return "delete"

    response = client_for(read, replace, delete).post("/items/1")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD, PUT, DELETE, OPTIONS"


def test_405_merges_methods_from_overlapping_templates():
    @http.GET("/items/{id}")
    def read(id: str) -> str:
        return "read"

    @http.DELETE("/items/special")
    def special() -> str:
        return "special"

    client = client_for(read, special)
    # /items/special has DELETE (static) and GET (through the parameter): a GET falls through.
    assert client.get("/items/special").text == "read"
    response = client.post("/items/special")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD, DELETE, OPTIONS"


def test_a_path_prefix_of_a_route_is_404_not_405(client):
    assert client.post("/hell").status_code == 404


# -- trailing slash -----------------------------------------------------------------------------


def test_trailing_slash_is_insignificant_when_requested():
    @http.GET("/users")
    def users() -> str:
        return "users"

    client = client_for(users)
    assert client.get("/users").text == "users"
    assert client.get("/users/").text == "users"


def test_trailing_slash_is_insignificant_when_declared():
    @http.GET("/users/")
    def users() -> str:
        return "users"

    app = App(controllers=[users])
    assert app.routes[0].path == "/users"
    client = TestClient(app)
    assert client.get("/users").text == "users"
    assert client.get("/users/").text == "users"


def test_trailing_slash_on_a_parametrised_path():
    @http.GET("/users/{id}")
    def user(id: int) -> dict:
        return {"id": id}

    assert client_for(user).get("/users/9/").json == {"id": 9}


def test_root_keeps_its_slash():
    @http.GET("/")
    def root() -> str:
        return "root"

    client = client_for(root)
    assert client.get("/").text == "root"
    assert client.get("").text == "root"


def test_empty_segments_inside_a_path_do_not_match():
    @http.GET("/a/b")
    def ab() -> str:
        return "ab"

    assert client_for(ab).get("/a//b").status_code == 404


# -- url_for and app.routes --------------------------------------------------------------------


def test_url_for_a_static_route():
    @http.GET("/about").name("about")
    def about() -> str:
        return "about"

    assert App(controllers=[about]).url_for("about") == "/about"


def test_url_for_fills_and_percent_encodes_parameters():
    @http.GET("/users/{id}/files/{slug}").name("file")
    def file(id: int, slug: str) -> str:
        return slug

    app = App(controllers=[file])
    assert app.url_for("file", id=3, slug="a b/c?d#e") == "/users/3/files/a%20b%2Fc%3Fd%23e"
    url = app.url_for("file", id=3, slug="naïve & co")
    assert url == "/users/3/files/na%C3%AFve%20%26%20co"
    assert TestClient(app).get(url).text == "naïve & co"


def test_url_for_accepts_a_parameter_called_name():
    @http.GET("/files/{name}.{ext}").name("file")
    def file(name: str, ext: str) -> str:
        return name

    assert App(controllers=[file]).url_for("file", name="report", ext="pdf") == "/files/report.pdf"


def test_url_for_keeps_slashes_of_a_path_parameter():
    @http.GET("/files/{rest:path}").name("files")
    def files(rest: str) -> str:
        return rest

    app = App(controllers=[files])
    url = app.url_for("files", rest="a b/c.txt")
    assert url == "/files/a%20b/c.txt"
    assert TestClient(app).get(url).text == "a b/c.txt"


def test_url_for_puts_extra_parameters_in_the_query():
    @http.GET("/users/{id}").name("user")
    def user(id: int) -> str:
        return ""

    app = App(controllers=[user])
    assert app.url_for("user", id=1, tab="posts & more") == "/users/1?tab=posts+%26+more"
    assert app.url_for("user", id=1, tag=["a", "b"]) == "/users/1?tag=a&tag=b"


def test_url_for_a_controller_method_by_default_name():
    assert App(controllers=[UserController]).url_for("UserController.show", id=5) == "/users/5"


def test_url_for_an_unknown_name():
    with pytest.raises(LookupError, match="no route named 'nope'"):
        App(controllers=[UserController]).url_for("nope")


def test_url_for_missing_parameter():
    with pytest.raises(ValueError, match="needs id"):
        App(controllers=[UserController]).url_for("UserController.show")


def test_a_name_given_to_two_paths_is_a_configuration_error():
    @http.GET("/a").name("same")
    def a() -> str:
        return "a"

    @http.GET("/b").name("same")
    def b() -> str:
        return "b"

    with pytest.raises(ConfigurationError, match="names both"):
        App(controllers=[a, b])


def test_app_routes_lists_routes_in_registration_order():
    @http.GET("/one")
    def one() -> str:
        return "1"

    @http.POST("/two")
    def two() -> str:
        return "2"

    app = App(controllers=[one, two])
    assert [(route.methods, route.path) for route in app.routes] == [
        (("GET",), "/one"),
        (("POST",), "/two"),
    ]
    app.routes.clear()  # a copy: the app keeps its table
    assert len(app.routes) == 2


# -- many routes --------------------------------------------------------------------------------


def _many_routes(count: int) -> list:
    controllers = []
    for index in range(count):

        def static(index: int = index) -> str:
            return f"static {index}"

        def param(id: int, index: int = index) -> str:
            return f"param {index} {id}"

        def mixed(name: str, index: int = index) -> str:
            return f"mixed {index} {name}"

        static.__name__ = f"static_{index}"
        param.__name__ = f"param_{index}"
        mixed.__name__ = f"mixed_{index}"
        controllers.append(http.GET(f"/s{index}/page")(static))
        controllers.append(http.GET(f"/p{index}/{{id}}")(param))
        controllers.append(http.GET(f"/m/{{name}}.v{index}")(mixed))
    return controllers


def test_a_thousand_routes_still_match_correctly():
    app = App(controllers=_many_routes(1000))
    assert len(app.routes) == 3000
    client = TestClient(app)
    for index in (0, 1, 499, 998, 999):
        assert client.get(f"/s{index}/page").text == f"static {index}"
        assert client.get(f"/p{index}/{index * 7}").text == f"param {index} {index * 7}"
        assert client.get(f"/m/file.v{index}").text == f"mixed {index} file"
    assert client.get("/s1000/page").status_code == 404
    assert client.get("/p1000/1").status_code == 404
    assert client.get("/p5/notanint").status_code == 400
    assert client.post("/p5/1").status_code == 405


def test_a_detached_route_is_listed_and_named_but_never_matched():
    @http.PUT("/{resource:path}/_hooks/route").name("register")
    def register(resource: str) -> str:
        return resource

    @http.GET("/{rest:path}")
    def catch_all(rest: str) -> str:
        return "catch-all " + rest

    @http.GET("/hello")
    def hello() -> str:
        return "hello"

    app = App(controllers=[register, catch_all, hello])
    route = next(route for route in app.router.routes if route.name == "register")
    app.router.detach(route)
    assert route in app.router.routes
    assert app.router.url_for("register", resource="a/b") == "/a/b/_hooks/route"
    assert app.router.match("PUT", "/a/b/_hooks/route") == Miss(("GET", "HEAD", "OPTIONS"))
    client = TestClient(app)
    assert client.get("/a/b/_hooks/route").text == "catch-all a/b/_hooks/route"
    assert client.get("/hello").text == "hello"
    app.router.detach(route)  # twice: nothing more happens
    assert client.put("/a/b/_hooks/route").status_code == 405
