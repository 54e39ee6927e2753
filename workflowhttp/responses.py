"""Responses, the rendering of return values, and writing a response to WSGI.

Return values (or what ``event.send()`` was given) render as:

=====================================  ================================================
``str``                                ``text/html; charset=utf-8``
``dict``, ``list``, dataclass, Struct  JSON (``msgspec``), ``application/json``
``bytes``                              ``application/octet-stream``
``None``                               204, no body
``(body, status)``, ``(body, status,   the body rendered as above, then status and headers
headers)``
a :class:`Response`                    as is
a ``werkzeug.Response``                as is (called as a WSGI app)
an iterator or generator               streamed; ``str`` chunks encoded as UTF-8
=====================================  ================================================

Anything else is a ``TypeError`` (a logged 500).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import msgspec
from werkzeug.datastructures import Headers
from werkzeug.http import dump_cookie
from werkzeug.urls import iri_to_uri
from werkzeug.wrappers import Response as WerkzeugResponse

from .errors import BadRequest

__all__ = ["HTMLResponse", "JSONResponse", "Redirect", "Response", "render"]

logger = logging.getLogger("workflowhttp")

HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
OCTETS = "application/octet-stream"

_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}
_NO_BODY = frozenset({204, 304})
_WITH_BODY_LINES = {
    code: line for code, line in _STATUS_LINES.items() if code >= 200 and code not in _NO_BODY
}
_json_encode = msgspec.json.Encoder().encode


def status_line(status: int) -> str:
    """Return the WSGI status line of ``status``."""
    line = _STATUS_LINES.get(status)
    if line is None:
        if not isinstance(status, int) or not 100 <= status <= 999:
            raise ValueError(f"invalid HTTP status {status!r}")
        line = f"{status} Unknown"
    return line


class Response:
    """An HTTP response: a body, a status and headers.

    Args:
        body: ``bytes``, ``str`` (encoded as UTF-8) or an iterable of chunks (streamed).
        status: The status code.
        headers: Initial headers (a dict or a list of pairs).
        content_type: The ``Content-Type`` (default ``text/plain; charset=utf-8``).

    ``headers`` is case-insensitive and mutable (werkzeug's ``Headers``), built on first use.
    """

    __slots__ = ("body", "status", "_headers", "_content_type")

    default_content_type = TEXT

    def __init__(
        self,
        body: bytes | str | Iterable[bytes | str] = b"",
        status: int = 200,
        headers: Any = None,
        content_type: str | None = None,
    ) -> None:
        self.body = body.encode() if isinstance(body, str) else body
        self.status = status
        self._content_type: str | None = content_type or self.default_content_type
        # PERF: no Headers object unless someone asks for one.
        self._headers: Headers | None = None
        if headers:
            self.headers.update(headers)

    @property
    def headers(self) -> Headers:
        """The response headers (case-insensitive; ``Content-Type`` included)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = Headers()
            if self._content_type:
                headers["Content-Type"] = self._content_type
            self._content_type = None
        return headers

    @property
    def content_type(self) -> str | None:
        if self._headers is None:
            return self._content_type
        return self._headers.get("Content-Type")

    @content_type.setter
    def content_type(self, value: str | None) -> None:
        if self._headers is None:
            self._content_type = value
        elif value is None:
            self._headers.pop("Content-Type", None)
        else:
            self._headers["Content-Type"] = value

    def set_cookie(
        self,
        key: str,
        value: str = "",
        *,
        max_age: int | None = None,
        path: str = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = True,
        samesite: str | None = "Lax",
    ) -> None:
        """Add a ``Set-Cookie`` header; ``HttpOnly`` and ``SameSite=Lax`` by default."""
        self.headers.add(
            "Set-Cookie",
            dump_cookie(
                key,
                value,
                max_age=max_age,
                path=path,
                domain=domain,
                secure=secure,
                httponly=httponly,
                samesite=samesite,
            ),
        )

    def delete_cookie(self, key: str, *, path: str = "/", domain: str | None = None) -> None:
        """Expire the cookie ``key``."""
        self.headers.add(
            "Set-Cookie", dump_cookie(key, "", max_age=0, expires=0, path=path, domain=domain)
        )

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (not for streamed bodies)."""
        if not isinstance(self.body, (bytes, bytearray)):
            raise TypeError("a streamed body has no text")
        return bytes(self.body).decode()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status} {self.content_type}>"


class JSONResponse(Response):
    """A JSON response; ``value`` is encoded with ``msgspec`` (dataclasses, Structs included)."""

    __slots__ = ()

    def __init__(self, value: Any, status: int = 200, headers: Any = None) -> None:
        super().__init__(_json_encode(value), status, headers, JSON)


class HTMLResponse(Response):
    """An HTML response."""

    __slots__ = ()

    def __init__(self, text: str, status: int = 200, headers: Any = None) -> None:
        super().__init__(text, status, headers, HTML)


class Redirect(Response):
    """A redirect to ``location``.

    SECURITY: a location with CR or LF (header injection), or on another host (an open
    redirect), raises ``BadRequest`` (a 400 when it happens in a request) unless built with
    ``external=True`` for a host you mean to send users to.
    """

    __slots__ = ()

    def __init__(
        self, location: str, status: int = 302, *, external: bool = False, headers: Any = None
    ) -> None:
        if "\r" in location or "\n" in location:
            raise BadRequest("Redirect location contains a line break")
        if not external and _leaves_site(location):
            raise BadRequest("Redirect to another host is not allowed")
        super().__init__(b"", status, headers, TEXT)
        self.headers["Location"] = iri_to_uri(location)


def _leaves_site(location: str) -> bool:
    # Browsers read '\' as '/', so '/\evil.example' is protocol-relative too.
    normalized = location.strip().replace("\\", "/")
    if normalized.startswith("//"):
        return True
    parts = urlsplit(normalized)
    return bool(parts.scheme or parts.netloc)


# -- rendering ---------------------------------------------------------------------------------


def _render_str(result: str) -> Response:
    return Response(result.encode(), 200, None, HTML)


def _render_json(result: Any) -> Response:
    return Response(_json_encode(result), 200, None, JSON)


def _render_bytes(result: bytes) -> Response:
    return Response(bytes(result), 200, None, OCTETS)


def _render_none(result: None) -> Response:
    # At 204 the writer sends no Content-Type; with another status ("(None, 202)") the empty
    # body keeps one, as PEP 3333's validator requires of every status but 204 and 304.
    return Response(b"", 204)


def _render_response(result: Response) -> Response:
    return result


_RENDERERS: dict[type, Callable[[Any], Any]] = {
    str: _render_str,
    dict: _render_json,
    list: _render_json,
    bytes: _render_bytes,
    bytearray: _render_bytes,
    type(None): _render_none,
    Response: _render_response,
    JSONResponse: _render_response,
    HTMLResponse: _render_response,
    Redirect: _render_response,
}


def render(result: Any, status: int | None = None) -> Response | WerkzeugResponse:
    """Render a controller's return value into a response (see the module docstring).

    Raises:
        TypeError: the value is of no supported type.
    """
    renderer = _RENDERERS.get(type(result))
    response = renderer(result) if renderer is not None else _render_other(result)
    if status is not None:
        if isinstance(response, WerkzeugResponse):
            response.status_code = status
        else:
            response.status = status
    return response


def _render_other(result: Any) -> Response | WerkzeugResponse:
    if isinstance(result, (Response, WerkzeugResponse)):
        return result
    if isinstance(result, tuple):
        return _render_tuple(result)
    if isinstance(result, str):  # a str subclass
        return _render_str(str(result))
    if isinstance(result, (bytes, bytearray, memoryview)):
        return _render_bytes(bytes(result))
    if isinstance(result, (dict, list, msgspec.Struct)) or (
        dataclasses.is_dataclass(result) and not isinstance(result, type)
    ):
        return _render_json(result)
    if isinstance(result, Iterator) or hasattr(result, "__next__"):
        return Response(result, 200, None, HTML)
    raise TypeError(f"cannot render a {type(result).__qualname__} into a response")


def _render_tuple(result: tuple[Any, ...]) -> Response | WerkzeugResponse:
    if not 2 <= len(result) <= 3 or not isinstance(result[1], int):
        raise TypeError("a tuple return value must be (body, status) or (body, status, headers)")
    response = render(result[0], result[1])
    if len(result) == 3 and result[2]:
        response.headers.update(result[2])
    return response


# -- writing to WSGI ----------------------------------------------------------------------------


def status_of(response: Response | WerkzeugResponse) -> int:
    """Return a response's status code (ours or werkzeug's)."""
    if isinstance(response, Response):
        return response.status
    return response.status_code


Prepared = tuple[str, list[tuple[str, str]], Iterable[bytes]]
"""A response ready for WSGI: the status line, the header list and the body iterable."""


def prepare(
    response: Response | WerkzeugResponse,
    environ: dict[str, Any],
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> Prepared:
    """Turn ``response`` into what ``start_response`` and the server need, calling neither.

    Everything that can fail (a bad status, a bad header) fails here, before the app calls
    ``start_response``, so a failure can still be answered with a clean 500.
    ``extra_headers`` are sent after the response's own (the stream's ``X-Request-ID``),
    without touching the response object, which may be shared between requests.

    PERF: the common response (bytes body, no extra headers, a status with a body) takes the
    first branch: one status-line lookup, a two-item header list, no ``Headers`` object.
    """
    if not isinstance(response, Response):
        app_iter, werkzeug_line, wsgi_headers = response.get_wsgi_response(environ)
        return werkzeug_line, [*wsgi_headers, *extra_headers], app_iter
    status = response.status
    body = response.body
    content_type = response._content_type
    if response._headers is None and body.__class__ is bytes and content_type:
        line = _WITH_BODY_LINES.get(status)
        if line is not None:
            header_list = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
            if extra_headers:
                header_list.extend(extra_headers)
            return line, header_list, [] if environ["REQUEST_METHOD"] == "HEAD" else [body]
    return _prepare_any(response, status, body, environ, extra_headers)


def _prepare_any(
    response: Response,
    status: int,
    body: Any,
    environ: dict[str, Any],
    extra_headers: tuple[tuple[str, str], ...],
) -> Prepared:
    line = status_line(status)
    headers = response._headers
    if headers is None:
        content_type = response._content_type
        header_list = [("Content-Type", content_type)] if content_type else []
    else:
        header_list = headers.to_wsgi_list()
    header_list.extend(extra_headers)
    if status in _NO_BODY or status < 200:
        header_list = [
            (name, value)
            for name, value in header_list
            if name.lower() not in ("content-type", "content-length")
        ]
        _close(body)
        return line, header_list, []
    if isinstance(body, (bytes, bytearray, memoryview)):
        if headers is None or "Content-Length" not in headers:
            header_list.append(("Content-Length", str(len(body))))
        return line, header_list, [] if environ["REQUEST_METHOD"] == "HEAD" else [bytes(body)]
    if environ["REQUEST_METHOD"] == "HEAD":
        _close(body)
        return line, header_list, []
    return line, header_list, _Stream(body)


def _close(body: Any) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()


class _Stream:
    """A streamed body: ``str`` chunks are encoded; the source is closed when WSGI closes us."""

    __slots__ = ("_source",)

    def __init__(self, source: Iterable[bytes | str]) -> None:
        self._source = source

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._source:
                if isinstance(chunk, str):
                    chunk = chunk.encode()
                if chunk:
                    yield chunk
        except Exception:
            # The status is sent: the only honest signal left is to abort the connection,
            # which the server does when the body iterator raises.
            logger.exception("streamed response body failed midway")
            raise

    def close(self) -> None:
        close = getattr(self._source, "close", None)
        if close is not None:
            close()
