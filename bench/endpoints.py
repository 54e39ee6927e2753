"""What is requested and what every framework must answer.

An :class:`Endpoint` is one request (method, path, query, body) plus the answer expected from
every app: status, media type and body. JSON bodies are compared after parsing, so whitespace
and key order do not matter; a ``None`` body (the 404) is not compared, because every framework
words its own "not found" page.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from wsgiref.types import WSGIApplication, WSGIEnvironment
from wsgiref.validate import validator

from .apps import MANY_ROUTES_STATIC, param_text, routes_app_paths, static_text

TEXT = "text/*"
"""Any text type: each framework answers a ``str`` with its own (Flask HTML, workflowhttp plain)."""
JSON = "application/json"


@dataclass(frozen=True)
class Endpoint:
    """One benchmarked request and its expected answer."""

    name: str
    method: str
    path: str
    status: int
    media_type: str | None
    body: str | None
    query: str = ""
    request_body: bytes | None = None
    app_kind: str = "main"

    @property
    def title(self) -> str:
        """Return the request line, e.g. ``GET /search?q=abc&limit=10``."""
        query = f"?{self.query}" if self.query else ""
        return f"{self.method} {self.path}{query}"

    def environ(self) -> WSGIEnvironment:
        """Return a complete PEP 3333 environ for this request (``wsgi.input`` is empty)."""
        return build_environ(self.method, self.path, self.query, self.request_body)


_LAST_STATIC, _LAST_PARAM = routes_app_paths(2 * MANY_ROUTES_STATIC)
_LAST = MANY_ROUTES_STATIC - 1

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("hello", "GET", "/hello", 200, TEXT, "Hello, world!"),
    Endpoint("user", "GET", "/users/123", 200, JSON, '{"id": 123, "name": "user123"}'),
    Endpoint(
        "search", "GET", "/search", 200, JSON, '{"q": "abc", "limit": 10}', query="q=abc&limit=10"
    ),
    Endpoint("missing", "GET", "/missing", 404, None, None),
    Endpoint(
        "create",
        "POST",
        "/items",
        201,
        JSON,
        '{"name": "widget", "price": 9.5}',
        request_body=b'{"name": "widget", "price": 9.5}',
    ),
    Endpoint(
        "many_static", "GET", _LAST_STATIC, 200, TEXT, static_text(_LAST), app_kind="many_routes"
    ),
    Endpoint(
        "many_param", "GET", _LAST_PARAM, 200, TEXT, param_text(_LAST, 42), app_kind="many_routes"
    ),
)


def build_environ(
    method: str, path: str, query: str = "", body: bytes | None = None
) -> WSGIEnvironment:
    """Return the environ a WSGI server such as gunicorn would pass for this request."""
    environ: WSGIEnvironment = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "workflowhttp-bench",
        "HTTP_ACCEPT": "*/*",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if body is not None:
        environ["CONTENT_TYPE"] = "application/json"
        environ["CONTENT_LENGTH"] = str(len(body))
    return environ


@dataclass(frozen=True)
class Answer:
    """What an app answered to one request."""

    status: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def status_code(self) -> int:
        return int(self.status.split(" ", 1)[0])

    @property
    def media_type(self) -> str | None:
        for name, value in self.headers:
            if name.lower() == "content-type":
                return value.split(";", 1)[0].strip().lower()
        return None


def call(app: WSGIApplication, environ: WSGIEnvironment, body: bytes | None) -> Answer:
    """Send one request through ``app`` (wrapped in ``wsgiref.validate``) and collect the answer."""
    environ = dict(environ)
    environ["wsgi.input"] = io.BytesIO(body or b"")
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: object = None
    ) -> Callable[[bytes], object]:
        started.append((status, list(headers)))
        return lambda data: None

    result: Iterable[bytes] = validator(app)(environ, start_response)
    try:
        payload = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = started[-1]
    return Answer(status, headers, payload)


def _canonical_json(text: str | bytes) -> str:
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def _same_type(given: str | None, expected: str) -> bool:
    if expected.endswith("/*"):
        return given is not None and given.startswith(expected[:-1])
    return given == expected


def discrepancies(
    answer: Answer, status: int, media_type: str | None, body: str | None
) -> list[str]:
    """Return how ``answer`` differs from the expected status, media type and body."""
    problems: list[str] = []
    if answer.status_code != status:
        problems.append(f"status {answer.status!r}, expected {status}")
    if media_type is not None and not _same_type(answer.media_type, media_type):
        problems.append(f"content type {answer.media_type!r}, expected {media_type!r}")
    if body is None:
        return problems
    if media_type == JSON:
        try:
            same = _canonical_json(answer.body) == _canonical_json(body)
        except ValueError:
            same = False
    else:
        same = answer.body == body.encode()
    if not same:
        problems.append(f"body {answer.body[:200]!r}, expected {body!r}")
    return problems
