"""Parameter plans: path, query, header, cookie and body parameters, injection, and 400s."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import io
import uuid
from typing import Annotated, Literal, TypedDict

import msgspec
import pytest

from workflowhttp import (
    App,
    Body,
    ConfigurationError,
    Cookie,
    Header,
    HttpEvent,
    Limits,
    Query,
    Request,
    http,
    http_workflow,
)
from workflowhttp.testing import TestClient


def client_for(*controllers, **options) -> TestClient:
    return TestClient(App(controllers=list(controllers), **options))


def failed(response, *errors: tuple[str, str | None]) -> None:
    """Assert a 400 with exactly the errors at ``errors``' paths (message checked when given)."""
    assert response.status_code == 400, response.data
    body = response.json
    assert set(body) == {"message", "errors"}
    assert body["message"] == "Bad Request"
    assert [error["path"] for error in body["errors"]] == [path for path, _ in errors]
    for error, (_, fragment) in zip(body["errors"], errors, strict=True):
        assert set(error) == {"path", "message"}
        assert isinstance(error["message"], str) and error["message"]
        if fragment is not None:
            assert fragment in error["message"]


# -- path parameters -------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@http.GET("/int/{value}")
def path_int(value: int) -> dict:
    return {"value": value, "type": type(value).__name__}


@http.GET("/float/{value}")
def path_float(value: float) -> dict:
    return {"value": value, "type": type(value).__name__}


@http.GET("/uuid/{value}")
def path_uuid(value: uuid.UUID) -> dict:
    return {"value": str(value), "type": type(value).__name__}


@http.GET("/literal/{value}")
def path_literal(value: Literal["asc", "desc"]) -> dict:
    return {"value": value}


@http.GET("/enum/{value}")
def path_enum(value: Color) -> dict:
    return {"value": value.name}


@http.GET("/date/{value}")
def path_date(value: datetime.date) -> dict:
    return {"value": value.isoformat(), "weekday": value.weekday()}


@http.GET("/str/{value}")
def path_str(value: str) -> dict:
    return {"value": value}


@http.GET("/bare/{value}")
def path_unannotated(value) -> dict:  # no annotation: a str
    return {"value": value}


PATH_APP = [
    path_int,
    path_float,
    path_uuid,
    path_literal,
    path_enum,
    path_date,
    path_str,
    path_unannotated,
]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/int/42", {"value": 42, "type": "int"}),
        ("/int/-3", {"value": -3, "type": "int"}),
        ("/float/2.5", {"value": 2.5, "type": "float"}),
        ("/float/3", {"value": 3.0, "type": "float"}),
        (
            "/uuid/12345678-1234-5678-1234-567812345678",
            {"value": "12345678-1234-5678-1234-567812345678", "type": "UUID"},
        ),
        ("/literal/asc", {"value": "asc"}),
        ("/enum/blue", {"value": "BLUE"}),
        ("/date/2024-02-29", {"value": "2024-02-29", "weekday": 3}),
        ("/str/123", {"value": "123"}),
        ("/bare/abc", {"value": "abc"}),
    ],
    ids=[
        "int",
        "negative-int",
        "float",
        "float-from-int",
        "uuid",
        "literal",
        "enum",
        "date",
        "str-stays-str",
        "unannotated-is-str",
    ],
)
def test_path_parameters_are_converted_from_the_annotation(url, expected):
    response = client_for(*PATH_APP).get(url)
    assert response.status_code == 200
    assert response.json == expected


@pytest.mark.parametrize(
    "url",
    [
        "/int/abc",
        "/int/1.5",
        "/int/%EF%BC%91",
        "/float/x",
        "/uuid/not-a-uuid",
        "/literal/up",
        "/enum/green",
        "/date/2023-02-29",
    ],
    ids=[
        "int-letters",
        "int-decimal",
        "int-fullwidth-digit",
        "float",
        "uuid",
        "literal",
        "enum",
        "date",
    ],
)
def test_path_parameter_conversion_failure_is_400_at_the_parameter(url):
    failed(client_for(*PATH_APP).get(url), ("value", None))


def test_path_parameter_typed_int_rejects_non_ascii_digits():
    failed(client_for(path_int).get("/int/%D9%A3"), ("value", None))


# -- query parameters ------------------------------------------------------------------------


@http.GET("/search")
def search(q: str, page: int = 1, exact: bool = False, ratio: float | None = None) -> dict:
    return {"q": q, "page": page, "exact": exact, "ratio": ratio}


def test_query_parameters_are_converted():
    response = client_for(search).get("/search?q=cats&page=3&exact=true&ratio=0.5")
    assert response.json == {"q": "cats", "page": 3, "exact": True, "ratio": 0.5}


def test_defaults_make_query_parameters_optional():
    response = client_for(search).get("/search?q=cats")
    assert response.json == {"q": "cats", "page": 1, "exact": False, "ratio": None}


def test_missing_required_query_parameter_is_400():
    failed(client_for(search).get("/search"), ("q", "`q`"))


def test_empty_query_value_is_an_empty_string():
    assert client_for(search).get("/search?q=").json["q"] == ""


def test_query_value_is_percent_decoded():
    assert client_for(search).get("/search?q=a%20b%26c+d").json["q"] == "a b&c d"


def test_query_unicode_value():
    assert client_for(search).get("/search?q=%E6%97%A5%E6%9C%AC").json["q"] == "日本"


def test_the_first_of_repeated_keys_wins_for_a_simple_type():
    assert client_for(search).get("/search?q=a&q=b").json["q"] == "a"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("1", True), ("false", False), ("0", False)],
)
def test_query_bool(raw, expected):
    assert client_for(search).get(f"/search?q=x&exact={raw}").json["exact"] is expected


def test_query_bool_rejects_other_words():
    failed(client_for(search).get("/search?q=x&exact=maybe"), ("exact", None))


def test_query_conversion_failure_is_400_at_the_parameter():
    failed(client_for(search).get("/search?q=x&page=two"), ("page", "int"))


def test_several_errors_are_reported_at_once():
    response = client_for(search).get("/search?page=two&exact=maybe&ratio=x")
    failed(response, ("q", None), ("page", None), ("exact", None), ("ratio", None))


@http.GET("/tags")
def tags(tag: list[int], names: list[str] = []) -> dict:  # noqa: B006 - never mutated
    return {"tag": tag, "names": names}


def test_list_from_repeated_keys():
    response = client_for(tags).get("/tags?tag=1&tag=2&tag=3&names=a&names=b")
    assert response.json == {"tag": [1, 2, 3], "names": ["a", "b"]}


def test_list_with_a_single_value():
    assert client_for(tags).get("/tags?tag=7").json == {"tag": [7], "names": []}


def test_list_item_failure_is_reported_at_its_index():
    failed(client_for(tags).get("/tags?tag=1&tag=x"), ("tag.1", None))


def test_missing_required_list_is_400():
    failed(client_for(tags).get("/tags"), ("tag", None))


@http.GET("/order")
def order(sort: Literal["asc", "desc"] = "asc", day: datetime.date | None = None) -> dict:
    return {"sort": sort, "day": day.isoformat() if day else None}


def test_query_literal_and_date():
    assert client_for(order).get("/order?sort=desc&day=2024-01-02").json == {
        "sort": "desc",
        "day": "2024-01-02",
    }
    failed(client_for(order).get("/order?sort=sideways"), ("sort", None))


@http.GET("/aliased")
def aliased(
    page_size: Annotated[int, Query("page-size")] = 10,
    term: Annotated[str, Query("q")] = "",
    plain: Annotated[str, Query] = "-",
) -> dict:
    return {"page_size": page_size, "term": term, "plain": plain}


def test_annotated_query_with_a_name():
    response = client_for(aliased).get("/aliased?page-size=50&q=cat&page_size=1&plain=p")
    assert response.json == {"page_size": 50, "term": "cat", "plain": "p"}


def test_annotated_query_defaults():
    assert client_for(aliased).get("/aliased").json == {"page_size": 10, "term": "", "plain": "-"}


@http.GET("/required-alias")
def required_alias(limit: Annotated[int, Query("max")]) -> dict:
    return {"limit": limit}


def test_missing_aliased_query_is_reported_at_the_parameter_naming_the_key():
    failed(client_for(required_alias).get("/required-alias"), ("limit", "`max`"))
    failed(client_for(required_alias).get("/required-alias?max=x"), ("limit", None))


def test_huge_int_in_the_query_is_400():
    failed(client_for(search).get("/search?q=x&page=" + "9" * 5000), ("page", None))


def test_big_int_in_the_query_is_converted():
    assert client_for(search).get("/search?q=x&page=" + "9" * 30).json["page"] == int("9" * 30)


# -- headers and cookies ---------------------------------------------------------------------


@http.GET("/headers")
def headers(
    x_api_key: Annotated[str, Header],
    token: Annotated[str, Header("X-Token")] = "none",
    count: Annotated[int, Header("X-Count")] = 0,
    content_type: Annotated[str, Header()] = "",
) -> dict:
    return {"key": x_api_key, "token": token, "count": count, "content_type": content_type}


def test_header_default_name_maps_underscores_to_dashes():
    response = client_for(headers).get("/headers", headers={"X-Api-Key": "secret"})
    assert response.json == {"key": "secret", "token": "none", "count": 0, "content_type": ""}


def test_header_names_are_case_insensitive():
    response = client_for(headers).get(
        "/headers", headers={"x-api-key": "k", "x-token": "t", "X-COUNT": "3"}
    )
    assert response.json == {"key": "k", "token": "t", "count": 3, "content_type": ""}


def test_content_type_header_parameter():
    response = client_for(headers).get(
        "/headers", headers={"X-Api-Key": "k", "Content-Type": "text/plain"}
    )
    assert response.json["content_type"] == "text/plain"


def test_missing_required_header_is_400():
    failed(client_for(headers).get("/headers"), ("x_api_key", None))


def test_header_conversion_failure_is_400():
    response = client_for(headers).get("/headers", headers={"X-Api-Key": "k", "X-Count": "many"})
    failed(response, ("count", None))


@http.GET("/cookies")
def cookies(
    session: Annotated[str, Cookie("sid")],
    theme: Annotated[str, Cookie] = "light",
    visits: Annotated[int, Cookie()] = 0,
) -> dict:
    return {"session": session, "theme": theme, "visits": visits}


def test_cookie_parameters():
    client = client_for(cookies)
    client.set_cookie("sid", "abc")
    client.set_cookie("theme", "dark")
    client.set_cookie("visits", "4")
    assert client.get("/cookies").json == {"session": "abc", "theme": "dark", "visits": 4}


def test_cookie_defaults():
    client = client_for(cookies)
    client.set_cookie("sid", "abc")
    assert client.get("/cookies").json == {"session": "abc", "theme": "light", "visits": 0}


def test_missing_required_cookie_is_400():
    failed(client_for(cookies).get("/cookies"), ("session", "`sid`"))


def test_cookie_conversion_failure_is_400():
    client = client_for(cookies)
    client.set_cookie("sid", "abc")
    client.set_cookie("visits", "lots")
    failed(client.get("/cookies"), ("visits", None))


def test_cookie_read_after_the_request_was_built():
    @http.GET("/both")
    def both(request: Request, sid: Annotated[str, Cookie]) -> dict:
        return {"sid": sid, "same": request.cookies["sid"] == sid}

    client = client_for(both)
    client.set_cookie("sid", "xyz")
    assert client.get("/both").json == {"sid": "xyz", "same": True}


# -- raw bodies --------------------------------------------------------------------------------


@http.POST("/raw")
def raw(body: Annotated[bytes, Body()]) -> dict:
    return {"length": len(body), "head": body[:4].hex()}


@http.POST("/text")
def text(body: Annotated[str, Body]) -> dict:
    return {"text": body}


@http.POST("/doc")
def doc(body: Annotated[dict, Body()]) -> dict:
    return {"keys": sorted(body)}


@http.POST("/numbers")
def numbers(body: Annotated[list[int], Body()]) -> dict:
    return {"sum": sum(body)}


@http.POST("/optional-body")
def optional_body(body: Annotated[dict | None, Body()] = None) -> dict:
    return {"body": body}


BODY_APP = [raw, text, doc, numbers, optional_body]


def test_body_as_bytes():
    response = client_for(*BODY_APP).post(
        "/raw", data=b"\x00\xff\x10\x20rest", content_type="application/octet-stream"
    )
    assert response.json == {"length": 8, "head": "00ff1020"}


def test_body_as_bytes_accepts_any_content_type():
    response = client_for(*BODY_APP).post("/raw", data=b"{}", content_type="image/png")
    assert response.json == {"length": 2, "head": "7b7d"}


def test_body_as_str():
    response = client_for(*BODY_APP).post("/text", data="héllo".encode(), content_type="text/plain")
    assert response.json == {"text": "héllo"}


def test_body_as_str_rejects_invalid_utf8():
    response = client_for(*BODY_APP).post("/text", data=b"\xff\xfe", content_type="text/plain")
    failed(response, ("body", "UTF-8"))


def test_body_as_dict():
    response = client_for(*BODY_APP).post("/doc", json={"b": 1, "a": [2]})
    assert response.json == {"keys": ["a", "b"]}


def test_body_as_json_type():
    assert client_for(*BODY_APP).post("/numbers", json=[1, 2, 3]).json == {"sum": 6}


def test_body_as_json_type_reports_the_item():
    failed(client_for(*BODY_APP).post("/numbers", json=[1, "2"]), ("1", "int"))


def test_body_of_the_wrong_json_type_is_400_at_the_parameter():
    failed(client_for(*BODY_APP).post("/doc", json=[1, 2]), ("body", "object"))


def test_missing_body_is_400():
    failed(client_for(*BODY_APP).post("/doc"), ("body", "Missing request body"))


def test_missing_optional_body_takes_the_default():
    assert client_for(*BODY_APP).post("/optional-body").json == {"body": None}


def test_json_with_a_suffix_content_type():
    response = client_for(*BODY_APP).post(
        "/doc", data=b'{"x": 1}', content_type="application/vnd.api+json"
    )
    assert response.json == {"keys": ["x"]}


def test_json_with_a_charset_parameter():
    response = client_for(*BODY_APP).post(
        "/doc", data=b'{"x": 1}', content_type="application/json; charset=utf-8"
    )
    assert response.json == {"keys": ["x"]}


def test_json_without_a_content_type_is_415():
    # A body must say it is JSON: see tests/test_params_hardening.py (CSRF).
    @http.POST("/doc")
    def untyped(body: Annotated[dict, Body()]) -> dict:
        return body

    app = App(controllers=[untyped])
    environ_overrides = {"CONTENT_TYPE": ""}
    response = TestClient(app).post("/doc", data=b'{"x": 1}', environ_overrides=environ_overrides)
    assert response.status_code == 415


def test_undecodable_content_type_is_415():
    response = client_for(*BODY_APP).post("/doc", data=b"x=1", content_type="text/csv")
    assert response.status_code == 415
    assert set(response.json) == {"message"}


def test_invalid_json_is_400():
    response = client_for(*BODY_APP).post("/doc", data=b'{"x": ', content_type="application/json")
    assert response.status_code == 400
    assert response.json["message"].startswith("Invalid JSON")
    assert "Traceback" not in response.text


def test_json_depth_limit():
    client = client_for(*BODY_APP, limits=Limits(max_json_depth=3))
    assert client.post("/doc", data=b'{"a": {"b": [1]}}', content_type="application/json").json == {
        "keys": ["a"]
    }
    response = client.post("/doc", data=b'{"a": {"b": [[1]]}}', content_type="application/json")
    assert response.status_code == 400
    assert response.json == {"message": "JSON nested deeper than 3 levels"}


def test_json_depth_ignores_brackets_inside_strings():
    client = client_for(*BODY_APP, limits=Limits(max_json_depth=2))
    body = b'{"a": "[[[[{{{{", "b": [1]}'
    response = client.post("/doc", data=body, content_type="application/json")
    assert response.json == {"keys": ["a", "b"]}


def test_default_json_depth_limit_is_64():
    client = client_for(*BODY_APP)
    ok = b'{"a":' + b"[" * 63 + b"]" * 63 + b"}"
    assert client.post("/doc", data=ok, content_type="application/json").status_code == 200
    deep = b'{"a":' + b"[" * 64 + b"]" * 64 + b"}"
    response = client.post("/doc", data=deep, content_type="application/json")
    assert response.status_code == 400
    assert response.json == {"message": "JSON nested deeper than 64 levels"}


def test_body_can_be_read_twice_through_the_request():
    @http.POST("/twice")
    def twice(body: Annotated[bytes, Body()], request: Request) -> dict:
        return {"same": request.get_data() == body, "length": len(body)}

    response = client_for(twice).post("/twice", data=b"abc")
    assert response.json == {"same": True, "length": 3}


# -- structured bodies -------------------------------------------------------------------------


@dataclasses.dataclass
class Address:
    city: str
    zip: str


@dataclasses.dataclass
class User:
    name: str
    age: int
    address: Address | None = None


class Item(msgspec.Struct):
    name: str
    quantity: int = 1


class Order(msgspec.Struct):
    id: int
    items: list[Item]


class Point(TypedDict):
    x: int
    y: int


class Shape(TypedDict):
    label: str
    points: list[Point]


@http.POST("/users")
def create_user(user: User) -> dict:
    return {
        "name": user.name,
        "age": user.age,
        "city": user.address.city if user.address else None,
        "type": type(user).__name__,
    }


@http.POST("/orders")
def create_order(order: Order) -> dict:
    return {
        "id": order.id,
        "items": [[item.name, item.quantity] for item in order.items],
        "type": type(order.items[0]).__name__ if order.items else None,
    }


@http.POST("/shapes")
def create_shape(shape: Shape) -> dict:
    return {"label": shape["label"], "sum": sum(p["x"] + p["y"] for p in shape["points"])}


@http.POST("/points")
def create_points(points: list[Point]) -> dict:
    return {"count": len(points)}


@http.POST("/flat")
def create_flat(item: Item) -> dict:
    return {"name": item.name, "quantity": item.quantity}


STRUCT_APP = [create_user, create_order, create_flat]
TYPEDDICT_APP = [create_shape, create_points]


def test_dataclass_body_from_json():
    response = client_for(*STRUCT_APP).post(
        "/users", json={"name": "Ann", "age": 30, "address": {"city": "Oslo", "zip": "0150"}}
    )
    assert response.json == {"name": "Ann", "age": 30, "city": "Oslo", "type": "User"}


def test_struct_body_from_json_with_nested_structs():
    response = client_for(*STRUCT_APP).post(
        "/orders", json={"id": 1, "items": [{"name": "pen"}, {"name": "ink", "quantity": 2}]}
    )
    assert response.json == {"id": 1, "items": [["pen", 1], ["ink", 2]], "type": "Item"}


def test_typeddict_body_from_json_with_nested_typeddicts():
    response = client_for(*TYPEDDICT_APP).post(
        "/shapes", json={"label": "tri", "points": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}
    )
    assert response.json == {"label": "tri", "sum": 10}


def test_list_of_typeddicts_body():
    response = client_for(*TYPEDDICT_APP).post("/points", json=[{"x": 1, "y": 1}])
    assert response.json == {"count": 1}


def test_json_body_is_strict_about_types():
    response = client_for(*STRUCT_APP).post("/users", json={"name": "Ann", "age": "30"})
    failed(response, ("age", "Expected `int`, got `str`"))


def test_error_inside_a_nested_object():
    response = client_for(*STRUCT_APP).post(
        "/users", json={"name": "Ann", "age": 3, "address": {"city": 5, "zip": "1"}}
    )
    failed(response, ("address.city", "Expected `str`"))


def test_error_inside_a_list_item():
    response = client_for(*STRUCT_APP).post(
        "/orders", json={"id": 1, "items": [{"name": "pen"}, {"name": 7}]}
    )
    failed(response, ("items.1.name", "Expected `str`"))


def test_missing_top_level_field_is_reported_at_its_own_path():
    response = client_for(*STRUCT_APP).post("/users", json={"name": "Ann"})
    failed(response, ("age", "missing required field"))


def test_missing_nested_field_is_reported_at_its_own_path():
    response = client_for(*STRUCT_APP).post(
        "/orders", json={"id": 1, "items": [{"name": "pen"}, {"quantity": 2}]}
    )
    failed(response, ("items.1.name", "missing required field"))


def test_missing_field_in_a_typeddict_list():
    response = client_for(*TYPEDDICT_APP).post(
        "/shapes", json={"label": "tri", "points": [{"x": 1, "y": 2}, {"x": 3}]}
    )
    failed(response, ("points.1.y", "missing required field"))


def test_body_that_is_not_an_object_is_reported_at_the_parameter():
    failed(client_for(*STRUCT_APP).post("/users", json=[1]), ("user", "Expected `object`"))


def test_struct_body_from_urlencoded_form():
    response = client_for(*STRUCT_APP).post("/flat", data={"name": "pen", "quantity": "3"})
    assert response.json == {"name": "pen", "quantity": 3}


def test_dataclass_body_from_urlencoded_form():
    response = client_for(*STRUCT_APP).post("/users", data={"name": "Ann", "age": "30"})
    assert response.json == {"name": "Ann", "age": 30, "city": None, "type": "User"}


def test_struct_body_from_multipart_form():
    response = client_for(*STRUCT_APP).post(
        "/flat",
        data={"name": "pen", "quantity": "2"},
        content_type="multipart/form-data",
    )
    assert response.json == {"name": "pen", "quantity": 2}


def test_form_body_conversion_error_at_the_field():
    response = client_for(*STRUCT_APP).post("/users", data={"name": "Ann", "age": "old"})
    failed(response, ("age", None))


def test_form_body_missing_field_at_its_path():
    failed(client_for(*STRUCT_APP).post("/users", data={"name": "Ann"}), ("age", "missing"))


def test_empty_form_for_a_required_body_is_400():
    response = client_for(*STRUCT_APP).post(
        "/flat", data=b"", content_type="application/x-www-form-urlencoded"
    )
    failed(response, ("name", "missing"))


def test_optional_struct_body_takes_its_default():
    @http.POST("/maybe")
    def maybe(item: Item | None = None) -> dict:
        return {"item": item.name if item else None}

    client = client_for(maybe)
    assert client.post("/maybe").json == {"item": None}
    assert client.post("/maybe", json={"name": "pen"}).json == {"item": "pen"}


def test_body_and_query_errors_are_reported_together():
    @http.POST("/mixed")
    def mixed(item: Item, page: int) -> dict:
        return {}

    response = client_for(mixed).post("/mixed?page=x", json={"quantity": 1})
    failed(response, ("name", "missing"), ("page", None))


def test_body_and_other_sources_in_one_controller():
    @http.PUT("/orders/{id}")
    def replace(
        id: int, item: Item, dry_run: bool = False, key: Annotated[str, Header("X-Key")] = ""
    ) -> dict:
        return {"id": id, "item": item.name, "dry_run": dry_run, "key": key}

    response = client_for(replace).put(
        "/orders/4?dry_run=1", json={"name": "pen"}, headers={"X-Key": "k"}
    )
    assert response.json == {"id": 4, "item": "pen", "dry_run": True, "key": "k"}


# -- injection ---------------------------------------------------------------------------------


def test_request_injection():
    @http.POST("/who")
    def who(request: Request) -> dict:
        return {
            "method": request.method,
            "path": request.path,
            "args": request.args.to_dict(),
            "agent": request.headers["User-Agent"],
            "type": isinstance(request, Request),
        }

    response = client_for(who).post("/who?a=1", headers={"User-Agent": "tester"})
    assert response.json == {
        "method": "POST",
        "path": "/who",
        "args": {"a": "1"},
        "agent": "tester",
        "type": True,
    }


def test_request_is_limited_by_the_app_limits():
    @http.GET("/limits")
    def limits(request: Request) -> dict:
        return {"max": request.max_content_length}

    client = client_for(limits, limits=Limits(max_content_length=123))
    assert client.get("/limits").json == {"max": 123}


def test_event_injection_shares_the_store_with_listeners():
    @http.GET("/event/{id}")
    def from_event(id: int, event: HttpEvent) -> dict:
        return {
            "id": id,
            "state": event.state,
            "raw": event.path_params["id"],
            "user": event.store["user"],
            "route": event.route.name,
        }

    app = App(controllers=[from_event])

    @app.listen(http_workflow.on_auth)
    def authenticate(event: HttpEvent) -> None:
        event.store["user"] = "ann"

    assert TestClient(app).get("/event/5").json == {
        "id": 5,
        "state": "controller",
        "raw": "5",
        "user": "ann",
        "route": "from_event",
    }


def test_event_parameters_hold_the_resolved_arguments():
    seen = {}

    @http.GET("/params/{id}")
    def params(id: int, q: str = "d") -> str:
        return "ok"

    app = App(controllers=[params])

    @app.listen(http_workflow.on_controller)
    def look(event: HttpEvent) -> None:
        seen.update(event.parameters)

    TestClient(app).get("/params/3?q=x")
    assert seen == {"id": 3, "q": "x"}


def test_parameters_failed_listener_sees_the_errors():
    seen = []

    app = App(controllers=[search])

    @app.listen(http_workflow.on_parameters_failed)
    def look(event: HttpEvent) -> None:
        seen.extend(error["path"] for error in event.error.errors)

    assert TestClient(app).get("/search?page=x").status_code == 400
    assert seen == ["q", "page"]


# -- configuration errors ----------------------------------------------------------------------


def test_unresolvable_annotation_is_a_configuration_error():
    class Service:
        pass

    @http.GET("/x")
    def x(service: Service) -> str:
        return ""

    with pytest.raises(ConfigurationError, match="Service"):
        App(controllers=[x])


def test_unknown_forward_reference_is_a_configuration_error():
    @http.GET("/x")
    def x(thing: NotDefinedAnywhere) -> str:  # type: ignore[name-defined] # noqa: F821
        return ""

    with pytest.raises(ConfigurationError, match="annotations"):
        App(controllers=[x])


def test_positional_only_parameter_is_a_configuration_error():
    @http.GET("/x")
    def x(a: int, /) -> str:
        return ""

    with pytest.raises(ConfigurationError, match="positional-only"):
        App(controllers=[x])


def test_request_body_stream_is_not_needed_for_a_get(make_client):
    @http.GET("/x")
    def x(q: str = "") -> str:
        return q

    app = App(controllers=[x])
    stream = io.BytesIO(b"ignored")
    response = make_client(app).get("/x?q=1", input_stream=stream)
    assert response.text == "1"
