"""Parameters under hostile input: integers are decimal digits from every string source, a bad
cookie pair is dropped, a JSON body must say it is JSON, nothing receives the event by
accident, and msgspec's error messages (which quote the client's keys) are read in one pass."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any
from urllib.parse import quote

import msgspec
import pytest
from werkzeug.wrappers import Request as WerkzeugRequest

from tests.hardening import assert_linear, call
from workflowhttp import (
    App,
    Body,
    ConfigurationError,
    Cookie,
    Header,
    HttpEvent,
    Provider,
    Query,
    Request,
    http,
)
from workflowhttp.testing import TestClient

# -- item 19: integers from the path, the query, headers, cookies and forms --------------------

Bounded = Annotated[int, msgspec.Meta(ge=1, le=100)]


@dataclasses.dataclass
class Form:
    n: int
    label: str = ""


@http.GET("/path/{n}")
def from_path(n: int) -> dict:
    return {"n": n}


@http.GET("/bounded-path/{n}")
def from_path_bounded(n: Bounded) -> dict:
    return {"n": n}


@http.GET("/query")
def from_query(n: int) -> dict:
    return {"n": n}


@http.GET("/bounded")
def from_query_bounded(n: Bounded) -> dict:
    return {"n": n}


@http.GET("/optional")
def from_query_optional(n: int | None = None) -> dict:
    return {"n": n}


@http.GET("/optional-bounded")
def from_query_optional_bounded(n: Bounded | None = None) -> dict:
    return {"n": n}


@http.GET("/many")
def from_repeated_keys(n: list[int]) -> dict:
    return {"n": n}


@http.GET("/header")
def from_header(n: Annotated[int, Header("X-N")]) -> dict:
    return {"n": n}


@http.GET("/bounded-header")
def from_header_bounded(n: Annotated[Bounded, Header("X-N")]) -> dict:
    return {"n": n}


@http.GET("/cookie")
def from_cookie(n: Annotated[int, Cookie("n")]) -> dict:
    return {"n": n}


@http.POST("/form")
def from_form(form: Form) -> dict:
    return {"n": form.n}


INTEGER_ROUTES = [
    from_path,
    from_path_bounded,
    from_query,
    from_query_bounded,
    from_query_optional,
    from_query_optional_bounded,
    from_repeated_keys,
    from_header,
    from_header_bounded,
    from_cookie,
    from_form,
]


def send(source: str, value: str) -> tuple[int, Any]:
    """Send ``value`` through ``source``; return the status and the decoded JSON body."""
    app = App(controllers=INTEGER_ROUTES)
    encoded = quote(value, safe="")
    if source in ("path", "bounded-path"):
        wsgi_path = f"/{source}/{value}".encode().decode("latin-1")  # as a server passes it
        status, body = call(app, wsgi_path)
    elif source == "many":
        status, body = call(app, "/many", QUERY_STRING=f"n=1&n={encoded}")
    elif source in ("header", "bounded-header"):
        status, body = call(app, f"/{source}", HTTP_X_N=value)
    elif source == "cookie":
        status, body = call(app, "/cookie", HTTP_COOKIE=f"n={value}")
    elif source == "form":
        status, body = call(
            app,
            "/form",
            "POST",
            f"n={encoded}&label=x".encode(),
            CONTENT_TYPE="application/x-www-form-urlencoded",
        )
    else:
        status, body = call(app, f"/{source}", QUERY_STRING=f"n={encoded}")
    assert call(app, "/query", QUERY_STRING="n=7") == (200, b'{"n":7}')  # the next one is served
    return status, msgspec.json.decode(body)


SOURCES = [
    "path",
    "bounded-path",
    "query",
    "bounded",
    "optional",
    "optional-bounded",
    "many",
    "header",
    "bounded-header",
    "cookie",
    "form",
]
NOT_INTEGERS = [
    ("exponent", "1e3"),
    ("upper-exponent", "1E2"),
    ("decimal-point", "1.0"),
    ("underscore", "1_0"),
    ("hex", "0x10"),
    ("arabic-indic-digit", "\u0663"),
    ("superscript-two", "\u00b2"),
    ("fullwidth-digit", "\uff15"),
    ("sign-alone", "-"),
    ("two-signs", "--1"),
    ("inner-space", "1 0"),
    ("word", "ten"),
    ("nan", "nan"),
]
# Text that leaves the ASCII range cannot travel in a WSGI header (latin-1) as is.
TEXT_ONLY = {"arabic-indic-digit", "superscript-two", "fullwidth-digit"}
CASES = [
    pytest.param(source, value, id=f"{source}-{name}")
    for source in SOURCES
    for name, value in NOT_INTEGERS
    if not (name in TEXT_ONLY and source in ("header", "bounded-header", "cookie"))
]


def error_path(source: str) -> str:
    return "n.1" if source == "many" else ("form" if source == "form" else "n")


def assert_refused(source: str, status: int, body: Any, message: str) -> None:
    assert status == 400, body
    assert body["message"] == "Bad Request"
    if source == "form":  # a field of the body: at its own path
        assert body["errors"] == [{"path": "n", "message": message}]
    else:
        assert body["errors"] == [{"path": error_path(source), "message": message}]


@pytest.mark.parametrize(("source", "value"), CASES)
def test_an_integer_is_a_sign_and_decimal_digits_only(source, value):
    status, body = send(source, value)
    assert_refused(source, status, body, "Expected `int`, got `str`")


HUGE = [
    pytest.param(source, digits, id=f"{source}-{digits}-digits")
    for source in SOURCES
    for digits in (65, 5000)
]


@pytest.mark.parametrize(("source", "digits"), HUGE)
def test_a_huge_integer_is_a_400(source, digits):
    status, body = send(source, "9" * digits)
    assert_refused(source, status, body, "Expected an integer of at most 64 digits")


VALID = [
    ("plus-sign", "+42", 42),
    ("minus-sign", "-42", -42),
    ("leading-zeros", "0042", 42),
    ("sixty-four-digits", "9" * 64, int("9" * 64)),
]


@pytest.mark.parametrize(
    ("source", "value", "expected"),
    [
        pytest.param(source, value, expected, id=f"{source}-{name}")
        for source in ("path", "query", "optional", "header", "cookie", "form")
        for name, value, expected in VALID
    ],
)
def test_valid_integers_from_every_source(source, value, expected):
    status, body = send(source, value)
    assert (status, body) == (200, {"n": expected})


CONSTRAINTS = [
    ("bounded-below", "bounded", "0", "Expected `int` >= 1"),
    ("bounded-above", "bounded", "101", "Expected `int` <= 100"),
    ("bounded-negative", "bounded", "-5", "Expected `int` >= 1"),
    ("bounded-path-above", "bounded-path", "+101", "Expected `int` <= 100"),
    ("optional-bounded-above", "optional-bounded", "101", "Expected `int` <= 100"),
    ("bounded-header-below", "bounded-header", "0", "Expected `int` >= 1"),
]


@pytest.mark.parametrize(
    ("source", "value", "message"),
    [case[1:] for case in CONSTRAINTS],
    ids=[case[0] for case in CONSTRAINTS],
)
def test_constraints_apply_to_the_parsed_integer(source, value, message):
    status, body = send(source, value)
    assert_refused(source, status, body, message)


def test_bounded_and_optional_integers_in_range():
    assert send("bounded", "100") == (200, {"n": 100})
    assert send("optional-bounded", "1") == (200, {"n": 1})
    assert send("many", "3") == (200, {"n": [1, 3]})
    client = TestClient(App(controllers=INTEGER_ROUTES))
    assert client.get("/optional").json == {"n": None}


def test_a_union_with_float_still_takes_a_float():
    @http.GET("/number")
    def number(x: int | float) -> dict:
        return {"x": x, "type": type(x).__name__}

    client = TestClient(App(controllers=[number]))
    assert client.get("/number?x=5").json == {"x": 5, "type": "int"}
    assert client.get("/number?x=1e3").json == {"x": 1000.0, "type": "float"}
    assert client.get("/number?x=1.5").json == {"x": 1.5, "type": "float"}


def test_a_union_with_str_keeps_the_text():
    @http.GET("/either")
    def either(x: int | str) -> dict:
        return {"x": x}

    client = TestClient(App(controllers=[either]))
    assert client.get("/either?x=5").json == {"x": "5"}
    assert client.get("/either?x=1e3").json == {"x": "1e3"}


def test_integers_inside_tuples_and_sets_from_repeated_keys():
    @http.GET("/pair")
    def pair(x: tuple[int, int], y: set[int] = set()) -> dict:  # noqa: B006
        return {"x": list(x), "y": sorted(y)}

    client = TestClient(App(controllers=[pair]))
    assert client.get("/pair?x=1&x=2&y=3&y=3").json == {"x": [1, 2], "y": [3]}
    bad = client.get("/pair?x=1&x=2e0")
    assert bad.json["errors"] == [{"path": "x.1", "message": "Expected `int`, got `str`"}]
    assert client.get("/pair?x=1&x=2&y=1.0").status_code == 400


# -- item 20: malformed cookie pairs are dropped ----------------------------------------------


@http.GET("/session")
def session(
    sid: Annotated[str, Cookie("sid")] = "none", theme: Annotated[str, Cookie()] = "light"
) -> dict:
    return {"sid": sid, "theme": theme}


COOKIES = [
    ("bad-utf8-in-another-pair", "junk=\xff\xfe; sid=ok", {"sid": "ok", "theme": "light"}),
    ("bad-utf8-in-its-own-pair", "sid=\xff\xfe; theme=dark", {"sid": "none", "theme": "dark"}),
    ("bad-utf8-in-a-name", "\xff\xfe=1; sid=ok", {"sid": "ok", "theme": "light"}),
    ("truncated-utf8", "sid=caf\xc3; theme=dark", {"sid": "none", "theme": "dark"}),
    ("escaped-invalid-byte", 'sid="\\377"; theme=dark', {"sid": "none", "theme": "dark"}),
    ("control-character", "sid=a\x01b; theme=dark", {"sid": "none", "theme": "dark"}),
    ("nul-byte", "sid=a\x00b; theme=dark", {"sid": "none", "theme": "dark"}),
    ("delete-character", "sid=a\x7fb; theme=dark", {"sid": "none", "theme": "dark"}),
    ("line-feed", "sid=a\nb; theme=dark", {"sid": "none", "theme": "dark"}),
    ("control-character-in-a-name", "s\x01id=evil; sid=ok", {"sid": "ok", "theme": "light"}),
]


@pytest.mark.parametrize(
    ("header", "expected"), [case[1:] for case in COOKIES], ids=[case[0] for case in COOKIES]
)
def test_a_malformed_cookie_pair_is_dropped_and_the_request_goes_on(header, expected):
    app = App(controllers=[session])
    status, body = call(app, "/session", HTTP_COOKIE=header)
    assert (status, msgspec.json.decode(body)) == (200, expected)
    assert call(app, "/session", HTTP_COOKIE="sid=next")[0] == 200


GOOD_COOKIES = [
    ("utf8", "sid=caf\xc3\xa9", "café"),
    ("escaped-utf8", 'sid="caf\\303\\251"', "café"),
    ("escaped-quote", 'sid="a\\"b"', 'a"b'),
    ("tab-between-pairs", "theme=dark;\tsid=ok", "ok"),
]


@pytest.mark.parametrize(
    ("header", "expected"),
    [case[1:] for case in GOOD_COOKIES],
    ids=[case[0] for case in GOOD_COOKIES],
)
def test_well_formed_cookies_are_read(header, expected):
    status, body = call(App(controllers=[session]), "/session", HTTP_COOKIE=header)
    assert status == 200
    assert msgspec.json.decode(body)["sid"] == expected


def test_cookies_read_the_same_once_the_request_is_built():
    @http.GET("/both")
    def both(request: Request, sid: Annotated[str, Cookie()] = "none") -> dict:
        return {"sid": sid, "request": request.path}

    status, body = call(App(controllers=[both]), "/both", HTTP_COOKIE="sid=caf\xc3\xa9; x=\xff")
    assert (status, msgspec.json.decode(body)) == (200, {"sid": "café", "request": "/both"})


# -- item 17: a JSON body must say it is JSON -------------------------------------------------


class Item(msgspec.Struct):
    name: str


@http.POST("/items")
def create(item: Item) -> dict:
    return {"name": item.name}


@http.POST("/document")
def document(data: Annotated[dict, Body()]) -> dict:
    return data


@http.POST("/optional-document")
def optional_document(data: Annotated[dict | None, Body()] = None) -> dict:
    return {"data": data}


@http.POST("/raw")
def raw(data: Annotated[bytes, Body()]) -> dict:
    return {"size": len(data)}


@http.POST("/text")
def text(data: Annotated[str, Body()]) -> dict:
    return {"text": data}


BODY_ROUTES = [create, document, optional_document, raw, text]
JSON_BODY = b'{"name": "pen"}'
REFUSED_TYPES = [
    ("no-content-type", None),
    ("empty-content-type", ""),
    ("blank-content-type", " "),
    ("text-plain", "text/plain"),
    ("text-plain-charset", "text/plain;charset=UTF-8"),
    ("octet-stream", "application/octet-stream"),
    ("json-lookalike", "application/jsonx"),
]


@pytest.mark.parametrize(
    "content_type", [case[1] for case in REFUSED_TYPES], ids=[case[0] for case in REFUSED_TYPES]
)
@pytest.mark.parametrize("route", ["/items", "/document", "/optional-document"])
def test_a_json_body_without_a_json_content_type_is_415(route, content_type):
    app = App(controllers=BODY_ROUTES)
    extra = {} if content_type is None else {"CONTENT_TYPE": content_type}
    status, body = call(app, route, "POST", JSON_BODY, **extra)
    assert status == 415
    assert set(msgspec.json.decode(body)) == {"message"}
    ok = call(app, "/items", "POST", JSON_BODY, CONTENT_TYPE="application/json")
    assert ok == (200, b'{"name":"pen"}')


ACCEPTED_TYPES = [
    ("json", "application/json"),
    ("json-charset", "application/json; charset=utf-8"),
    ("json-upper-case", "Application/JSON"),
    ("vendor-json", "application/vnd.api+json"),
]


@pytest.mark.parametrize(
    "content_type", [case[1] for case in ACCEPTED_TYPES], ids=[case[0] for case in ACCEPTED_TYPES]
)
def test_a_json_content_type_is_decoded(content_type):
    app = App(controllers=BODY_ROUTES)
    status, body = call(app, "/items", "POST", JSON_BODY, CONTENT_TYPE=content_type)
    assert (status, body) == (200, b'{"name":"pen"}')


def test_bodies_that_are_not_json_need_no_content_type():
    app = App(controllers=BODY_ROUTES)
    assert call(app, "/raw", "POST", b"\x00\x01") == (200, b'{"size":2}')
    assert call(app, "/text", "POST", b"hi") == (200, b'{"text":"hi"}')
    form = call(
        app, "/items", "POST", b"name=pen", CONTENT_TYPE="application/x-www-form-urlencoded"
    )
    assert form == (200, b'{"name":"pen"}')


def test_no_body_without_content_type_is_the_default_or_missing():
    app = App(controllers=BODY_ROUTES)
    assert call(app, "/optional-document", "POST") == (200, b'{"data":null}')
    status, body = call(app, "/items", "POST")
    assert status == 400
    assert msgspec.json.decode(body)["errors"] == [
        {"path": "item", "message": "Missing request body"}
    ]


# -- item 16: nothing receives the event by accident ------------------------------------------


class Thing:
    pass


def object_parameter() -> Any:
    @http.GET("/o")
    def controller(x: object) -> str:
        return type(x).__name__

    return controller


def object_query() -> Any:
    @http.GET("/o")
    def controller(x: Annotated[object, Query()] = None) -> str:
        return type(x).__name__

    return controller


def object_header() -> Any:
    @http.GET("/o")
    def controller(x: Annotated[object, Header()] = None) -> str:
        return type(x).__name__

    return controller


def object_in_a_constructor() -> Any:
    @http.controller
    class Controller:
        def __init__(self, x: object) -> None:
            self.x = x

        @http.GET("/o")
        def show(self) -> str:
            return type(self.x).__name__

    return Controller


OBJECT_CASES = [
    ("controller-parameter", object_parameter, {}),
    ("query-parameter", object_query, {}),
    ("header-parameter", object_header, {}),
    ("controller-constructor", object_in_a_constructor, {}),
]


@pytest.mark.parametrize(
    ("make", "options"),
    [case[1:] for case in OBJECT_CASES],
    ids=[case[0] for case in OBJECT_CASES],
)
def test_a_parameter_annotated_object_is_a_configuration_error(make, options):
    with pytest.raises(ConfigurationError, match="object"):
        App(controllers=[make()], **options)


def test_a_provider_taking_object_is_a_configuration_error():
    def make_thing(x: object) -> Thing:
        return Thing()

    @http.GET("/t")
    def controller(thing: Thing) -> str:
        return "ok"

    with pytest.raises(ConfigurationError, match="object"):
        App(controllers=[controller], providers=[Provider(Thing, make_thing, scope="request")])


def test_any_reads_the_query_text():
    @http.GET("/any")
    def controller(x: Any = "default") -> dict:
        return {"x": x, "type": type(x).__name__}

    client = TestClient(App(controllers=[controller]))
    assert client.get("/any?x=5").json == {"x": "5", "type": "str"}
    assert client.get("/any").json == {"x": "default", "type": "str"}


def test_a_base_class_of_the_request_still_receives_the_request():
    @http.GET("/r")
    def controller(request: WerkzeugRequest, event: HttpEvent) -> dict:
        return {"request": isinstance(request, Request), "event": isinstance(event, HttpEvent)}

    client = TestClient(App(controllers=[controller]))
    assert client.get("/r").json == {"request": True, "event": True}


# -- sibling: reading msgspec's error message is one pass --------------------------------------


class Strict(msgspec.Struct, forbid_unknown_fields=True):
    name: str = ""


@http.POST("/strict")
def strict(body: Strict) -> dict:
    return {"name": body.name}


def test_the_location_of_an_error_quoting_a_hostile_key_is_found_in_linear_time():
    """msgspec quotes an unknown key in its message; a key made of its own location marker
    (" - at `$") and ending in a newline made the old regex search quadratic."""
    app = App(controllers=[strict])

    def send_key(filler: str) -> Any:
        def run(size: int) -> None:
            key = filler * (size // len(filler)) + "\n"
            body = msgspec.json.encode({key: 1})
            status, answer = call(app, "/strict", "POST", body, CONTENT_TYPE="application/json")
            assert status == 400, answer[:200]

        return run

    assert_linear(send_key(" - at `$"), send_key("z"), probe=16 * 1024)
    status, body = call(app, "/strict", "POST", b'{"other": 1}', CONTENT_TYPE="application/json")
    assert status == 400
    errors = msgspec.json.decode(body)["errors"]
    assert errors == [{"path": "other", "message": "Object contains unknown field `other`"}]
