"""The OpenAPI document: what ``app.openapi()`` says of parameters, bodies and responses.

Every document built here is also checked by ``openapi-spec-validator`` (a real OpenAPI 3.1
validator nobody here wrote).
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import msgspec
import pytest
from openapi_spec_validator import validate

from workflowhttp import (
    App,
    Body,
    ConfigurationError,
    Cookie,
    Header,
    HTMLResponse,
    HttpEvent,
    JSONResponse,
    Query,
    http,
)
from workflowhttp.hooks import Hooks
from workflowhttp.openapi import OpenAPI
from workflowhttp.params import ParameterInfo
from workflowhttp.proxy import Proxy

Positive = Annotated[int, msgspec.Meta(ge=1, le=1000)]
Slug = Annotated[str, msgspec.Meta(min_length=2, max_length=20, pattern="^[a-z-]+$")]


class Address(msgspec.Struct):
    """Where someone lives."""

    street: str
    zip: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{5}$")]


@dataclasses.dataclass
class NewPerson:
    """The body of ``POST /people``."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    address: Address
    tags: list[Slug] = dataclasses.field(default_factory=list)


class Person(msgspec.Struct):
    id: int
    name: str
    address: Address


class Note(TypedDict):
    text: str
    stars: NotRequired[int]


@dataclasses.dataclass
class Paging:
    page: Positive = 1
    sort: list[str] = dataclasses.field(default_factory=list)


@http.controller("/people")
class PeopleController:
    """People: everyone we know.

    The long story.
    """

    @http.GET("/{id}").name("people.show").description("one person")
    def show(
        self,
        id: Positive,
        verbose: bool = False,
        key: Annotated[str, Header("X-Key")] = "none",
        session: Annotated[str | None, Cookie()] = None,
    ) -> Person: ...

    @http.GET("/").name("people.list")
    def index(
        self,
        tag: list[Slug] = [],  # noqa: B006 - never mutated
        paging: Annotated[Paging, Query()] = Paging(),  # noqa: B008
    ) -> list[Person]:
        """List people.

        Filtered by tag, a page at a time.
        """
        return []

    @http.POST("/").name("people.create")
    def create(self, person: NewPerson) -> tuple[Person, Literal[201]]: ...

    @http.DELETE("/{id}").name("people.delete").group("admin")
    def delete(self, id: Positive) -> None: ...


@http.POST("/notes").name("notes.add")
def add_note(note: Note, token: Annotated[str, Header()]) -> Note | None: ...


@http.PUT("/files/{name:path}").POST()
def upload(name: str, data: Annotated[bytes, Body()]) -> tuple[dict[str, int], int]: ...


@http.POST("/echo").name("echo")
def echo(text: Annotated[str, Body()]) -> str:
    return text


@http.GET("/page").name("page").group("site")
def page() -> HTMLResponse:
    return HTMLResponse("<p>hi</p>")


@http.GET("/anything").name("anything")
def anything(event: HttpEvent) -> JSONResponse:
    return JSONResponse({})


@http.GET("/untyped").name("untyped")
def untyped():  # type: ignore[no-untyped-def]
    return "?"


@http.POST("/jobs").name("jobs.start").data("status", 202)
def start_job(name: str) -> dict[str, str]:
    return {"name": name}


@http.GET("/secret").name("secret").data("openapi", False)
def secret() -> str:
    return "not in the document"


CONTROLLERS = [PeopleController, add_note, upload, echo, page, anything, untyped, start_job]


def document_of(app: App) -> dict[str, Any]:
    document = app.openapi()
    validate(document)  # raises on anything that is not a valid OpenAPI 3.1 document
    return document


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document of CONTROLLERS (built and validated once; the tests only read it)."""
    app = App(controllers=[*CONTROLLERS, secret], openapi=OpenAPI("People", "2.0", docs=None))
    return document_of(app)


def operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    result: dict[str, Any] = document["paths"][path][method]
    return result


def parameters(op: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(p["in"], p["name"]): p for p in op.get("parameters", [])}


def component(document: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    name = ref["$ref"].removeprefix("#/components/schemas/")
    result: dict[str, Any] = document["components"]["schemas"][name]
    return result


# -- the plan's metadata ----------------------------------------------------------------------


def test_a_plan_says_what_each_resolver_reads() -> None:
    app = App(controllers=[PeopleController])
    route = next(r for r in app.routes if r.name == "people.show")
    assert route.plan.parameters == (
        ParameterInfo("id", "path", "id", Positive, inspect.Parameter.empty, True),
        ParameterInfo("verbose", "query", "verbose", bool, False, False),
        ParameterInfo("key", "header", "X-Key", str, "none", False),
        ParameterInfo("session", "cookie", "session", str | None, None, False),
    )
    assert [info.argument for info in route.plan.parameters] == [
        name for name, _ in route.plan.resolvers
    ]


def test_injected_and_kwargs_parameters_are_described() -> None:
    @http.GET("/x/{rest:path}")
    def handler(event: HttpEvent, **path: str) -> str:
        return ""

    route = App(controllers=[handler]).routes[0]
    assert [(i.argument, i.source) for i in route.plan.parameters] == [
        ("event", "injected"),
        ("rest", "path"),
    ]


# -- the document's frame ---------------------------------------------------------------------


def test_info_tags_and_operation_ids(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert document["info"] == {"title": "People", "version": "2.0"}
    assert document["tags"] == [
        {"name": "PeopleController", "description": "People: everyone we know."},
        {"name": "site"},
    ]
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert operation(document, "get", "/people/{id}")["operationId"] == "people.show"
    # A route with several methods: one operation each, named by method.
    assert operation(document, "put", "/files/{name}")["operationId"] == "upload.put"
    assert operation(document, "post", "/files/{name}")["operationId"] == "upload.post"
    assert operation(document, "get", "/page")["tags"] == ["site"]  # the first group
    assert "tags" not in operation(document, "post", "/echo")


def test_summary_and_description(document: dict[str, Any]) -> None:
    show = operation(document, "get", "/people/{id}")
    assert show["summary"] == "one person"  # .description()
    assert "description" not in show  # no docstring
    listed = operation(document, "get", "/people")
    assert listed["summary"] == "List people."  # the docstring's first paragraph
    assert listed["description"] == "Filtered by tag, a page at a time."


def test_left_out_routes(document: dict[str, Any]) -> None:
    assert "/secret" not in document["paths"]  # .data("openapi", False)
    assert "/openapi.json" not in document["paths"]  # the document's own route
    assert "head" not in document["paths"]["/people/{id}"]  # the automatic HEAD


# -- parameters -------------------------------------------------------------------------------


def test_path_query_header_and_cookie_parameters(document: dict[str, Any]) -> None:
    found = parameters(operation(document, "get", "/people/{id}"))
    assert found == {
        ("path", "id"): {
            "name": "id",
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
        },
        ("query", "verbose"): {
            "name": "verbose",
            "in": "query",
            "required": False,
            "schema": {"type": "boolean", "default": False},
        },
        ("header", "X-Key"): {
            "name": "X-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "default": "none"},
        },
        # `str | None = None`: optional, and None is no default worth showing.
        ("cookie", "session"): {
            "name": "session",
            "in": "cookie",
            "required": False,
            "schema": {"type": "string"},
        },
    }


def test_a_required_header_and_a_named_query_list(document: dict[str, Any]) -> None:
    found = parameters(operation(document, "post", "/notes"))
    assert found[("header", "token")]["required"] is True


def test_query_lists_and_query_models(document: dict[str, Any]) -> None:
    found = parameters(operation(document, "get", "/people"))
    assert found[("query", "tag")] == {
        "name": "tag",
        "in": "query",
        "required": False,
        "schema": {
            "type": "array",
            "items": {"type": "string", "minLength": 2, "maxLength": 20, "pattern": "^[a-z-]+$"},
            "default": [],
        },
    }
    # The query model: one query parameter per field, with the field's constraints.
    assert found[("query", "page")] == {
        "name": "page",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1},
    }
    assert found[("query", "sort")]["schema"] == {
        "type": "array",
        "items": {"type": "string"},
        "default": [],
    }
    assert ("query", "paging") not in found


@dataclasses.dataclass
class Search:
    q: str
    limit: int = 10


def test_a_required_query_model_requires_its_required_fields() -> None:
    @http.GET("/search")
    def search(terms: Annotated[Search, Query()]) -> list[str]:
        return []

    found = parameters(operation(document_of(App(controllers=[search])), "get", "/search"))
    assert found[("query", "q")]["required"] is True
    assert found[("query", "limit")]["required"] is False


# -- bodies -----------------------------------------------------------------------------------


def test_a_model_body_is_json_or_a_form_with_nested_components(document: dict[str, Any]) -> None:
    body = operation(document, "post", "/people")["requestBody"]
    assert body["required"] is True
    ref = {"$ref": "#/components/schemas/NewPerson"}
    assert body["content"] == {
        "application/json": {"schema": ref},
        "application/x-www-form-urlencoded": {"schema": ref},
        "multipart/form-data": {"schema": ref},
    }
    schemas = document["components"]["schemas"]
    assert schemas["NewPerson"]["properties"]["address"] == {"$ref": "#/components/schemas/Address"}
    assert schemas["NewPerson"]["required"] == ["name", "address"]
    assert schemas["NewPerson"]["properties"]["tags"]["items"]["pattern"] == "^[a-z-]+$"
    assert schemas["Address"]["description"] == "Where someone lives."
    assert schemas["Address"]["properties"]["zip"] == {
        "type": "string",
        "pattern": "^[0-9]{5}$",
    }


def test_a_typeddict_body(document: dict[str, Any]) -> None:
    body = operation(document, "post", "/notes")["requestBody"]
    schema = component(document, body["content"]["application/json"]["schema"])
    assert schema["required"] == ["text"]  # `stars` is NotRequired
    assert set(schema["properties"]) == {"text", "stars"}


def test_raw_and_text_bodies(document: dict[str, Any]) -> None:
    assert operation(document, "put", "/files/{name}")["requestBody"] == {
        "required": True,
        "content": {"application/octet-stream": {}},
    }
    assert operation(document, "post", "/echo")["requestBody"]["content"] == {
        "text/plain": {"schema": {"type": "string"}}
    }


class Order(msgspec.Struct):
    item: str
    count: Positive


def test_a_route_declares_the_body_its_controller_validates_itself() -> None:
    @http.POST("/orders").data("body", Order)
    def order(data: Annotated[bytes, Body()]) -> None: ...

    document = document_of(App(controllers=[order]))
    body = operation(document, "post", "/orders")["requestBody"]
    assert body == {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}},
    }
    assert document["components"]["schemas"]["Order"]["properties"]["count"]["minimum"] == 1


# -- responses --------------------------------------------------------------------------------


def success(op: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in op["responses"].items()
        if not key.startswith(("4", "5")) and "$ref" not in value
    }


def test_responses_from_the_return_annotation(document: dict[str, Any]) -> None:
    person = {"$ref": "#/components/schemas/Person"}
    assert success(operation(document, "get", "/people/{id}")) == {
        "200": {"description": "OK", "content": {"application/json": {"schema": person}}}
    }
    assert success(operation(document, "get", "/people"))["200"]["content"] == {
        "application/json": {"schema": {"type": "array", "items": person}}
    }
    # (body, Literal[201]) → 201; None → 204.
    assert list(success(operation(document, "post", "/people"))) == ["201"]
    assert success(operation(document, "delete", "/people/{id}")) == {
        "204": {"description": "No Content"}
    }
    # X | None → X as 200, or 204.
    assert list(success(operation(document, "post", "/notes"))) == ["200", "204"]
    # (body, int): some 2xx status only the controller knows.
    assert list(success(operation(document, "put", "/files/{name}"))) == ["2XX"]
    assert success(operation(document, "post", "/echo"))["200"]["content"] == {
        "text/plain": {"schema": {"type": "string"}}
    }


def test_responses_the_controller_makes(document: dict[str, Any]) -> None:
    assert success(operation(document, "get", "/page")) == {
        "default": {
            "description": "The controller's answer.",
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    }
    assert success(operation(document, "get", "/anything"))["default"]["content"] == {
        "application/json": {"schema": {}}
    }
    assert success(operation(document, "get", "/untyped")) == {
        "default": {"description": "The controller's answer."}
    }


def test_a_route_declared_status(document: dict[str, Any]) -> None:
    assert list(success(operation(document, "post", "/jobs"))) == ["202"]


def test_the_kernels_answers_are_named_components(document: dict[str, Any]) -> None:
    responses = document["components"]["responses"]
    assert set(responses) == {
        "BadRequest",
        "AccessDenied",
        "NotFound",
        "MethodNotAllowed",
        "PayloadTooLarge",
        "UnsupportedMediaType",
        "InternalServerError",
    }
    bad = responses["BadRequest"]["content"]["application/json"]["schema"]
    schemas = document["components"]["schemas"]
    assert bad == {"$ref": "#/components/schemas/ParametersFailed"}
    assert schemas["ParametersFailed"]["required"] == ["message"]
    assert schemas["ParametersFailed"]["properties"]["errors"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/ParameterError"},
    }
    assert schemas["ParameterError"]["required"] == ["path", "message"]
    assert responses["MethodNotAllowed"]["headers"] == {"Allow": {"schema": {"type": "string"}}}
    error = {"$ref": "#/components/schemas/Error"}
    assert responses["NotFound"]["content"] == {"application/json": {"schema": error}}


def refs(op: dict[str, Any]) -> dict[str, str]:
    return {
        key: value["$ref"].rsplit("/", 1)[1]
        for key, value in op["responses"].items()
        if "$ref" in value
    }


def test_which_operations_list_which_kernel_answers() -> None:
    app = App(controllers=CONTROLLERS, openapi=OpenAPI(docs=None, guarded_groups=["admin"]))
    document = document_of(app)
    # Every operation: 400 and 500.
    assert refs(operation(document, "get", "/page")) == {
        "400": "BadRequest",
        "500": "InternalServerError",
    }
    # A path parameter: 404.
    assert refs(operation(document, "get", "/people/{id}")) == {
        "400": "BadRequest",
        "404": "NotFound",
        "500": "InternalServerError",
    }
    # A body: 413, and 415 for a content type the route cannot decode.
    assert refs(operation(document, "post", "/people")) == {
        "400": "BadRequest",
        "413": "PayloadTooLarge",
        "415": "UnsupportedMediaType",
        "500": "InternalServerError",
    }
    # A group an auth listener guards: 403.
    assert refs(operation(document, "delete", "/people/{id}")) == {
        "400": "BadRequest",
        "403": "AccessDenied",
        "404": "NotFound",
        "500": "InternalServerError",
    }


def test_a_403_only_for_the_guarded_groups(document: dict[str, Any]) -> None:
    # The fixture's OpenAPI guards no group.
    assert "403" not in operation(document, "delete", "/people/{id}")["responses"]


class Error(msgspec.Struct):
    code: int


def test_a_model_named_like_a_kernel_schema_keeps_its_name() -> None:
    @http.GET("/error")
    def show_error() -> Error:
        return Error(1)

    document = document_of(App(controllers=[show_error]))
    schemas = document["components"]["schemas"]
    assert schemas["Error"]["properties"] == {"code": {"type": "integer"}}
    assert schemas["workflowhttp.Error"]["required"] == ["message"]
    not_found = document["components"]["responses"]["NotFound"]["content"]
    assert not_found["application/json"]["schema"] == {
        "$ref": "#/components/schemas/workflowhttp.Error"
    }


# -- proxy and hooks routes -------------------------------------------------------------------


def test_proxy_routes() -> None:
    api = Proxy("/api", "http://127.0.0.1:9", name="api")
    document = document_of(App(controllers=[api], openapi=OpenAPI(docs=None)))
    assert set(document["paths"]) == {"/api", "/api/{path}"}
    methods = document["paths"]["/api/{path}"]
    assert set(methods) == {"get", "put", "post", "delete", "patch"}
    post = methods["post"]
    assert post["tags"] == ["proxy"]
    assert post["summary"] == "proxy to http://127.0.0.1:9"
    assert post["requestBody"] == {"required": False, "content": {"*/*": {"schema": {}}}}
    assert "requestBody" not in methods["get"]
    assert parameters(post)[("path", "path")]["required"] is True
    assert post["responses"]["default"] == {"description": "The upstream's answer."}
    assert refs(post) == {
        "400": "BadRequest",
        "404": "NotFound",
        "413": "PayloadTooLarge",
        "500": "InternalServerError",
        "502": "BadGateway",
        "503": "ServiceUnavailable",
        "504": "GatewayTimeout",
    }
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)) == 10  # both routes are named "api"
    assert {"BadGateway", "GatewayTimeout"} <= set(document["components"]["responses"])


def test_hooks_registration_routes(tmp_path: Path) -> None:
    hooks = Hooks(f"sqlite:///{tmp_path / 'hooks.sqlite3'}")
    app = App(extensions=[hooks], openapi=OpenAPI(docs=None, guarded_groups=["hooks"]))
    document = document_of(app)
    assert set(document["paths"]) == {
        "/{resource}/_hooks/route",
        "/_hooks/routes",
        "/{resource}/_hooks/listeners/http/{id}",
        "/_hooks/listeners",
    }
    register = operation(document, "put", "/{resource}/_hooks/route")
    assert register["operationId"] == "hooks.route.register"
    assert register["tags"] == ["hooks"]
    assert register["summary"] == "Register (or replace) the route hook of a resource."
    # The controller reads the raw body; the route says it is a RouteSpec.
    assert register["requestBody"] == {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RouteSpec"}}},
    }
    assert set(parameters(register)) == {("path", "resource"), ("header", "X-Expire-After")}
    assert refs(register)["403"] == "AccessDenied"
    spec = document["components"]["schemas"]["RouteSpec"]
    assert spec["required"] == ["destination"]
    assert spec["properties"]["headers"]["items"] == {"$ref": "#/components/schemas/HeaderRule"}
    assert spec["properties"]["timeout"]["exclusiveMinimum"] == 0
    listed = operation(document, "get", "/_hooks/routes")
    assert parameters(listed)[("query", "q")]["required"] is False


# -- building it: lazily, once ----------------------------------------------------------------


def test_the_document_is_built_on_first_use_and_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    import workflowhttp.openapi as openapi_module

    calls: list[int] = []
    real = openapi_module.build_document

    def counting(routes: Any, config: OpenAPI) -> dict[str, Any]:
        calls.append(1)
        return real(routes, config)

    monkeypatch.setattr(openapi_module, "build_document", counting)
    app = App(controllers=[echo], openapi=OpenAPI(docs=None))
    assert calls == []  # not when the app is built
    first = app.openapi()
    assert app.openapi() == first
    assert calls == [1]
    first["paths"].clear()  # each call is a new dict: the kept document is untouched
    assert "/echo" in app.openapi()["paths"]
    app.add_controller(page)  # a route added later: built again, once
    assert "/page" in app.openapi()["paths"]
    assert "/page" in app.openapi()["paths"]
    assert calls == [1, 1]


def test_an_app_without_openapi_has_a_document_too() -> None:
    document = document_of(App(controllers=[echo]))
    assert document["info"] == {"title": "API", "version": "0.1.0"}
    assert "/openapi.json" not in document["paths"]


def test_servers_and_description() -> None:
    config = OpenAPI("T", "1", description="All of it.", servers=["/api/v1"], docs=None)
    document = document_of(App(controllers=[echo], openapi=config))
    assert document["info"]["description"] == "All of it."
    assert document["servers"] == [{"url": "/api/v1"}]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"path": "openapi.json"}, "must start with '/'"),
        ({"docs": "docs"}, "must start with '/'"),
        ({"path": None}, "needs the document"),
        ({"path": "/docs", "docs": "/docs"}, "are both"),
        ({"guarded_groups": "admin"}, "lists, not a str"),
    ],
    ids=["relative-path", "relative-docs", "docs-without-document", "same-path", "one-group-str"],
)
def test_configuration_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        OpenAPI(**options)


def test_openapi_must_be_an_openapi() -> None:
    with pytest.raises(ConfigurationError, match="must be an OpenAPI"):
        App(controllers=[echo], openapi={"title": "x"})  # type: ignore[arg-type]
