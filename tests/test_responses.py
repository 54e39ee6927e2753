"""Responses: rendering return values, our response classes, redirects, streaming, cookies."""

from __future__ import annotations

import dataclasses
import datetime
import uuid

import msgspec
import pytest
import werkzeug

from workflowhttp import (
    App,
    BadRequest,
    HTMLResponse,
    HttpEvent,
    JSONResponse,
    Redirect,
    Response,
    http,
    http_workflow,
)
from workflowhttp.testing import TestClient


def returning(value, **options) -> TestClient:
    """A client for an app whose ``GET /`` returns ``value`` (called if callable)."""

    @http.GET("/")
    def controller():
        return value() if callable(value) else value

    return TestClient(App(controllers=[controller], **options))


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Pair(msgspec.Struct):
    left: str
    right: list[int]


# -- rendering return values ------------------------------------------------------------------


def test_str_is_utf8_text_never_html():
    # Fails on the old code, which served a str as text/html: a reflected XSS waiting for
    # `return f"Hello {name}"` with ?name=<script>...
    response = returning("<p>héllo</p>").get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.data == "<p>héllo</p>".encode()
    assert response.headers["Content-Length"] == str(len("<p>héllo</p>".encode()))


def test_empty_str_is_an_empty_200():
    response = returning("").get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Content-Length"] == "0"
    assert response.data == b""


@pytest.mark.parametrize(
    ("value", "body"),
    [
        ({"a": 1, "b": [True, None]}, b'{"a":1,"b":[true,null]}'),
        ([1, "two", 3.5], b'[1,"two",3.5]'),
        ([], b"[]"),
        ({}, b"{}"),
        (Point(1, 2), b'{"x":1,"y":2}'),
        (Pair("l", [1, 2]), b'{"left":"l","right":[1,2]}'),
        ({"when": datetime.date(2024, 1, 2)}, b'{"when":"2024-01-02"}'),
        ({"id": uuid.UUID(int=1)}, b'{"id":"00000000-0000-0000-0000-000000000001"}'),
        ({"text": "日本"}, '{"text":"日本"}'.encode()),
    ],
    ids=[
        "dict",
        "list",
        "empty-list",
        "empty-dict",
        "dataclass",
        "struct",
        "date",
        "uuid",
        "unicode",
    ],
)
def test_json_values(value, body):
    response = returning(value).get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.data == body
    assert response.headers["Content-Length"] == str(len(body))


def test_bytes_are_an_octet_stream():
    response = returning(b"\x00\x01\xff").get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.data == b"\x00\x01\xff"


def test_bytearray_is_an_octet_stream():
    response = returning(bytearray(b"abc")).get("/")
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.data == b"abc"


def test_none_is_204_without_content_type():
    response = returning(None).get("/")
    assert response.status_code == 204
    assert "Content-Type" not in response.headers
    assert "Content-Length" not in response.headers
    assert response.data == b""


def test_body_and_status():
    response = returning(("created", 201)).get("/")
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.text == "created"


def test_json_body_and_status():
    response = returning(({"error": "gone"}, 410)).get("/")
    assert response.status_code == 410
    assert response.json == {"error": "gone"}


def test_body_status_and_headers():
    response = returning(({"id": 1}, 201, {"Location": "/items/1", "X-Id": "1"})).get("/")
    assert response.status_code == 201
    assert response.json == {"id": 1}
    assert response.headers["Location"] == "/items/1"
    assert response.headers["X-Id"] == "1"
    assert response.headers["Content-Type"] == "application/json"


def test_body_status_and_header_pairs():
    response = returning(("x", 200, [("X-A", "1"), ("X-B", "2")])).get("/")
    assert response.headers["X-A"] == "1"
    assert response.headers["X-B"] == "2"


def test_tuple_status_overrides_a_response():
    response = returning((JSONResponse({"a": 1}), 202)).get("/")
    assert response.status_code == 202
    assert response.json == {"a": 1}


def test_none_with_a_status_has_no_body():
    # wsgiref.validate (the test client) insists on a Content-Type for every status but 204/304.
    response = returning((None, 202)).get("/")
    assert response.status_code == 202
    assert response.data == b""
    assert response.headers["Content-Length"] == "0"


def test_unknown_status_code():
    response = returning(("teapot-ish", 599)).get("/")
    assert response.status_code == 599
    assert response.text == "teapot-ish"


def test_response_with_defaults():
    response = returning(Response("plain")).get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.text == "plain"


def test_response_with_everything():
    response = returning(
        Response(b"<x/>", status=207, headers={"X-Custom": "y"}, content_type="application/xml")
    ).get("/")
    assert response.status_code == 207
    assert response.headers["Content-Type"] == "application/xml"
    assert response.headers["X-Custom"] == "y"
    assert response.data == b"<x/>"


def test_json_response():
    response = returning(JSONResponse({"a": [1]}, status=201, headers={"X-A": "b"})).get("/")
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-A"] == "b"
    assert response.json == {"a": [1]}


def test_json_response_of_a_struct():
    assert returning(JSONResponse(Pair("a", []))).get("/").json == {"left": "a", "right": []}


def test_html_response():
    response = returning(HTMLResponse("<h1>hi</h1>", status=404)).get("/")
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.text == "<h1>hi</h1>"


def test_response_with_204_drops_body_headers():
    response = returning(Response("ignored", status=204, headers={"X-Kept": "1"})).get("/")
    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers
    assert response.headers["X-Kept"] == "1"


def test_response_with_304_has_no_body():
    response = returning(Response(b"", status=304, headers={"ETag": '"v1"'})).get("/")
    assert response.status_code == 304
    assert response.data == b""
    assert response.headers["ETag"] == '"v1"'


def test_werkzeug_response_passes_through():
    response = returning(
        lambda: werkzeug.Response("wz", status=418, headers={"X-Wz": "1"}, mimetype="text/x-wz")
    ).get("/")
    assert response.status_code == 418
    assert response.headers["X-Wz"] == "1"
    assert response.headers["Content-Type"] == "text/x-wz; charset=utf-8"
    assert response.text == "wz"


def test_werkzeug_response_with_a_tuple_status_and_headers():
    response = returning(lambda: (werkzeug.Response("wz"), 201, {"X-Extra": "1"})).get("/")
    assert response.status_code == 201
    assert response.headers["X-Extra"] == "1"
    assert response.text == "wz"


# -- streaming ---------------------------------------------------------------------------------


def test_generator_streams_str_and_bytes_chunks():
    def chunks():
        yield "héllo "
        yield b"w"
        yield ""
        yield "orld"

    response = returning(chunks).get("/")
    assert response.status_code == 200
    assert response.data == "héllo world".encode()
    assert "Content-Length" not in response.headers


def test_generator_controller_streams():
    @http.GET("/count")
    def count(limit: int = 3):
        for number in range(limit):
            yield f"{number}\n"

    response = TestClient(App(controllers=[count])).get("/count?limit=4")
    assert response.text == "0\n1\n2\n3\n"


def test_iterator_streams():
    response = returning(lambda: iter([b"a", b"b"])).get("/")
    assert response.data == b"ab"


def test_streamed_response_with_a_content_type_and_status():
    def rows():
        yield "a,b\n"
        yield "1,2\n"

    response = returning(lambda: Response(rows(), status=201, content_type="text/csv")).get("/")
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "text/csv"
    assert response.text == "a,b\n1,2\n"


def test_streamed_body_is_closed_after_the_response():
    closed = []

    class Body:
        def __iter__(self):
            yield b"a"
            yield b"b"

        def close(self) -> None:
            closed.append(True)

    response = returning(lambda: Response(Body())).get("/")
    assert response.data == b"ab"
    assert closed == [True]


def test_streamed_body_is_closed_on_head():
    closed = []

    class Body:
        def __iter__(self):
            yield b"never"

        def close(self) -> None:
            closed.append(True)

    response = returning(lambda: Response(Body())).head("/")
    assert response.status_code == 200
    assert response.data == b""
    assert closed == [True]


def test_generator_is_closed_when_the_client_stops_reading(make_client):
    finished = []

    def chunks():
        try:
            yield "one"
            yield "two"
        finally:
            finished.append(True)

    @http.GET("/")
    def controller():
        return chunks()

    client = make_client(App(controllers=[controller]))
    response = client.get("/", buffered=False)
    iterator = iter(response.response)
    assert next(iterator) == b"one"
    response.close()
    assert finished == [True]


# -- the Response object ----------------------------------------------------------------------


def test_headers_are_case_insensitive_and_mutable():
    response = Response("x", headers={"X-Thing": "1"})
    assert response.headers["x-thing"] == "1"
    assert response.headers["CONTENT-TYPE"] == "text/plain; charset=utf-8"
    response.headers["x-THING"] = "2"
    response.headers.add("X-Many", "a")
    response.headers.add("x-many", "b")
    assert response.headers["X-Thing"] == "2"
    assert response.headers.getlist("X-MANY") == ["a", "b"]
    del response.headers["x-thing"]
    assert "X-Thing" not in response.headers


def test_header_changes_reach_the_client():
    def build():
        response = JSONResponse({"ok": True})
        response.headers["Cache-Control"] = "no-store"
        response.headers["content-type"] = "application/problem+json"
        return response

    response = returning(build).get("/")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"] == "application/problem+json"


def test_response_attributes():
    response = Response("héllo", status=201)
    assert response.status == 201
    assert response.body == "héllo".encode()
    assert response.text == "héllo"
    assert response.content_type == "text/plain; charset=utf-8"
    response.content_type = "text/x-other"
    assert response.headers["Content-Type"] == "text/x-other"


def test_status_can_be_changed_by_a_listener():
    @http.GET("/")
    def controller() -> str:
        return "x"

    app = App(controllers=[controller])

    @app.listen(http_workflow.on_response)
    def change(event: HttpEvent) -> None:
        event.response.status = 203
        event.response.headers["X-Seen"] = "yes"

    response = TestClient(app).get("/")
    assert response.status_code == 203
    assert response.headers["X-Seen"] == "yes"
    assert response.text == "x"


def test_set_cookie_defaults():
    def build():
        response = Response("ok")
        response.set_cookie("sid", "abc")
        return response

    response = returning(build).get("/")
    (cookie,) = response.headers.getlist("Set-Cookie")
    assert cookie == "sid=abc; HttpOnly; Path=/; SameSite=Lax"


def test_set_cookie_options():
    def build():
        response = Response("ok")
        response.set_cookie(
            "pref",
            "dark",
            max_age=60,
            path="/app",
            domain="example.com",
            secure=True,
            httponly=False,
            samesite="Strict",
        )
        response.set_cookie("other", "1", samesite=None)
        return response

    cookies = returning(build).get("/").headers.getlist("Set-Cookie")
    assert len(cookies) == 2
    pref, other = cookies
    assert pref.startswith("pref=dark; Domain=example.com; ")
    assert "Max-Age=60" in pref
    assert "Secure" in pref
    assert "Path=/app" in pref
    assert "SameSite=Strict" in pref
    assert "HttpOnly" not in pref
    assert "SameSite" not in other
    assert "HttpOnly" in other


def test_delete_cookie():
    def build():
        response = Response("ok")
        response.delete_cookie("sid")
        return response

    (cookie,) = returning(build).get("/").headers.getlist("Set-Cookie")
    assert cookie.startswith("sid=; ")
    assert "Max-Age=0" in cookie
    assert "Expires=Thu, 01 Jan 1970 00:00:00 GMT" in cookie


def test_cookies_reach_the_test_client():
    @http.GET("/login")
    def login() -> Response:
        response = Response("in")
        response.set_cookie("sid", "abc")
        return response

    @http.GET("/whoami")
    def whoami(event: HttpEvent) -> str:
        return event.request.cookies.get("sid", "nobody")

    client = TestClient(App(controllers=[login, whoami]))
    client.get("/login")
    assert client.get("/whoami").text == "abc"


# -- redirects ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "header"),
    [
        ("/next", "/next"),
        ("next", "next"),
        ("/a?b=c d", "/a?b=c%20d"),
        ("?page=2", "?page=2"),
        ("#top", "#top"),
        ("/café", "/caf%C3%A9"),
        ("/%0d%0aSet-Cookie:x=1", "/%0d%0aSet-Cookie:x=1"),
    ],
    ids=[
        "absolute-path",
        "relative",
        "query-space",
        "query-only",
        "fragment",
        "unicode",
        "encoded-crlf-is-harmless",
    ],
)
def test_redirect_within_the_site(location, header):
    response = returning(lambda: Redirect(location)).get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == header
    assert response.data == b""


@pytest.mark.parametrize("status", [301, 303, 307, 308])
def test_redirect_status(status):
    response = returning(lambda: Redirect("/x", status=status)).get("/")
    assert response.status_code == status
    assert response.headers["Location"] == "/x"


@pytest.mark.parametrize(
    "location",
    [
        "/next\r\nSet-Cookie: x=1",
        "/next\nX: y",
        "/next\r",
        "https://evil.example/",
        "HTTP://evil.example",
        "//evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "\\/evil.example",
        " //evil.example",
        "/\t/evil.example",
        "///evil.example",
        "https:evil.example",
        "javascript:alert(1)",
        "data:text/html,<script>",
    ],
    ids=[
        "crlf",
        "lf",
        "cr",
        "absolute-url",
        "upper-scheme",
        "protocol-relative",
        "slash-backslash",
        "double-backslash",
        "backslash-slash",
        "leading-space",
        "tab-inside",
        "triple-slash",
        "scheme-no-slashes",
        "javascript",
        "data",
    ],
)
def test_hostile_redirect_is_400(location):
    client = returning(lambda: Redirect(location))
    response = client.get("/")
    assert response.status_code == 400
    assert set(response.json) == {"message"}
    assert "Location" not in response.headers
    assert "Traceback" not in response.text


def test_hostile_redirect_raises_bad_request_outside_a_request():
    with pytest.raises(BadRequest, match="another host"):
        Redirect("//evil.example")
    with pytest.raises(BadRequest, match="line break"):
        Redirect("/a\r\nb", external=True)


@pytest.mark.parametrize(
    ("location", "header"),
    [
        ("https://partner.example/welcome", "https://partner.example/welcome"),
        ("//cdn.example/x", "//cdn.example/x"),
        ("https://partner.example/a?b=1", "https://partner.example/a?b=1"),
    ],
    ids=["absolute-url", "protocol-relative", "with-query"],
)
def test_external_redirect_is_allowed_when_asked(location, header):
    response = returning(lambda: Redirect(location, external=True)).get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == header


def test_external_redirect_still_refuses_line_breaks():
    response = returning(lambda: Redirect("https://ok.example/\r\nX: y", external=True)).get("/")
    assert response.status_code == 400


def test_redirect_with_headers():
    response = returning(lambda: Redirect("/x", headers={"X-Why": "moved"})).get("/")
    assert response.headers["X-Why"] == "moved"
    assert response.headers["Location"] == "/x"


# -- unsupported values and errors ------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize(
    "value",
    [Opaque(), 42, 3.5, {1, 2}, ("a", "not a status"), ("a", 200, {}, "extra"), ("only",)],
    ids=["object", "int", "float", "set", "tuple-bad-status", "tuple-too-long", "tuple-short"],
)
def test_unsupported_return_value_is_a_logged_500(value, caplog):
    response = returning(lambda: value).get("/")
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "application/json"
    assert response.json == {"message": "Internal Server Error"}
    assert any(record.levelname == "ERROR" for record in caplog.records)
    assert any(
        record.exc_info and isinstance(record.exc_info[1], TypeError) for record in caplog.records
    )


def test_unsupported_return_value_shows_the_error_in_debug():
    response = returning(lambda: Opaque(), debug=True).get("/")
    assert response.status_code == 500
    body = response.json
    assert body["message"] == "Internal Server Error"
    assert "TypeError" in body["error"]
    assert "Opaque" in body["error"]
    assert any("Traceback" in line for line in body["traceback"])


def test_controller_exception_hides_the_traceback(caplog):
    def fail():
        raise RuntimeError("secret database password")

    response = returning(fail).get("/")
    assert response.status_code == 500
    assert response.json == {"message": "Internal Server Error"}
    assert "secret" not in response.text
    (record,) = caplog.records
    assert record.levelname == "ERROR"
    assert record.exc_info[1].args == ("secret database password",)


def test_generator_failing_midway_is_logged(caplog):
    def chunks():
        yield "start"
        raise RuntimeError("broken stream")

    client = returning(lambda: chunks())
    with pytest.raises(RuntimeError, match="broken stream"):
        client.get("/")
    assert any("midway" in record.getMessage() for record in caplog.records)


def test_a_str_echoing_input_is_not_markup():
    @http.GET("/hello")
    def hello(name: str = "world") -> str:
        return f"Hello {name}"

    response = TestClient(App(controllers=[hello])).get("/hello?name=<script>alert(1)</script>")
    assert response.content_type == "text/plain; charset=utf-8"
    assert response.text == "Hello <script>alert(1)</script>"  # shown, never run
