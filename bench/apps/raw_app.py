"""The floor: hand-written WSGI functions with no framework at all.

They do the least work that still answers correctly: a dict lookup for static paths, string
splitting for parameters, ``urllib.parse`` for the query string and ``msgspec`` for JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import msgspec

from . import MANY_ROUTES_STATIC, Item, param_text, static_text

_HTML = [("Content-Type", "text/html; charset=utf-8")]
_JSON = "application/json"
_NOT_FOUND = b'{"message":"Not Found"}'
_encode = msgspec.json.encode
_decode_item = msgspec.json.Decoder(Item).decode

Handler = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]


def _send(
    start_response: StartResponse, status: str, body: bytes, content_type: str
) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def _not_found(start_response: StartResponse) -> list[bytes]:
    return _send(start_response, "404 Not Found", _NOT_FOUND, _JSON)


def _text(start_response: StartResponse, text: str) -> list[bytes]:
    body = text.encode()
    start_response("200 OK", [*_HTML, ("Content-Length", str(len(body)))])
    return [body]


def _hello(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    return _text(start_response, "Hello, world!")


def _search(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
    try:
        q = query["q"]
        limit = int(query.get("limit", 10))
    except (KeyError, ValueError):
        return _send(start_response, "400 Bad Request", b'{"message":"Bad Request"}', _JSON)
    return _send(start_response, "200 OK", _encode({"q": q, "limit": limit}), _JSON)


def _create_item(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    try:
        item = _decode_item(environ["wsgi.input"].read(length))
    except msgspec.DecodeError:
        return _send(start_response, "400 Bad Request", b'{"message":"Bad Request"}', _JSON)
    return _send(start_response, "201 Created", _encode(item), _JSON)


def _main_app() -> WSGIApplication:
    static: dict[tuple[str, str], Handler] = {
        ("GET", "/hello"): _hello,
        ("GET", "/search"): _search,
        ("POST", "/items"): _create_item,
    }

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ["PATH_INFO"]
        handler = static.get((method, path))
        if handler is not None:
            return handler(environ, start_response)
        if method == "GET" and path.startswith("/users/"):
            raw_id = path[7:]
            if raw_id.isdigit():
                user_id = int(raw_id)
                body = _encode({"id": user_id, "name": f"user{user_id}"})
                return _send(start_response, "200 OK", body, _JSON)
        return _not_found(start_response)

    return app


def _many_routes_app(static_count: int) -> WSGIApplication:
    static = {f"/static/{i}": static_text(i) for i in range(static_count)}
    param_prefixes = {f"param{i}": i for i in range(static_count)}

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != "GET":
            return _not_found(start_response)
        path = environ["PATH_INFO"]
        text = static.get(path)
        if text is not None:
            return _text(start_response, text)
        parts = path.split("/")
        if len(parts) == 3:
            index = param_prefixes.get(parts[1])
            if index is not None and parts[2].isdigit():
                return _text(start_response, param_text(index, int(parts[2])))
        return _not_found(start_response)

    return app


def make_app(kind: str) -> WSGIApplication:
    """Return the raw WSGI app of the given kind (see ``bench.apps.APP_KINDS``)."""
    if kind == "main":
        return _main_app()
    if kind == "many_routes":
        return _many_routes_app(MANY_ROUTES_STATIC)
    raise ValueError(f"unknown app kind {kind!r}")
