"""Mounting: ``http.mount(prefix, controllers)`` puts a group of controllers under a prefix.

Paths, groups, names and middlewares of the mount apply to every route in it; mounts nest;
the same controllers mounted twice make two sets of routes; clashes are build-time errors.
"""

from __future__ import annotations

from typing import Any

import pytest

from workflowhttp import App, ConfigurationError, HttpEvent, http, http_workflow
from workflowhttp.extensions import Extension
from workflowhttp.testing import TestClient


@http.controller("/users").group("users")
class UserController:
    @http.GET("/{id}").name("users.show").group("read")
    def show(self, id: int) -> dict[str, int]:
        return {"id": id}

    @http.GET("/")
    def index(self) -> list[int]:
        return [1, 2]


@http.GET("/hello")
def hello(name: str = "world") -> str:
    return f"Hello {name}"


@http.GET("/")
def root() -> str:
    return "root"


def paths(app: App) -> list[str]:
    return [f"{','.join(route.methods)} {route.path} {route.name}" for route in app.routes]


# -- paths, names, groups ------------------------------------------------------------------------


def test_a_mount_puts_its_controllers_under_the_prefix() -> None:
    app = App(controllers=[http.mount("/v1", [UserController, hello, root])])
    assert paths(app) == [
        "GET /v1/users/{id} users.show",
        "GET /v1/users UserController.index",
        "GET /v1/hello hello",
        "GET /v1 root",
    ]
    client = TestClient(app)
    assert client.get("/v1/users/7").json == {"id": 7}
    assert client.get("/v1/users").json == [1, 2]
    assert client.get("/v1/hello?name=ada").text == "Hello ada"
    assert client.get("/v1").text == "root"
    assert client.get("/v1/").text == "root"  # the trailing-slash policy holds
    assert client.get("/users/7").status_code == 404  # not at the old paths


@pytest.mark.parametrize(
    "prefix",
    ["/v1", "/v1/", "v1", "/v1//"],
    ids=["plain", "trailing-slash", "no-leading-slash", "trailing-slashes"],
)
def test_the_prefix_is_normalized_like_a_base_path(prefix: str) -> None:
    app = App(controllers=[http.mount(prefix, [hello])])
    assert [route.path for route in app.routes] == ["/v1/hello"]
    assert TestClient(app).get("/v1/hello").text == "Hello world"


def test_a_mount_at_the_root_changes_no_path() -> None:
    app = App(controllers=[http.mount("/", [hello], name="top")])
    assert paths(app) == ["GET /hello top.hello"]


def test_a_named_mount_prefixes_every_route_name_and_url_for_knows_it() -> None:
    app = App(controllers=[http.mount("/v1", [UserController, hello], name="v1")])
    assert [route.name for route in app.routes] == [
        "v1.users.show",
        "v1.UserController.index",
        "v1.hello",
    ]
    assert app.url_for("v1.users.show", id=1) == "/v1/users/1"
    assert app.url_for("v1.hello", name="ada") == "/v1/hello?name=ada"
    with pytest.raises(LookupError, match=r"no route named 'users.show'; mounted: 'v1.users.show'"):
        app.url_for("users.show", id=1)


def test_an_unnamed_mount_keeps_the_names() -> None:
    app = App(controllers=[http.mount("/v1", [UserController])])
    assert app.url_for("users.show", id=3) == "/v1/users/3"


def test_the_mount_groups_come_first_without_duplicates() -> None:
    app = App(controllers=[http.mount("/v1", [UserController, hello], groups=("api", "users"))])
    groups = {route.name: route.groups for route in app.routes}
    assert groups == {
        "users.show": ("api", "users", "read"),
        "UserController.index": ("api", "users"),
        "hello": ("api", "users"),
    }


def test_listeners_select_mounted_routes_by_the_mount_groups() -> None:
    app = App(
        controllers=[hello, http.mount("/admin", [UserController], groups=("admin",))],
    )

    @app.listen(http_workflow.on_auth)
    def admins_only(event: HttpEvent) -> None:
        if event.route is not None and "admin" in event.route.groups:
            event.access_denied("admins only")

    client = TestClient(app)
    assert client.get("/admin/users/1").status_code == 403
    assert client.get("/hello").status_code == 200


def test_mounts_nest_outer_first() -> None:
    inner = http.mount("/v1", [UserController], name="v1", groups=("v1", "api"))
    app = App(controllers=[http.mount("/api", [inner, hello], name="api", groups=("api",))])
    assert paths(app) == [
        "GET /api/v1/users/{id} api.v1.users.show",
        "GET /api/v1/users api.v1.UserController.index",
        "GET /api/hello api.hello",
    ]
    assert app.routes[0].groups == ("api", "v1", "users", "read")
    assert app.url_for("api.v1.users.show", id=2) == "/api/v1/users/2"
    assert TestClient(app).get("/api/v1/users/2").json == {"id": 2}


def test_the_same_controllers_mounted_twice_give_two_sets_of_routes() -> None:
    app = App(
        controllers=[
            http.mount("/v1", [UserController, hello], name="v1"),
            http.mount("/v2", [UserController, hello], name="v2", groups=("beta",)),
        ]
    )
    client = TestClient(app)
    assert client.get("/v1/users/1").json == {"id": 1}
    assert client.get("/v2/users/2").json == {"id": 2}
    assert app.url_for("v1.users.show", id=1) == "/v1/users/1"
    assert app.url_for("v2.users.show", id=1) == "/v2/users/1"
    by_name = {route.name: route for route in app.routes}
    assert by_name["v1.hello"].groups == ()  # nothing of one mount leaks into the other
    assert by_name["v2.hello"].groups == ("beta",)
    # Nothing global either: another app sees the controllers as declared.
    assert paths(App(controllers=[hello])) == ["GET /hello hello"]


def test_a_prefix_may_hold_path_parameters() -> None:
    @http.GET("/orders/{id}")
    def order(tenant: str, id: int) -> dict[str, Any]:
        return {"tenant": tenant, "id": id}

    app = App(controllers=[http.mount("/{tenant}", [order], name="shop")])
    assert TestClient(app).get("/acme/orders/4").json == {"tenant": "acme", "id": 4}
    assert app.url_for("shop.order", tenant="acme", id=4) == "/acme/orders/4"


def test_a_mount_can_be_added_after_the_app_is_built() -> None:
    app = App(controllers=[hello])
    app.add_controller(http.mount("/v1", [UserController], name="v1"))
    assert TestClient(app).get("/v1/users/5").json == {"id": 5}


# -- middlewares ---------------------------------------------------------------------------------


class Tag:
    """A middleware that appends its name to ``X-Trail`` on the way out."""

    def __init__(self, name: str) -> None:
        self.name = name

    def outgoing(self, event: HttpEvent) -> None:
        trail = event.response.headers.get("X-Trail")
        event.response.headers["X-Trail"] = f"{trail},{self.name}" if trail else self.name


@http.controller("/tagged").middleware(Tag("controller"))
class TaggedController:
    @http.GET("/").middleware(Tag("route"))
    def index(self) -> str:
        return "tagged"


def test_mount_middlewares_run_for_its_routes_before_the_controller_ones() -> None:
    inner = http.mount("/in", [TaggedController, hello], middlewares=[Tag("inner")])
    app = App(controllers=[root, http.mount("/out", [inner], middlewares=[Tag("outer")])])
    client = TestClient(app)
    # Outgoing steps run in reverse: the route's first, the outer mount's last.
    assert client.get("/out/in/tagged").headers["X-Trail"] == "route,controller,inner,outer"
    assert client.get("/out/in/hello").headers["X-Trail"] == "inner,outer"
    assert "X-Trail" not in client.get("/").headers  # a route outside the mount


# -- errors --------------------------------------------------------------------------------------


def test_a_duplicate_between_two_mounts_names_both() -> None:
    @http.GET("/users/{id}")
    def other_show(id: int) -> str:
        return "other"

    with pytest.raises(ConfigurationError) as raised:
        App(
            controllers=[
                http.mount("/v1", [UserController], name="first"),
                http.mount("/v1", [other_show], name="second"),
            ]
        )
    assert str(raised.value) == (
        "duplicate route GET /v1/users/{id}: first.users.show (mounted at /v1) and "
        "second.other_show (mounted at /v1)"
    )


def test_a_failing_mount_adds_none_of_its_routes() -> None:
    app = App(controllers=[http.mount("/v1", [hello])])
    with pytest.raises(ConfigurationError, match="duplicate route GET /v1/hello"):
        app.add_controller(http.mount("/v1", [UserController, hello]))
    assert paths(app) == ["GET /v1/hello hello"]


class Plugin(Extension):
    controllers = (hello,)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((42, [hello]), "mount prefix must be a str"),
        (("/v1", "hello"), "controllers must be a list"),
        (("/v1", hello), "controllers must be a list"),
        (("/v1", []), "has no controllers"),
        (("/v1", [hello], {"name": ""}), "name must be a non-empty str"),
        (("/v1", [hello], {"name": "..."}), "name must be a non-empty str"),
        (("/v1", [hello], {"name": 3}), "name must be a non-empty str"),
        (("/v1", [hello], {"groups": "admin"}), "not one string"),
    ],
    ids=[
        "prefix-not-a-string",
        "controllers-a-string",
        "controllers-one-function",
        "no-controllers",
        "empty-name",
        "dots-only-name",
        "name-not-a-string",
        "groups-one-string",
    ],
)
def test_bad_mount_arguments_are_configuration_errors(
    arguments: tuple[Any, ...], message: str
) -> None:
    *positional, options = arguments if isinstance(arguments[-1], dict) else (*arguments, {})
    with pytest.raises(ConfigurationError, match=message):
        http.mount(*positional, **options)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (object(), "declares no routes"),
        (Plugin(), "is an extension"),
    ],
    ids=["not-a-controller", "an-extension"],
)
def test_what_cannot_be_mounted_fails_when_the_app_is_built(item: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        App(controllers=[http.mount("/v1", [hello, item])])
