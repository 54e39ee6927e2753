"""Parameters where a newcomer stumbled: path placeholders that match no parameter, Flask-style
paths, query models, every body error at once, invalid JSON said as such, HTML checkbox
booleans, and messages that say what is accepted."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Annotated, Any, NotRequired, TypedDict

import msgspec
import pytest

from workflowhttp import (
    App,
    Body,
    ConfigurationError,
    HttpEvent,
    Query,
    http,
    http_workflow,
)
from workflowhttp.testing import TestClient

BOOLEAN_EXPECTED = "Expected a boolean (true/false, on/off, 1/0, yes/no)"
SMALL = 1024
LARGE = 256 * 1024


def client_for(*controllers: Any, **options: Any) -> TestClient:
    return TestClient(App(controllers=list(controllers), **options))


def errors_of(response: Any) -> list[tuple[str, str]]:
    """The ``(path, message)`` pairs of a 400's errors."""
    assert response.status_code == 400, response.data
    assert response.json["message"] == "Bad Request"
    return [(error["path"], error["message"]) for error in response.json["errors"]]


# -- item 3: every path placeholder is a parameter's name ------------------------------------


def _function_with_other_name() -> Any:
    @http.GET("/items/{item_id}")
    def show(id: int) -> dict:
        return {"id": id}

    return show


def _class_with_other_name() -> Any:
    @http.controller("/items")
    class Items:
        @http.GET("/{item_id}")
        def show(self, id: int) -> dict:
            return {"id": id}

    return Items


def _placeholder_read_from_the_query() -> Any:
    @http.GET("/items/{id}")
    def show(id: Annotated[int, Query()]) -> dict:
        return {"id": id}

    return show


def _no_parameters_at_all() -> Any:
    @http.GET("/items/{item_id}")
    def show() -> str:
        return "an item"

    return show


MISMATCHES = [
    (_function_with_other_name, ("{item_id}", "id")),
    (_class_with_other_name, ("{item_id}", "id", "Items.show")),
    (_placeholder_read_from_the_query, ("{id}", "Query()")),
    (_no_parameters_at_all, ("{item_id}", "none")),
]


@pytest.mark.parametrize(
    ("make", "named"),
    MISMATCHES,
    ids=["function-other-name", "class-other-name", "read-from-query", "no-parameters"],
)
def test_a_placeholder_no_parameter_reads_is_a_configuration_error(make, named):
    """It used to build, then answer every request 400 "missing query parameter id"."""
    with pytest.raises(ConfigurationError) as caught:
        App(controllers=[make()])
    for text in named:
        assert text in str(caught.value)


def test_a_placeholder_is_refused_by_add_controller_too(make_app):
    app = make_app()
    with pytest.raises(ConfigurationError, match=r"\{item_id\}"):
        app.add_controller(_function_with_other_name())


def test_a_controller_taking_kwargs_accepts_any_placeholder():
    @http.GET("/files/{folder}/{name}.{ext}")
    def file(name: str, **rest: str) -> dict:
        return {"name": name, "rest": rest}

    response = client_for(file).get("/files/docs/report.pdf")
    assert response.json == {"name": "report", "rest": {"folder": "docs", "ext": "pdf"}}


def test_a_claimed_callable_learns_its_path_parameters_per_request():
    def claimed(id: int) -> dict:
        return {"id": id}

    app = App(controllers=[])

    @app.listen(http_workflow.on_route)
    def claim(event: HttpEvent) -> None:
        event.route_found(claimed, {"id": "7"})

    assert TestClient(app).get("/anything").json == {"id": 7}


FLASK_PATHS = [
    ("/flask/<int:id>", "write {id}"),
    ("/flask/<id>", "write {id}"),
    ("/files/<path:rest>", "write {rest:path}"),
    ("/pick/<any(a, b):choice>", "write {choice}"),
    ("/less/a>b", "'<' and '>' are not allowed"),
]


@pytest.mark.parametrize(
    ("path", "hint"),
    FLASK_PATHS,
    ids=["int-converter", "bare", "path-converter", "converter-arguments", "stray-bracket"],
)
def test_a_flask_style_path_is_refused_with_a_hint(path, hint):
    def endpoint(**path_params: str) -> str:
        return "reached"

    with pytest.raises(ConfigurationError) as caught:
        App(controllers=[http.GET(path)(endpoint)])
    assert hint in str(caught.value)
    assert repr(path) in str(caught.value)


@pytest.mark.parametrize(
    "path",
    ["/items/{item-id}", "/items/{id", "/items/id}", "/items/{}", "/items/{1st}"],
    ids=["hyphen", "unclosed", "unopened", "empty", "leading-digit"],
)
def test_a_brace_that_makes_no_placeholder_is_refused(path):
    """Such a segment used to be matched as literal text: the route answered nothing."""

    def endpoint(**path_params: str) -> str:
        return "reached"

    with pytest.raises(ConfigurationError, match="malformed placeholder"):
        App(controllers=[http.GET(path)(endpoint)])


# -- item 7: query models ---------------------------------------------------------------------


class Filters(msgspec.Struct):
    q: str
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    tags: list[str] = []
    in_stock: bool = False
    page: int = 1


class StrictFilters(msgspec.Struct, forbid_unknown_fields=True):
    q: str = ""
    size: int = 0


class RenamedFilters(msgspec.Struct, rename="camel"):
    sort_order: str = "asc"


@dataclasses.dataclass
class Paging:
    page: int = 1
    ids: list[int] = dataclasses.field(default_factory=list)


class Place(TypedDict):
    city: str


@http.GET("/search")
def search(filters: Annotated[Filters, Query()]) -> dict:
    return msgspec.to_builtins(filters)


@http.GET("/strict")
def strict(filters: Annotated[StrictFilters, Query()], verbose: bool = False) -> dict:
    return {"filters": msgspec.to_builtins(filters), "verbose": verbose}


@http.GET("/renamed")
def renamed(filters: Annotated[RenamedFilters, Query()]) -> dict:
    return {"sort_order": filters.sort_order}


@http.GET("/paging")
def paging(paging: Annotated[Paging, Query()]) -> dict:
    return dataclasses.asdict(paging)


@http.GET("/place")
def place(place: Annotated[Place, Query()]) -> dict:
    return dict(place)


@http.GET("/optional")
def optional(filters: Annotated[Filters | None, Query()] = None) -> dict:
    return {"filters": None if filters is None else filters.q}


@pytest.fixture
def models() -> TestClient:
    return client_for(search, strict, renamed, paging, place, optional)


def test_a_query_model_is_built_from_the_query(models):
    response = models.get("/search?q=pen&limit=5&tags=red&tags=blue&in_stock=on&other=x")
    assert response.status_code == 200, response.data
    assert response.json == {
        "q": "pen",
        "limit": 5,
        "tags": ["red", "blue"],  # a list field takes every value of a repeated key
        "in_stock": True,
        "page": 1,  # the model's default
    }
    assert models.get("/search?q=pen&tags=one").json["tags"] == ["one"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/paging?page=2&ids=1&ids=3", {"page": 2, "ids": [1, 3]}),
        ("/paging", {"page": 1, "ids": []}),
        ("/place?city=Lyon", {"city": "Lyon"}),
        ("/renamed?sortOrder=desc", {"sort_order": "desc"}),
        ("/optional", {"filters": None}),
        ("/optional?q=pen", {"filters": "pen"}),
    ],
    ids=["dataclass", "dataclass-defaults", "typeddict", "renamed-field", "default", "optional"],
)
def test_dataclass_typeddict_and_renamed_query_models(models, url, expected):
    response = models.get(url)
    assert response.status_code == 200, response.data
    assert response.json == expected


def test_a_query_model_reports_every_error_at_its_field(models):
    response = models.get("/search?limit=0&in_stock=maybe&page=1e3")
    assert errors_of(response) == [
        ("limit", "Expected `int` >= 1"),
        ("in_stock", BOOLEAN_EXPECTED),
        ("page", "Expected `int`, got `str`"),
        ("q", "Missing required query parameter `q`"),
    ]
    assert errors_of(models.get("/paging?ids=1&ids=x&ids=3&ids=%C2%B2")) == [
        ("ids.1", "Expected `int`, got `str`"),
        ("ids.3", "Expected `int`, got `str`"),
    ]
    assert errors_of(models.get("/place")) == [("city", "Missing required query parameter `city`")]


@pytest.mark.parametrize("value", ["1e3", "1.0", "1_000", " 1", "٣", "²", "9" * 65], ids=repr)
def test_a_query_model_reads_integers_strictly(models, value):
    response = models.get("/paging", query_string={"page": value})
    assert [path for path, _ in errors_of(response)] == ["page"]


def test_a_model_that_forbids_unknown_fields_refuses_unknown_keys(models):
    response = models.get("/strict?q=a&colour=red&size=x&verbose=on")
    assert errors_of(response) == [
        ("colour", "Unknown query parameter `colour`"),
        ("size", "Expected `int`, got `str`"),
    ]  # verbose is the other parameter's: not unknown
    ok = models.get("/strict?q=a&size=2&verbose=on")
    assert ok.json == {"filters": {"q": "a", "size": 2}, "verbose": True}


@dataclasses.dataclass
class Inner:
    a: int = 0


@dataclasses.dataclass
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_a_query_model_cannot_be_named_nor_nest_models():
    @http.GET("/named")
    def named(filters: Annotated[Paging, Query("f")]) -> dict:
        return {}

    @http.GET("/nested")
    def nested(outer: Annotated[Outer, Query()]) -> dict:
        return {}

    with pytest.raises(ConfigurationError, match="cannot name it"):
        App(controllers=[named])
    with pytest.raises(ConfigurationError, match="'inner'"):
        App(controllers=[nested])


class Sizes(TypedDict):
    width: int
    height: NotRequired[Annotated[int, msgspec.Meta(ge=1)]]


@http.POST("/sizes")
def sizes_from_body(sizes: Sizes) -> dict:
    return dict(sizes)


@http.GET("/sizes")
def sizes_from_query(sizes: Annotated[Sizes, Query()]) -> dict:
    return dict(sizes)


def test_a_typeddict_not_required_integer_is_read_strictly():
    """SECURITY: a ``NotRequired[int]`` key used to escape parse_int: ``"1e3"`` was 1000."""
    client = client_for(sizes_from_body, sizes_from_query)
    assert client.post("/sizes", data={"width": "2", "height": "3"}).json == {
        "width": 2,
        "height": 3,
    }
    assert errors_of(client.post("/sizes", data={"width": "2", "height": "1e3"})) == [
        ("height", "Expected `int`, got `str`")
    ]
    assert errors_of(client.get("/sizes?width=1e3&height=0")) == [
        ("width", "Expected `int`, got `str`"),
        ("height", "Expected `int` >= 1"),
    ]
    assert errors_of(client.post("/sizes", json={"width": "2", "height": 0})) == [
        ("width", "Expected `int`, got `str`"),
        ("height", "Expected `int` >= 1"),
    ]


# -- item 8: every body error at once ---------------------------------------------------------


class Item(msgspec.Struct):
    name: str
    quantity: Annotated[int, msgspec.Meta(ge=1)] = 1


class Order(msgspec.Struct, forbid_unknown_fields=True):
    customer: str
    items: list[Item]
    gift: Item | None = None
    total: float = 0.0


@dataclasses.dataclass
class Todo:
    title: str
    done: bool = False
    priority: int = 0


class Node(msgspec.Struct):
    value: int
    children: list[Node] = []


@http.POST("/orders")
def create_order(order: Order) -> dict:
    return {"customer": order.customer}


@http.POST("/todos")
def create_todo(todo: Todo) -> dict:
    return dataclasses.asdict(todo)


@http.POST("/tree")
def create_tree(node: Node) -> dict:
    return {"value": node.value}


@http.POST("/numbers")
def numbers(values: Annotated[list[int], Body()]) -> dict:
    return {"sum": sum(values)}


@pytest.fixture
def bodies() -> TestClient:
    return client_for(create_order, create_todo, create_tree, numbers)


def test_a_body_with_three_wrong_fields_reports_all_three(bodies):
    response = bodies.post("/todos", json={"title": 1, "done": "yes", "priority": "high"})
    assert errors_of(response) == [
        ("title", "Expected `str`, got `int`"),
        ("done", "Expected `bool`, got `str`"),
        ("priority", "Expected `int`, got `str`"),
    ]


def test_nested_missing_and_unknown_fields_are_each_at_their_path(bodies):
    response = bodies.post(
        "/orders",
        json={
            "customer": 7,
            "items": [{"name": "pen"}, {"quantity": 0}, 5],
            "gift": {"name": ["x"]},
            "total": 1e300,
            "coupon": "FREE",
        },
    )
    assert errors_of(response) == [
        ("customer", "Expected `str`, got `int`"),
        ("items.1.quantity", "Expected `int` >= 1"),
        ("items.1.name", "Object missing required field `name`"),
        ("items.2", "Expected `object`, got `int`"),
        ("gift.name", "Expected `str`, got `array`"),
        ("coupon", "Object contains unknown field `coupon`"),
    ]
    assert errors_of(bodies.post("/orders", json={})) == [
        ("customer", "Object missing required field `customer`"),
        ("items", "Object missing required field `items`"),
    ]
    assert errors_of(bodies.post("/orders", json=[1])) == [
        ("order", "Expected `object`, got `array`")
    ]


def test_recursive_models_and_lists_report_every_error(bodies):
    tree = {"value": "a", "children": [{"value": 1, "children": [{"value": "b"}]}, {}]}
    assert errors_of(bodies.post("/tree", json=tree)) == [
        ("value", "Expected `int`, got `str`"),
        ("children.0.children.0.value", "Expected `int`, got `str`"),
        ("children.1.value", "Object missing required field `value`"),
    ]
    assert errors_of(bodies.post("/numbers", json=[1, "a", 2, None])) == [
        ("1", "Expected `int`, got `str`"),
        ("3", "Expected `int`, got `null`"),
    ]


def test_a_valid_body_still_decodes_in_one_pass(bodies):
    order = {"customer": "ada", "items": [{"name": "pen", "quantity": 2}], "total": 1.5}
    assert bodies.post("/orders", json=order).json == {"customer": "ada"}


def test_every_form_error_at_once(bodies):
    response = bodies.post("/todos", data={"done": "maybe", "priority": "1e3"})
    assert errors_of(response) == [
        ("done", BOOLEAN_EXPECTED),
        ("priority", "Expected `int`, got `str`"),
        ("title", "Object missing required field `title`"),
    ]


def test_at_most_a_hundred_errors_are_reported(bodies):
    response = bodies.post("/numbers", json=["x"] * 5000)
    errors = errors_of(response)
    assert len(errors) == 100
    assert errors[0] == ("0", "Expected `int`, got `str`")
    assert errors[-1] == ("99", "Expected `int`, got `str`")


def _profiled_calls(run: Callable[[], Any]) -> int:
    """Count the Python and C function calls made by ``run()``."""
    calls = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return calls


_VALID_ITEM = b'{"name":"p"},'


def _wrong_at_the_end(size: int) -> bytes:
    """A list of valid items of about ``size`` bytes, the last one wrong."""
    return b'{"customer":"ada","items":[' + _VALID_ITEM * (size // len(_VALID_ITEM)) + b"[]]}"


def _nested_wrong(size: int) -> bytes:
    """Items that each hold a wrong field and an unknown one, about ``size`` bytes."""
    item = b'{"name":1,"quantity":"x","extra":true},'
    return b'{"items":[' + item * (size // len(item)) + b"{}]}"


@pytest.mark.parametrize(
    "document", [_wrong_at_the_end, _nested_wrong], ids=["wrong-at-the-end", "many-wrong"]
)
def test_the_walk_of_a_failed_body_is_bounded(document):
    """SECURITY: the field-by-field walk of a body that failed is linear in the body, and
    bounded: beyond 10 000 visits (or 100 errors) a larger body costs no more calls."""
    client = client_for(create_order)

    def post(size: int) -> Any:
        return client.post("/orders", data=document(size), content_type="application/json")

    response = post(LARGE)
    assert response.status_code == 400
    errors = response.json["errors"]
    assert 1 <= len(errors) <= 100
    if document is _wrong_at_the_end:  # beyond the walk's reach: msgspec's first error
        last = LARGE // len(_VALID_ITEM)
        assert errors == [{"path": f"items.{last}", "message": "Expected `object`, got `array`"}]
    small = _profiled_calls(lambda: post(SMALL))
    large = _profiled_calls(lambda: post(LARGE))
    larger = _profiled_calls(lambda: post(2 * LARGE))
    ratio = large / small
    assert ratio < 2 * (LARGE / SMALL), f"{LARGE} bytes cost {ratio:.0f} times {SMALL} bytes"
    assert larger < 1.2 * large, f"{2 * LARGE} bytes cost {larger / large:.2f} times {LARGE}"


# -- item 9: invalid JSON says so -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"title": 1', "(byte 11)"),
        (b'{"title": "a", "done": tru', "(byte 26)"),
        (b'{"title": "a"} trailing', "(byte 16)"),
        (b'{"title": ["a", 1', "(byte 17)"),
    ],
    ids=["truncated-after-wrong-type", "truncated-literal", "trailing-text", "unclosed-array"],
)
def test_a_malformed_document_is_invalid_json_with_its_offset(bodies, body, where):
    response = bodies.post("/todos", data=body, content_type="application/json")
    assert response.status_code == 400
    assert set(response.json) == {"message"}
    assert response.json["message"].startswith("Invalid JSON: ")
    assert response.json["message"].endswith(where)
    assert bodies.post("/todos", json={"title": "next"}).status_code == 200


# -- item 10: form and query booleans take HTML checkbox values --------------------------------


@http.POST("/check")
def check(todo: Todo) -> dict:
    return {"done": todo.done}


@http.GET("/flag")
def flag(
    done: bool = False,
    maybe: bool | None = None,
    many: list[bool] = [],  # noqa: B006 - never mutated
) -> dict:
    return {"done": done, "maybe": maybe, "many": many}


BOOLEANS = [
    ("on", True),
    ("off", False),
    ("true", True),
    ("false", False),
    ("1", True),
    ("0", False),
    ("yes", True),
    ("no", False),
    ("ON", True),
    ("Yes", True),
    ("FALSE", False),
]


@pytest.mark.parametrize(("text", "value"), BOOLEANS, ids=[text for text, _ in BOOLEANS])
def test_booleans_from_forms_and_queries_take_checkbox_values(text, value):
    client = client_for(check, flag)
    form = client.post("/check", data={"title": "t", "done": text})
    assert form.status_code == 200, form.data
    assert form.json == {"done": value}
    query = client.get("/flag", query_string={"done": text, "maybe": text, "many": [text, "on"]})
    assert query.json == {"done": value, "maybe": value, "many": [value, True]}


@dataclasses.dataclass
class Consent:
    email: str
    agreed: bool  # required: an unchecked box is a missing value


def test_a_missing_checkbox_is_false_only_when_the_field_has_a_default():
    @http.POST("/consent")
    def consent(form: Consent) -> dict:
        return {"agreed": form.agreed}

    client = client_for(check, consent)
    assert client.post("/check", data={"title": "t"}).json == {"done": False}
    assert errors_of(client.post("/consent", data={"email": "a@example.org"})) == [
        ("agreed", "Object missing required field `agreed`")
    ]
    assert client.post("/consent", data={"email": "a@b", "agreed": "on"}).json == {"agreed": True}


@pytest.mark.parametrize("text", ["maybe", "", "tru", "oui", "İ", "on " * 3, "o\x00n"], ids=repr)
def test_other_boolean_texts_are_refused_saying_what_is_accepted(text):
    client = client_for(check, flag)
    assert errors_of(client.get("/flag", query_string={"done": text})) == [
        ("done", BOOLEAN_EXPECTED)
    ]
    assert errors_of(client.post("/check", data={"title": "t", "done": text})) == [
        ("done", BOOLEAN_EXPECTED)
    ]


def test_a_json_boolean_stays_a_json_boolean(bodies):
    assert errors_of(bodies.post("/todos", json={"title": "t", "done": "on"})) == [
        ("done", "Expected `bool`, got `str`")
    ]


@dataclasses.dataclass
class Colours:
    picked: list[str] = dataclasses.field(default_factory=list)


def test_a_form_list_field_takes_one_value_as_a_list():
    """A checkbox group with one box checked sends one value; it used to be a 400."""

    @http.POST("/colours")
    def colours(form: Colours) -> dict:
        return {"picked": form.picked}

    client = client_for(colours)
    assert client.post("/colours", data={"picked": "red"}).json == {"picked": ["red"]}
    assert client.post("/colours", data={"picked": ["red", "blue"]}).json == {
        "picked": ["red", "blue"]
    }


# -- item 19: messages that say what is accepted ----------------------------------------------


def test_an_optional_boolean_says_what_is_accepted():
    response = client_for(flag).get("/flag?maybe=maybe")
    assert errors_of(response) == [("maybe", BOOLEAN_EXPECTED)]


def test_a_value_that_cannot_be_rendered_says_what_can():
    @http.GET("/answer")
    def answer() -> Any:
        return 42

    response = client_for(answer, debug=True).get("/answer")
    assert response.status_code == 500
    assert (
        "cannot render a value of type int; return str, bytes, dict, list, a dataclass/Struct, "
        "None, a (body, status) tuple, a Response or an iterator"
    ) in response.json["error"]
