"""Hostile input: each bad request gets its exact status and a short JSON body, never a 500,
and the app serves the next normal request as if nothing happened."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Annotated, Any
from wsgiref.validate import validator

import msgspec
import pytest
from werkzeug.test import EnvironBuilder, TestResponse

from workflowhttp import App, Body, ConfigurationError, Limits, Request, http
from workflowhttp.testing import TestClient


class Item(msgspec.Struct):
    name: str
    quantity: int = 1


@http.GET("/hello")
def hello(name: str = "world") -> dict:
    return {"hello": name}


@http.GET("/page")
def page(number: int) -> dict:
    return {"number": number}


@http.GET("/static")
def static() -> dict:
    return {"static": True}


@http.GET("/items/{id}")
def show_item(id: int) -> dict:
    return {"id": id}


@http.POST("/items")
def create_item(item: Item) -> dict:
    return {"name": item.name, "quantity": item.quantity}


@http.POST("/raw")
def raw(body: Annotated[bytes, Body()]) -> dict:
    return {"length": len(body)}


@http.GET("/users/{name}")
def user(name: str) -> dict:
    return {"name": name}


@http.GET("/files/{rest:path}")
def files(rest: str) -> dict:
    return {"rest": rest}


@http.POST("/upload")
def upload(request: Request) -> dict:
    return {"files": len(request.files), "fields": len(request.form)}


LIMITS = dict(
    max_content_length=8192,
    max_form_memory_size=4096,  # werkzeug also bounds each multipart read by it
    max_form_parts=10,
    max_form_files=2,
    max_params=20,
    max_json_depth=8,
)


@pytest.fixture
def hostile_app() -> App:
    return App(
        controllers=[hello, page, static, show_item, create_item, raw, user, files, upload],
        limits=Limits(**LIMITS),
    )


# -- ways to send a request --------------------------------------------------------------------

Send = Callable[[App], TestResponse]


def get(url: str, **kwargs: Any) -> Send:
    return lambda app: TestClient(app).get(url, **kwargs)


def post(url: str, **kwargs: Any) -> Send:
    return lambda app: TestClient(app).post(url, **kwargs)


def request(method: str, url: str, validate: bool = True) -> Send:
    # wsgiref.validate warns about methods outside RFC 7231 (a warning is an error here).
    return lambda app: TestClient(app, validate=validate).open(url, method=method)


def raw_path(path_info: str, query: str = "") -> Send:
    """A PATH_INFO/QUERY_STRING as a server decodes raw bytes: latin-1, bytes not UTF-8."""
    overrides = {"PATH_INFO": path_info, "QUERY_STRING": query}
    return lambda app: TestClient(app).get("/", environ_overrides=overrides)


def content_length(url: str, value: str, body: bytes, content_type: str) -> Send:
    """A request whose Content-Length header lies about (or mangles) the body's size.

    ``wsgiref.validate`` refuses an environ whose ``CONTENT_LENGTH`` is not a number before the
    app sees it, so a malformed one is sent without the validator.
    """
    overrides = {"CONTENT_LENGTH": value}
    validate = value.isdigit()
    return lambda app: TestClient(app, validate=validate).post(
        url, data=body, content_type=content_type, environ_overrides=overrides
    )


def short_body(url: str, body: bytes, declared: int, content_type: str) -> Send:
    """A body shorter than its Content-Length (the client hung up), through wsgiref.validate."""

    def send(app: App) -> TestResponse:
        environ = EnvironBuilder(
            path=url,
            method="POST",
            input_stream=io.BytesIO(body),
            content_type=content_type,
        ).get_environ()
        environ["CONTENT_LENGTH"] = str(declared)  # the builder would count the stream
        return call_wsgi(app, environ)

    return send


def chunked(url: str, body: bytes) -> Send:
    def send(app: App) -> TestResponse:
        builder = EnvironBuilder(
            path=url,
            method="POST",
            input_stream=io.BytesIO(body),
            headers={"Transfer-Encoding": "chunked"},
            content_type="application/octet-stream",
        )
        environ = builder.get_environ()
        environ.pop("CONTENT_LENGTH", None)
        environ["wsgi.input_terminated"] = True
        return call_wsgi(app, environ)

    return send


def call_wsgi(app: App, environ: dict[str, Any]) -> TestResponse:
    """Call ``app`` through ``wsgiref.validate`` and return the buffered response."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
        started[:] = [status, headers]
        return lambda data: None

    iterable = validator(app)(environ, start_response)
    try:
        body = b"".join(iterable)
    finally:
        iterable.close()
    status, headers = started
    return TestResponse([body], status, headers, request=None)


def multipart(url: str, fields: dict[str, Any]) -> Send:
    return post(url, data=fields, content_type="multipart/form-data")


def form(url: str, body: str) -> Send:
    return post(url, data=body, content_type="application/x-www-form-urlencoded")


def json_body(url: str, body: bytes, content_type: str = "application/json") -> Send:
    return post(url, data=body, content_type=content_type)


def uploads(count: int) -> dict[str, Any]:
    return {f"file{i}": (io.BytesIO(b"data"), f"f{i}.txt") for i in range(count)}


# -- the corpus --------------------------------------------------------------------------------

CASES: list[tuple[str, Send, int]] = [
    # routing
    ("unknown-route", get("/nope"), 404),
    ("unknown-deep-route", get("/a/b/c/d/e/f/g/h"), 404),
    ("very-long-path", get("/" + "a" * 10_000), 404),
    ("many-segments", get("/users" + "/x" * 2000), 404),
    ("wrong-method", request("DELETE", "/hello"), 405),
    ("unknown-method", request("PROPFIND", "/hello", validate=False), 405),
    ("lower-case-method", request("get", "/hello", validate=False), 405),
    ("post-to-a-get-route-with-params", request("POST", "/items/1"), 405),
    ("dotdot-as-a-parameter", get("/users/.."), 404),
    ("dotdot-inside-a-path-parameter", get("/files/a/../../etc/passwd"), 404),
    ("encoded-dotdot-in-a-path-parameter", get("/files/%2e%2e/secret"), 404),
    ("trailing-dotdot-in-a-path-parameter", get("/files/a/.."), 404),
    # path encoding
    ("path-invalid-utf8", raw_path("/users/\xff"), 400),
    ("path-overlong-utf8", raw_path("/users/\xc0\xaf"), 400),
    ("path-utf8-surrogate", raw_path("/users/\xed\xa0\x80"), 400),
    ("path-truncated-utf8", raw_path("/users/\xe6\x97"), 400),
    ("path-bad-percent", get("/users/a%zz"), 400),
    ("path-truncated-percent", get("/users/a%2"), 400),
    ("path-bare-percent", get("/users/%"), 400),
    ("path-bad-percent-on-a-static-route", get("/static%"), 400),
    # path values
    ("path-int-not-a-number", get("/items/abc"), 400),
    ("path-int-huge", get("/items/" + "9" * 5000), 400),
    ("path-int-arabic-indic-digit", get("/items/%D9%A3"), 400),
    ("path-int-with-spaces", get("/items/%201"), 400),
    # query
    ("query-invalid-utf8", get("/hello?name=%FF"), 400),
    ("query-raw-invalid-utf8", raw_path("/hello", "name=\xff"), 400),
    ("query-bad-percent", get("/hello?name=%zz"), 400),
    ("query-truncated-percent", get("/hello?name=%4"), 400),
    ("query-bad-percent-in-a-key", get("/hello?na%gme=x"), 400),
    ("query-invalid-on-a-route-without-query-parameters", get("/static?x=%zz"), 400),
    ("too-many-query-params", get("/hello?" + "&".join(f"p{i}=1" for i in range(21))), 400),
    ("too-many-repeated-query-params", get("/hello?" + "&".join(["name=x"] * 21)), 400),
    ("query-missing-required", get("/page"), 400),
    ("query-int-not-a-number", get("/page?number=ten"), 400),
    ("query-int-huge", get("/page?number=" + "9" * 5000), 400),
    # Content-Length and body size
    (
        "content-length-not-a-number",
        content_length("/raw", "abc", b"abc", "application/octet-stream"),
        400,
    ),
    (
        "content-length-negative",
        content_length("/raw", "-1", b"abc", "application/octet-stream"),
        400,
    ),
    (
        "content-length-with-a-sign",
        content_length("/raw", "+3", b"abc", "application/octet-stream"),
        400,
    ),
    (
        "content-length-malformed-on-a-form-route",
        content_length("/upload", "abc", b"a=1", "application/x-www-form-urlencoded"),
        400,
    ),
    (
        "content-length-malformed-on-a-struct-route",
        content_length("/items", "1x", b'{"name":"a"}', "application/json"),
        400,
    ),
    (
        "content-length-above-the-limit",
        content_length("/raw", str(10**30), b"abc", "application/octet-stream"),
        413,
    ),
    ("body-above-the-limit", post("/raw", data=b"x" * 8193), 413),
    ("json-body-above-the-limit", json_body("/items", b'{"name":"' + b"x" * 9000 + b'"}'), 413),
    ("form-body-above-the-limit", form("/upload", "a=" + "x" * 9000), 413),
    ("chunked-body-above-the-limit", chunked("/raw", b"x" * 200_000), 413),
    (
        "body-shorter-than-content-length",
        short_body("/raw", b"abc", 100, "application/octet-stream"),
        400,
    ),
    (
        "json-body-shorter-than-content-length",
        short_body("/items", b'{"name":"x"}', 100, "application/json"),
        400,
    ),
    (
        "form-body-shorter-than-content-length",
        short_body("/upload", b"name=x", 100, "application/x-www-form-urlencoded"),
        400,
    ),
    ("empty-body-for-a-struct", post("/items", data=b"", content_type="application/json"), 400),
    # JSON
    ("invalid-json", json_body("/items", b'{"name": '), 400),
    ("json-trailing-garbage", json_body("/items", b'{"name": "x"} x'), 400),
    ("json-invalid-utf8", json_body("/items", b'{"name": "\xff"}'), 400),
    ("json-nan", json_body("/items", b'{"name": "x", "quantity": NaN}'), 400),
    ("json-single-quotes", json_body("/items", b"{'name': 'x'}"), 400),
    ("json-wrong-top-level-type", json_body("/items", b'["x"]'), 400),
    ("json-wrong-field-type", json_body("/items", b'{"name": 1}'), 400),
    ("json-null-for-a-required-field", json_body("/items", b'{"name": null}'), 400),
    ("json-float-for-an-int", json_body("/items", b'{"name": "x", "quantity": 1.5}'), 400),
    ("json-huge-int", json_body("/items", b'{"name": "x", "quantity": ' + b"9" * 5000 + b"}"), 400),
    (
        "json-too-deep",
        json_body("/items", b'{"name": "x", "extra": ' + b"[" * 9 + b"]" * 9 + b"}"),
        400,
    ),
    ("json-very-deep", json_body("/items", b"[" * 4000), 400),
    ("json-unclosed-deep", json_body("/items", b"[" * 2000), 400),
    ("json-unsupported-content-type", json_body("/items", b'{"name": "x"}', "text/xml"), 415),
    # forms
    ("form-too-many-fields", form("/upload", "&".join(f"f{i}=1" for i in range(21))), 400),
    ("form-too-many-repeated-fields", form("/upload", "&".join(["f=1"] * 21)), 400),
    ("form-struct-missing-field", form("/items", "quantity=2"), 400),
    ("form-struct-wrong-type", form("/items", "name=x&quantity=many"), 400),
    ("multipart-too-many-parts", multipart("/upload", {f"f{i}": "v" for i in range(11)}), 400),
    ("multipart-too-many-files", multipart("/upload", uploads(3)), 400),
    ("multipart-field-too-large", multipart("/upload", {"big": "x" * 6000}), 413),
]


@pytest.mark.parametrize(
    ("send", "status"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_hostile_request(hostile_app, send, status):
    response = send(hostile_app)
    assert response.status_code == status, response.data[:300]
    assert response.headers["Content-Type"] == "application/json"
    assert len(response.data) < 400, response.data[:400]
    text = response.get_data(as_text=True)
    assert "Traceback" not in text
    assert 'File "' not in text
    body = response.json
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) <= {"message", "errors"}
    # The next normal request on the same app is served normally.
    after = TestClient(hostile_app).post("/items", json={"name": "pen", "quantity": 2})
    assert after.status_code == 200
    assert after.json == {"name": "pen", "quantity": 2}
    assert TestClient(hostile_app).get("/hello?name=again").json == {"hello": "again"}


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 30
    assert len({case[0] for case in CASES}) == len(CASES)


def test_content_length_above_the_limit_is_refused_before_reading(hostile_app):
    reads: list[int] = []

    class Stream(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            reads.append(-1 if size is None else size)
            return super().read(size)

    environ = EnvironBuilder(
        path="/raw",
        method="POST",
        input_stream=Stream(b"x" * 20_000),
        content_type="application/octet-stream",
    ).get_environ()
    assert environ["CONTENT_LENGTH"] == "20000"
    response = call_wsgi(hostile_app, environ)
    assert response.status_code == 413
    assert response.json == {"message": "Request body larger than 8192 bytes"}
    assert reads == []


def test_chunked_body_reading_stops_near_the_limit(hostile_app):
    read_total = []

    class Stream(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            read_total.append(len(data))
            return data

    environ = EnvironBuilder(
        path="/raw",
        method="POST",
        input_stream=Stream(b"x" * 1_000_000),
        headers={"Transfer-Encoding": "chunked"},
        content_type="application/octet-stream",
    ).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input_terminated"] = True
    response = call_wsgi(hostile_app, environ)
    assert response.status_code == 413
    assert sum(read_total) < 1_000_000


# -- valid input that looks unusual ------------------------------------------------------------

VALID: list[tuple[str, Send, Any]] = [
    ("unicode-path", get("/users/caf%C3%A9"), {"name": "café"}),
    ("unicode-path-emoji", get("/users/%F0%9F%98%80"), {"name": "😀"}),
    ("unicode-path-cjk", get("/users/%E6%97%A5%E6%9C%AC"), {"name": "日本"}),
    ("unicode-path-raw-utf8", raw_path("/users/caf\xc3\xa9"), {"name": "café"}),
    ("encoded-percent-in-path", get("/users/100%25"), {"name": "100%"}),
    ("encoded-space-in-path", get("/users/a%20b"), {"name": "a b"}),
    ("dots-that-are-not-dotdot", get("/files/a..b/.c/..."), {"rest": "a..b/.c/..."}),
    ("unicode-query", get("/hello?name=%C3%A9t%C3%A9"), {"hello": "été"}),
    ("plus-in-query", get("/hello?name=a+b"), {"hello": "a b"}),
    ("encoded-percent-in-query", get("/hello?name=100%25"), {"hello": "100%"}),
    ("empty-query-value", get("/hello?name="), {"hello": ""}),
    (
        "query-at-the-limit",
        get("/hello?" + "&".join(f"p{i}=1" for i in range(20))),
        {"hello": "world"},
    ),
    ("big-int-in-path", get("/items/" + "9" * 40), {"id": int("9" * 40)}),
    (
        "json-at-the-depth-limit",
        json_body("/items", b'{"name": "x", "e": ' + b"[" * 7 + b"]" * 7 + b"}"),
        {"name": "x", "quantity": 1},
    ),
    (
        "json-brackets-in-strings",
        json_body("/items", b'{"name": "' + b"[" * 50 + b'"}'),
        {"name": "[" * 50, "quantity": 1},
    ),
    (
        "json-unknown-fields-ignored",
        json_body("/items", b'{"name": "x", "other": 1}'),
        {"name": "x", "quantity": 1},
    ),
    (
        "json-unicode-escapes",
        json_body("/items", b'{"name": "\\u00e9\\ud83d\\ude00"}'),
        {"name": "é😀", "quantity": 1},
    ),
    ("body-at-the-limit", post("/raw", data=b"x" * 8192), {"length": 8192}),
    ("multipart-at-the-file-limit", multipart("/upload", uploads(2)), {"files": 2, "fields": 0}),
    (
        "form-at-the-field-limit",
        form("/upload", "&".join(f"f{i}=1" for i in range(10))),
        {"files": 0, "fields": 10},
    ),
]


@pytest.mark.parametrize(
    ("send", "expected"), [case[1:] for case in VALID], ids=[case[0] for case in VALID]
)
def test_unusual_but_valid_request(hostile_app, send, expected):
    response = send(hostile_app)
    assert response.status_code == 200, response.data[:300]
    assert response.json == expected


# -- the Limits object -------------------------------------------------------------------------


def test_limit_defaults():
    limits = Limits()
    assert (
        limits.max_content_length,
        limits.max_form_memory_size,
        limits.max_form_parts,
        limits.max_form_files,
        limits.max_params,
        limits.max_json_depth,
        limits.max_hops,
    ) == (1024 * 1024, 500_000, 1000, 100, 1000, 64, 32)
    assert (limits.max_query_length, limits.max_headers) == (8192, 100)
    assert App().limits == limits


def test_limits_compare_by_value():
    assert Limits(max_params=5) == Limits(max_params=5)
    assert Limits(max_params=5) != Limits(max_params=6)
    assert "max_params=5" in repr(Limits(max_params=5))


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_bodies": 1},
        {"max_params": 0},
        {"max_params": -1},
        {"max_params": True},
        {"max_params": 1.5},
        {"max_params": "10"},
    ],
    ids=["unknown", "zero", "negative", "bool", "float", "str"],
)
def test_bad_limits_are_configuration_errors(overrides):
    with pytest.raises(ConfigurationError):
        Limits(**overrides)


def test_app_limits_must_be_a_limits_object():
    with pytest.raises(ConfigurationError, match="Limits"):
        App(limits={"max_params": 5})  # type: ignore[arg-type]


def test_default_body_limit_is_one_mebibyte():
    app = App(controllers=[raw])
    client = TestClient(app)
    assert client.post("/raw", data=b"x" * (1024 * 1024)).json == {"length": 1024 * 1024}
    response = client.post("/raw", data=b"x" * (1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.json == {"message": "Request body larger than 1048576 bytes"}
