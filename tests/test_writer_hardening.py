"""Hardening of the error rendering and of the response writer.

Werkzeug's HTTP exceptions keep their headers (and the response ``abort()`` carries); a
response the user shares between requests is never changed by a status or headers given with
it; repeated header names survive; what reaches the server's ``start_response`` is valid (a
bad header is the app's clean 500), streamed chunks are ``bytes``, and everything a request
opened is closed, also when the server's ``start_response`` raises; a failed request leaves no
reference cycle; request text in log lines is escaped.

The test client validates with ``wsgiref.validate``, which rejects bad headers itself, so the
writer's tests also call the app directly with :func:`strict_start_response`, which raises as
a real server does.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import werkzeug
import werkzeug.exceptions
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.routing import RequestRedirect
from werkzeug.test import EnvironBuilder

from workflowhttp import (
    App,
    HTTPError,
    HttpEvent,
    JSONResponse,
    Request,
    Response,
    http,
    http_workflow,
)
from workflowhttp import responses as responses_module
from workflowhttp.stream import RequestFinished, RequestStarted
from workflowhttp.stream.processors import LogProcessor
from workflowhttp.testing import TestClient

INTERNAL = {"message": "Internal Server Error"}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


# -- calling the app like a strict server ----------------------------------------------------


class ServerRefused(Exception):
    """What a strict server's ``start_response`` raises for headers it cannot send."""


def strict_start_response(
    status: str, headers: list[tuple[str, str]], exc_info: Any = None
) -> Callable[[bytes], None]:
    """Check the status and headers as a real server does before it writes them, and raise
    :class:`ServerRefused` (gunicorn raises on CR/LF; every server encodes to latin-1)."""
    for part in [status, *(item for header in headers for item in header)]:
        if not isinstance(part, str):
            raise ServerRefused(f"not a str: {part!r}")
        try:
            part.encode("latin-1")
        except UnicodeEncodeError as ex:
            raise ServerRefused(str(ex)) from None
        if _CONTROL.search(part):
            raise ServerRefused(f"control character in {part!r}")
    for name, _value in headers:
        if not _TOKEN.fullmatch(name):
            raise ServerRefused(f"bad header name {name!r}")
    return lambda data: None


class Answer:
    """What the server received: status, headers and the body chunks."""

    def __init__(self, status: str, headers: list[tuple[str, str]], chunks: list[Any]) -> None:
        self.status = status
        self.headers = headers
        self.chunks = chunks

    @property
    def status_code(self) -> int:
        return int(self.status.split(" ", 1)[0])

    @property
    def json(self) -> Any:
        return json.loads(b"".join(self.chunks))

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def environ_for(path: str = "/", method: str = "GET", **options: Any) -> dict[str, Any]:
    return EnvironBuilder(path=path, method=method, **options).get_environ()


def call(
    app: App,
    path: str = "/",
    method: str = "GET",
    start_response: Callable[..., Any] = strict_start_response,
    **options: Any,
) -> Answer:
    """Call the app directly, iterate its body and close it, as a server does."""
    seen: dict[str, Any] = {}

    def recording(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        write = start_response(status, headers, exc_info)
        seen["status"], seen["headers"] = status, headers
        return write

    body = app(environ_for(path, method, **options), recording)
    chunks: list[Any] = []
    try:
        chunks.extend(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return Answer(seen["status"], seen["headers"], chunks)


def returning(value: Any, **options: Any) -> App:
    """An app whose ``/`` returns ``value`` (called first when it is callable)."""

    @http.GET("/")
    def controller() -> Any:
        return value() if callable(value) else value

    return App(controllers=[controller], **options)


def error_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "workflowhttp"]


# -- item 6: werkzeug's HTTP exceptions keep their headers -------------------------------------


WERKZEUG_ERRORS = [
    (
        lambda: werkzeug.exceptions.MethodNotAllowed(valid_methods=["GET", "POST"]),
        405,
        {"Allow": "GET, POST"},
    ),
    (
        lambda: werkzeug.exceptions.Unauthorized(
            "log in", www_authenticate=WWWAuthenticate("basic", {"realm": "shop"})
        ),
        401,
        {"WWW-Authenticate": "Basic realm=shop"},
    ),
    (lambda: werkzeug.exceptions.TooManyRequests(retry_after=30), 429, {"Retry-After": "30"}),
    (
        lambda: werkzeug.exceptions.ServiceUnavailable(retry_after=120),
        503,
        {"Retry-After": "120"},
    ),
    (
        lambda: werkzeug.exceptions.RequestedRangeNotSatisfiable(length=10),
        416,
        {"Content-Range": "bytes */10"},
    ),
]
WERKZEUG_ERROR_IDS = ["405-Allow", "401-WWW-Authenticate", "429-Retry-After", "503-Retry-After",
                      "416-Content-Range"]  # fmt: skip
RAISED_IN = ["controller", "auth-listener", "failure-state-listener"]


def raising_app(make_error: Callable[[], BaseException], where: str) -> App:
    """An app whose ``/`` raises ``make_error()`` in the controller or in a listener."""

    @http.GET("/")
    def controller() -> str:
        if where == "controller":
            raise make_error()
        if where == "failure-state-listener":
            raise RuntimeError("first failure")  # then the failure state's listener raises
        return "not reached"

    app = App(controllers=[controller])
    if where == "auth-listener":

        @app.listen(http_workflow.on_auth)
        def deny(event: HttpEvent) -> None:
            raise make_error()

    if where == "failure-state-listener":

        @app.listen(http_workflow.on_controller_error)
        def fail_again(event: HttpEvent) -> None:
            raise make_error()

    return app


@pytest.mark.parametrize("where", RAISED_IN)
@pytest.mark.parametrize(
    ("make_error", "status", "headers"), WERKZEUG_ERRORS, ids=WERKZEUG_ERROR_IDS
)
def test_a_werkzeug_http_exception_keeps_its_headers(make_error, status, headers, where):
    response = TestClient(raising_app(make_error, where)).get("/")
    assert response.status_code == status
    for name, value in headers.items():
        assert response.headers[name] == value
    assert response.headers["Content-Type"] == "application/json"
    assert response.json["message"] == (make_error().description or make_error().name)


@pytest.mark.parametrize("where", RAISED_IN)
def test_a_werkzeug_redirect_keeps_its_location(where):
    app = raising_app(lambda: RequestRedirect("http://localhost/moved"), where)
    response = TestClient(app).get("/")
    assert response.status_code == 308
    assert response.headers["Location"] == "http://localhost/moved"


def aborted(make_response: Callable[[], Any]) -> Callable[[], BaseException]:
    """What ``werkzeug.exceptions.abort(response)`` raises."""

    def make() -> BaseException:
        try:
            werkzeug.exceptions.abort(make_response())
        except werkzeug.exceptions.HTTPException as ex:
            return ex
        raise AssertionError("abort() did not raise")

    return make


ABORTED = [
    (aborted(lambda: werkzeug.Response("teapot", 418, {"X-Brewed": "1"})), 418, b"teapot"),
    (aborted(lambda: werkzeug.utils.redirect("/elsewhere", 303)), 303, None),
    (  # abort() takes werkzeug's responses only; the exception carries ours as well
        lambda: werkzeug.exceptions.HTTPException(
            response=JSONResponse({"why": "busy"}, 503, {"X-Brewed": "1"})  # type: ignore[arg-type]
        ),
        503,
        b'{"why":"busy"}',
    ),
]


@pytest.mark.parametrize("where", RAISED_IN)
@pytest.mark.parametrize(
    ("abort", "status", "body"), ABORTED, ids=["werkzeug.Response", "redirect", "ours"]
)
def test_abort_with_a_response_answers_with_that_response(abort, status, body, where):

    response = TestClient(raising_app(abort, where)).get("/")
    assert response.status_code == status
    if body is None:
        assert response.headers["Location"] == "/elsewhere"
    else:
        assert response.data == body
        assert response.headers["X-Brewed"] == "1"


def test_a_werkzeug_http_exception_without_a_code_is_a_logged_500(caplog):
    response = TestClient(raising_app(werkzeug.exceptions.HTTPException, "controller")).get("/")
    assert response.status_code == 500
    assert response.json == INTERNAL
    assert len(error_logs(caplog)) == 1


# -- item 8: a shared response is never changed by what is given with it -----------------------

OK = Response("ok")
SHARED_JSON = JSONResponse({"ok": True}, headers={"X-Kind": "shared"})


def shared_app(override: str) -> App:
    """``/ok`` returns the shared ``OK``; ``/override`` returns it with a status and headers."""

    @http.GET("/ok")
    def ok() -> Response:
        return OK

    @http.GET("/json")
    def shared_json() -> Response:
        return SHARED_JSON

    @http.GET("/override")
    def overridden() -> Any:
        if override == "tuple-dict":
            return OK, 201, {"Location": "/made/1"}
        if override == "tuple-pairs":
            return OK, 201, [("Location", "/made/1")]
        if override == "tuple-status":
            return OK, 201
        if override == "tuple-json":
            return SHARED_JSON, 201, {"Location": "/made/1", "X-Kind": "replaced"}
        return "sent by the listener"

    app = App(controllers=[ok, shared_json, overridden])
    if override == "send-status":

        @app.listen(http_workflow.on_controller)
        def send_shared(event: HttpEvent) -> None:
            if event.route is not None and event.route.path == "/override":
                event.send(OK, status=201)

    return app


@pytest.mark.parametrize(
    "override", ["tuple-dict", "tuple-pairs", "tuple-status", "tuple-json", "send-status"]
)
def test_an_override_does_not_change_the_shared_response(override):
    client = TestClient(shared_app(override))
    overridden = client.get("/override")
    assert overridden.status_code == 201
    for _ in range(2):
        plain = client.get("/ok")
        assert plain.status_code == 200
        assert "Location" not in plain.headers
        shared = client.get("/json")
        assert shared.status_code == 200
        assert "Location" not in shared.headers
        assert shared.headers["X-Kind"] == "shared"
    assert OK.status == 200
    assert "Location" not in OK.headers
    assert SHARED_JSON.status == 200
    assert SHARED_JSON.headers.getlist("X-Kind") == ["shared"]


WZ_SHARED = werkzeug.Response("wz", status=200, headers={"X-Kind": "shared"})


def test_an_override_does_not_change_a_shared_werkzeug_response():
    @http.GET("/ok")
    def ok() -> Any:
        return WZ_SHARED

    @http.GET("/override")
    def overridden() -> Any:
        return WZ_SHARED, 201, {"Location": "/made/1"}

    client = TestClient(App(controllers=[ok, overridden]))
    assert client.get("/override").status_code == 201
    plain = client.get("/ok")
    assert plain.status_code == 200
    assert "Location" not in plain.headers
    assert WZ_SHARED.status_code == 200
    assert "Location" not in WZ_SHARED.headers


class StampingMiddleware:
    """An outgoing step that changes ``event.response``, as the middleware docs show."""

    def outgoing(self, event: HttpEvent) -> None:
        event.response.headers.add("X-Stamp", "1")


def test_an_outgoing_middleware_does_not_change_the_shared_response():
    @http.GET("/ok")
    def ok() -> Response:
        return OK

    client = TestClient(App(controllers=[ok], middlewares=[StampingMiddleware]))
    for _ in range(3):
        assert client.get("/ok").headers.getlist("X-Stamp") == ["1"]
    assert "X-Stamp" not in OK.headers


def test_reading_the_headers_of_a_shared_response_keeps_its_content_type():
    shared = Response("ok", content_type="text/csv")
    assert shared.headers["Content-Type"] == "text/csv"
    clone = shared.copy()
    clone.headers["Content-Type"] = "text/plain"
    clone.status = 201
    assert (shared.status, shared.content_type) == (200, "text/csv")


# -- item 9: a header name given twice is sent twice -------------------------------------------

COOKIES = [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/")]
REPEATED = [
    lambda: Response("x", headers=COOKIES),
    lambda: JSONResponse({}, headers=COOKIES),
    lambda: ("x", 200, COOKIES),
    lambda: (Response("x", headers=[("Set-Cookie", "old=0")]), 200, COOKIES),
    lambda: Response("x", headers={"Set-Cookie": [value for _, value in COOKIES]}),
]


@pytest.mark.parametrize(
    "make",
    REPEATED,
    ids=["Response-pairs", "JSONResponse-pairs", "tuple-pairs", "tuple-replaces", "dict-list"],
)
def test_a_header_given_twice_is_sent_twice(make):
    response = TestClient(returning(make)).get("/")
    assert response.headers.getlist("Set-Cookie") == [value for _, value in COOKIES]


def test_a_given_header_replaces_the_default_one():
    response = TestClient(
        returning(lambda: Response("a,b", headers=[("Content-Type", "text/csv")]))
    )
    assert response.get("/").headers.getlist("Content-Type") == ["text/csv"]


def test_an_http_error_with_repeated_headers_sends_them_all():
    def fail() -> None:
        raise HTTPError("no", headers=COOKIES)

    response = TestClient(returning(fail)).get("/")
    assert response.status_code == 500
    assert response.headers.getlist("Set-Cookie") == [value for _, value in COOKIES]


# -- item 10: what reaches the server is valid -------------------------------------------------


def with_header(name: str, value: str) -> Callable[[], Response]:
    def make() -> Response:
        response = Response("x")
        response.headers.add(name, value)
        return response

    return make


def werkzeug_with_header(name: str, value: str) -> Callable[[], werkzeug.Response]:
    def make() -> werkzeug.Response:
        response = werkzeug.Response("x")
        response.headers.add(name, value)
        return response

    return make


def werkzeug_with_status(status: str) -> Callable[[], werkzeug.Response]:
    def make() -> werkzeug.Response:
        response = werkzeug.Response("x")
        response.status = status
        return response

    return make


def with_content_type_set(value: str) -> Callable[[], Response]:
    def make() -> Response:
        response = Response("x")
        response.content_type = value
        return response

    return make


def raise_http_error_with_a_bad_header() -> None:
    raise HTTPError("no", headers={"Retry-After": "\u2603"})


HOSTILE_HEADERS = [
    ("upload-filename-outside-latin-1",
     with_header("Content-Disposition", 'attachment; filename="\u2603.txt"')),
    ("crlf-in-content-type-argument",
     lambda: Response("x", content_type="text/plain\r\nSet-Cookie: admin=1")),
    ("lf-in-content-type-setter", with_content_type_set("text/plain\nX-Forged: 1")),
    ("outside-latin-1-content-type", lambda: Response("x", content_type="text/\u2603")),
    ("nul-in-value", with_header("X-Note", "a\x00b")),
    ("escape-in-value", with_header("X-Note", "\x1b[31mred")),
    ("del-in-value", with_header("X-Note", "a\x7fb")),
    ("space-in-name", with_header("X Note", "1")),
    ("colon-in-name", with_header("X-Note:", "1")),
    ("empty-name", with_header("", "1")),
    ("non-latin-1-name", with_header("X-\u00e9", "1")),
    ("tuple-headers-outside-latin-1", lambda: ("x", 200, {"X-Name": "\u2603"})),
    ("http-error-header-outside-latin-1", raise_http_error_with_a_bad_header),
    ("werkzeug-header-outside-latin-1", werkzeug_with_header("X-Name", "\u2603")),
    ("werkzeug-crlf-in-status", werkzeug_with_status("200 OK\r\nSet-Cookie: admin=1")),
    ("bad-status", lambda: Response("x", status=1200)),
]  # fmt: skip


@pytest.mark.parametrize(
    "make", [case[1] for case in HOSTILE_HEADERS], ids=[case[0] for case in HOSTILE_HEADERS]
)
def test_a_bad_header_is_a_clean_500_before_anything_is_sent(make, caplog):
    app = returning(make)
    answer = call(app)  # a strict server: it would raise on what it cannot send
    assert answer.status_code == 500
    assert answer.json == INTERNAL
    assert all(value.isprintable() and value.isascii() for _, value in answer.headers)
    assert error_logs(caplog)
    caplog.clear()
    validated = TestClient(app).get("/")  # wsgiref.validate agrees
    assert validated.status_code == 500
    assert TestClient(app).get("/").json == INTERNAL  # and the app goes on serving


VALID_HEADERS = [
    ("obs-text-latin-1", "caf\u00e9"),
    ("tab", "a\tb"),
    ("empty", ""),
    ("latin-1-of-utf-8", "\u00e2\u0082\u00ac"),  # PEP 3333 bytes of "€", decoded as latin-1
]


@pytest.mark.parametrize("value", [v for _, v in VALID_HEADERS], ids=[i for i, _ in VALID_HEADERS])
def test_a_valid_latin_1_header_value_is_sent_as_it_is(value):
    answer = call(returning(with_header("X-Note", value)))
    assert answer.status_code == 200
    assert answer.header("X-Note") == [value]


class Tracked:
    """A streamed body that records whether it was closed."""

    def __init__(self, chunks: list[Any]) -> None:
        self.chunks = chunks
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed = True


def test_a_stream_given_up_for_a_bad_header_is_closed():
    body = Tracked([b"never sent"])
    answer = call(returning(lambda: Response(body, headers={"X-Name": "\u2603"})))
    assert answer.status_code == 500
    assert body.closed


def test_a_stream_given_up_for_a_failing_response_listener_is_closed():
    body = Tracked([b"never sent"])
    app = returning(lambda: Response(body))

    @app.listen(http_workflow.on_response)
    def fail(event: HttpEvent) -> None:
        raise RuntimeError("after rendering")

    assert call(app).status_code == 500
    assert body.closed


BAD_CHUNKS = [(1, "int"), (None, "None"), ({"a": 1}, "dict"), (3.5, "float")]


@pytest.mark.parametrize("chunk", [c for c, _ in BAD_CHUNKS], ids=[i for _, i in BAD_CHUNKS])
def test_a_chunk_that_is_neither_bytes_nor_str_stops_the_stream(chunk, caplog):
    body = Tracked([b"first", chunk, b"never"])
    app = returning(lambda: Response(body))
    received: list[Any] = []
    iterable = app(environ_for("/"), strict_start_response)
    with pytest.raises(TypeError, match="not bytes or str"):
        for piece in iterable:
            received.append(piece)
    iterable.close()  # type: ignore[attr-defined]
    assert received == [b"first"]
    assert body.closed
    assert any("failed midway" in r.getMessage() for r in error_logs(caplog))


def test_str_and_bytes_like_chunks_reach_the_server_as_bytes():
    chunks = ["h\u00e9", bytearray(b"ll"), memoryview(b"o"), b""]
    answer = call(returning(lambda: Response(iter(chunks))))
    assert answer.chunks == ["h\u00e9".encode(), b"ll", b"o"]
    assert all(type(chunk) is bytes for chunk in answer.chunks)


def test_a_body_that_cannot_be_iterated_is_a_clean_500():
    def make() -> Response:
        response = Response("x")
        response.body = 42  # type: ignore[assignment]
        return response

    answer = call(returning(make))
    assert answer.status_code == 500
    assert answer.json == INTERNAL


def test_a_str_body_assigned_later_is_sent_encoded():
    def make() -> Response:
        response = Response(b"")
        response.body = "h\u00e9llo"  # type: ignore[assignment]
        return response

    answer = call(returning(make))
    assert answer.chunks == ["h\u00e9llo".encode()]
    assert answer.header("Content-Length") == [str(len("h\u00e9llo".encode()))]


def refusing_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    raise ServerRefused("the server refuses whatever it is given")


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed-body", "bytes-body"])
def test_when_start_response_raises_the_body_and_the_request_files_are_closed(streamed):
    seen: dict[str, Any] = {}
    body = Tracked([b"never sent"])

    @http.POST("/upload")
    def upload(request: Request) -> Response:
        seen["file"] = request.files["doc"]
        return Response(body) if streamed else Response(b"stored")

    app = App(controllers=[upload])
    environ = environ_for("/upload", "POST", data={"doc": (io.BytesIO(b"x" * 100), "doc.txt")})
    with pytest.raises(ServerRefused):
        app(environ, refusing_start_response)
    assert seen["file"].stream.closed
    if streamed:
        assert body.closed


def test_closing_the_body_closes_the_request_files_even_when_the_body_close_fails():
    seen: dict[str, Any] = {}

    class FailingClose(Tracked):
        def close(self) -> None:
            raise RuntimeError("close failed")

    @http.POST("/upload")
    def upload(request: Request) -> Response:
        seen["file"] = request.files["doc"]
        return Response(FailingClose([b"data"]))

    app = App(controllers=[upload])
    environ = environ_for("/upload", "POST", data={"doc": (io.BytesIO(b"x"), "doc.txt")})
    iterable = app(environ, strict_start_response)
    assert list(iterable) == [b"data"]
    with pytest.raises(RuntimeError, match="close failed"):
        iterable.close()  # type: ignore[attr-defined]
    assert seen["file"].stream.closed


def test_the_common_response_pays_for_no_header_validation(monkeypatch):
    checks: list[Any] = []
    real = responses_module.check_header

    def counting(name: Any, value: Any) -> None:
        checks.append((name, value))
        real(name, value)

    monkeypatch.setattr(responses_module, "check_header", counting)

    @http.GET("/hello")
    def hello() -> str:
        return "Hello"

    @http.GET("/data")
    def data() -> dict[str, int]:
        return {"a": 1}

    app = App(controllers=[hello, data])
    for path in ("/hello", "/data") * 50:
        assert call(app, path).status_code == 200
    assert checks == []


# -- item 11: a failed request leaves no reference cycle ---------------------------------------


def failing_app(how: str, *, debug: bool) -> App:
    @http.GET("/fail/{number}")
    def fail(number: int) -> str:
        if how == "http-error":
            raise HTTPError("expected")
        if how == "chained":
            try:
                {}["missing"]
            except KeyError as ex:
                raise RuntimeError("while handling") from ex
        raise RuntimeError("controller failed")

    app = App(controllers=[fail], debug=debug)
    if how == "request-listener":

        @app.listen(http_workflow.on_request)
        def fail_early(event: HttpEvent) -> None:
            raise RuntimeError("listener failed")

    if how == "failure-state":

        @app.listen(http_workflow.on_controller_error)
        def fail_again(event: HttpEvent) -> None:
            raise RuntimeError("failure state failed")

    return app


FAILURES = [
    ("controller", "/fail/1"),
    ("http-error", "/fail/1"),
    ("chained", "/fail/1"),
    ("request-listener", "/fail/1"),
    ("failure-state", "/fail/1"),
    ("parameters-failed", "/fail/not-a-number"),
]


def _serve(app: App, path: str, times: int) -> None:
    for _ in range(times):
        answer = call(app, path)
        assert answer.status_code in (400, 500)


@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
@pytest.mark.parametrize(("how", "path"), FAILURES, ids=[how for how, _ in FAILURES])
def test_failed_requests_leave_no_reference_cycle(how, path, debug, monkeypatch):
    # Log records hold tracebacks (pytest keeps them until the test ends): not ours to count.
    monkeypatch.setattr(logging.getLogger("workflowhttp"), "disabled", True)
    app = failing_app("controller" if how == "parameters-failed" else how, debug=debug)
    gc.collect()
    gc.disable()
    try:
        _serve(app, path, 50)
        alive = sum(1 for obj in gc.get_objects() if isinstance(obj, HttpEvent))
    finally:
        gc.enable()
    assert alive == 0


def test_the_error_keeps_its_type_and_message_for_the_stream():
    errors: list[str] = []
    app = failing_app("controller", debug=False)

    @app.listen(http_workflow.on_response)
    def remember(event: HttpEvent) -> None:
        errors.append(f"{type(event.error).__name__}: {event.error}")

    assert call(app, "/fail/1").status_code == 500
    assert errors == ["RuntimeError: controller failed"]


# -- item 14: request text in log lines is escaped ---------------------------------------------

HOSTILE_PATHS = [
    ("/a%0aERROR%20forged%20line", "\\n"),
    ("/a%0d%0aERROR%20forged%20line", "\\r\\n"),
    ("/a%1b[31m", "\\x1b"),
    ("/a%00b", "\\x00"),
    ("/a%c2%85next", "\\x85"),  # NEL, a line break to some log readers
    ("/a%e2%80%a8next", "\\x80"),  # U+2028's UTF-8 bytes, decoded as latin-1
    ("/a%5cnb", "\\\\n"),  # a literal backslash-n must not read as an escaped newline
]


def _printable_lines(messages: list[str]) -> None:
    for message in messages:
        assert message.isprintable(), message
        assert len(message.splitlines()) == 1, message


@pytest.mark.parametrize("fault", ["exception", "stall"])
@pytest.mark.parametrize(
    ("path", "escaped"),
    HOSTILE_PATHS,
    ids=["LF", "CRLF", "ESC", "NUL", "NEL", "U+2028", "backslash"],
)
def test_a_500_logs_the_request_path_escaped(path, escaped, fault, caplog):
    app = App(controllers=[])

    @app.listen(http_workflow.on_request)
    def fail(event: HttpEvent) -> None:
        if fault == "exception":
            raise RuntimeError("boom")
        event.stop_propagation()  # schedules nothing: the workflow stalls

    response = TestClient(app).get(path)
    assert response.status_code == 500
    messages = [record.getMessage() for record in error_logs(caplog)]
    assert len(messages) == 1
    _printable_lines(messages)
    assert escaped in messages[0]


def test_a_500_logs_the_request_method_escaped(caplog):
    app = App(controllers=[])

    @app.listen(http_workflow.on_request)
    def fail(event: HttpEvent) -> None:
        raise RuntimeError("boom")

    environ = environ_for("/x")
    environ["REQUEST_METHOD"] = "GET\nERROR forged"
    app(environ, strict_start_response)
    messages = [record.getMessage() for record in error_logs(caplog)]
    _printable_lines(messages)
    assert "GET\\nERROR forged /x" in messages[0]


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


ACCESS_PATHS = [
    ("/a\nforged", "LF"),
    ("/a\x85next", "NEL"),
    ("/a\u2028next", "U+2028"),
    ("/a\u2029next", "U+2029"),
    ("/a\x7fb", "DEL"),
    ("/caf\u00e9", "printable-latin-1"),
]


@pytest.mark.parametrize("path", [p for p, _ in ACCESS_PATHS], ids=[i for _, i in ACCESS_PATHS])
def test_the_access_log_line_stays_one_printable_line(path):
    logger = logging.getLogger("test_writer_hardening.access")
    handler = ListHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        processor = LogProcessor(logger)
        processor.process(
            RequestStarted(request_id="id-1", method="GET", path=path, client=None, time=0.0)
        )
        processor.process(
            RequestFinished(
                request_id="id-1",
                method="GET",
                path=path,
                route=None,
                status=500,
                duration=0.001,
                states={},
                time=0.0,
            )
        )
    finally:
        logger.removeHandler(handler)
    (line,) = handler.messages
    _printable_lines([line])
    assert json.loads(line)["path"] == path
