"""Responses, the rendering of return values, and writing a response to WSGI.

Return values (or what ``event.send()`` was given) render as:

=====================================  ================================================
``str``                                ``text/plain; charset=utf-8`` (HTML: ``HTMLResponse``)
``dict``, ``list``, dataclass, Struct  JSON (``msgspec``), ``application/json``
``bytes``                              ``application/octet-stream``
``None``                               204, no body
``(body, status)``, ``(body, status,   the body rendered as above, then status and headers
headers)``
a :class:`Response`                    as is
a ``werkzeug.Response``                as is (called as a WSGI app)
an iterator or generator               streamed; ``str`` chunks encoded as UTF-8
=====================================  ================================================

Anything else is a ``TypeError`` (a logged 500). A status or headers given with a response the
caller made (``(OK, 201, headers)``, ``event.send(OK, status=201)``) change a copy of it: the
caller's object, perhaps shared by every request, is never changed.

What leaves for the server is checked once, in :func:`prepare`, before ``start_response``: the
status, every header name (an RFC 9110 token) and value (PEP 3333: a latin-1 ``str`` without
CR, LF or other control characters), and every chunk of a streamed body (``bytes``, or ``str``
encoded as UTF-8). A bad status or header becomes the app's clean 500; a bad chunk, once the
status is sent, aborts the stream.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
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

__all__ = [
    "HTMLResponse",
    "JSONResponse",
    "Redirect",
    "Response",
    "close_body",
    "close_unsent",
    "render",
]

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

# SECURITY: what reaches the server's start_response is checked here, so a header built from
# client data (an upload's filename, a Content-Type echoed back) can neither forge another
# header (CR/LF) nor make the server raise out of the app (a value outside latin-1).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 9110 field name
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")  # VCHAR, SP, HTAB, obs-text: latin-1
_STATUS_LINE = re.compile(r"[1-9][0-9]{2} [\t\x20-\x7e\x80-\xff]*")
# PERF: names (and content types) are nearly always the same few constants: each is checked
# once, then found in a set. Bounded, since a name may come from client data.
_CHECKED_NAMES = {"Content-Type", "Content-Length", "Location", "Set-Cookie", "Allow"}
_CHECKED_TYPES = {HTML, TEXT, JSON, OCTETS}
_CHECKED_MAX = 512


def check_header(name: object, value: object) -> None:
    """Raise ``ValueError`` unless ``name: value`` may be given to ``start_response``.

    The name is an RFC 9110 token; the value a ``str`` of latin-1 characters without CR, LF or
    other control characters (tab allowed), as PEP 3333 requires.
    """
    if name not in _CHECKED_NAMES:
        if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
            raise ValueError(f"invalid header name {name!r}")
        if len(_CHECKED_NAMES) < _CHECKED_MAX:
            _CHECKED_NAMES.add(name)
    if not isinstance(value, str):
        raise ValueError(f"header {name!s} has a {type(value).__name__} value, not a str")
    # PERF: printable ASCII, the usual case, is two C calls; the rest goes to the pattern.
    if not (value.isascii() and value.isprintable()) and _FIELD_VALUE.fullmatch(value) is None:
        raise ValueError(f"header {name!s} has an invalid value {value!r}")


def _checked_content_type(value: Any) -> Any:
    """Return ``value`` (a content type or ``None``) once it is known to be a valid value."""
    if value is not None and value not in _CHECKED_TYPES:
        check_header("Content-Type", value)
        if len(_CHECKED_TYPES) < _CHECKED_MAX:
            _CHECKED_TYPES.add(value)
    return value


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
        headers: Initial headers (a dict, a list of pairs or a ``Headers``); a name given
            twice (two ``Set-Cookie``) is sent twice.
        content_type: The ``Content-Type`` (default ``text/plain; charset=utf-8``).

    ``headers`` is case-insensitive and mutable (werkzeug's ``Headers``), built on first use.

    Raises:
        ValueError: ``content_type`` is no valid header value (CR, LF, a control character,
            a character outside latin-1).
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
        if not content_type:
            content_type = self.default_content_type
        elif content_type not in _CHECKED_TYPES:
            # SECURITY: checked once, here (PERF: the usual constants are found in a set),
            # so that the fast branch of prepare() can send it as it is.
            _checked_content_type(content_type)
        self._content_type: str | None = content_type
        # PERF: no Headers object unless someone asks for one.
        self._headers: Headers | None = None
        if headers:
            _override_headers(self.headers, headers)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _checked_content_type(cls.default_content_type)

    @property
    def headers(self) -> Headers:
        """The response headers (case-insensitive; ``Content-Type`` included)."""
        headers = self._headers
        if headers is None:
            headers = Headers()
            if self._content_type:
                headers["Content-Type"] = self._content_type
            # Published whole, and _content_type left as it was: two threads reading the
            # headers of a shared response at once both see its Content-Type.
            self._headers = headers
        return headers

    @property
    def content_type(self) -> str | None:
        if self._headers is None:
            return self._content_type
        return self._headers.get("Content-Type")

    @content_type.setter
    def content_type(self, value: str | None) -> None:
        if self._headers is None:
            self._content_type = _checked_content_type(value)
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

    def copy(self) -> Response:
        """Return a copy with headers of its own (the body is shared), to change freely."""
        if type(self) in _PLAIN_CLASSES:  # PERF: copy.copy of a slotted object is slow
            clone = object.__new__(type(self))
            clone.body = self.body
            clone.status = self.status
            clone._content_type = self._content_type
            clone._headers = self._headers
        else:  # a user's subclass may carry more state
            clone = copy.copy(self)
        if self._headers is not None:
            clone._headers = self._headers.copy()
        return clone

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


_PLAIN_CLASSES = frozenset({Response, JSONResponse, HTMLResponse, Redirect})


def _override_headers(headers: Headers, given: Any) -> None:
    """Set ``given`` (a mapping, a list of pairs or a ``Headers``) on ``headers``.

    Each name given replaces that name's values in ``headers``; a name given more than once
    (two ``Set-Cookie``) keeps every value, which ``Headers.update`` would not.
    """
    given = Headers(given)
    for name in set(given.keys(lower=True)):
        headers.remove(name)
    headers.extend(given)


def _leaves_site(location: str) -> bool:
    # Browsers read '\' as '/', so '/\evil.example' is protocol-relative too.
    normalized = location.strip().replace("\\", "/")
    if normalized.startswith("//"):
        return True
    parts = urlsplit(normalized)
    return bool(parts.scheme or parts.netloc)


# -- rendering ---------------------------------------------------------------------------------


def _render_str(result: str) -> Response:
    # SECURITY: text, never markup: a string echoing user input cannot run as a script.
    return Response(result.encode(), 200, None, TEXT)


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

    ``status`` overrides the rendered status; a response the caller made is copied first.

    Raises:
        TypeError: the value is of no supported type.
    """
    renderer = _RENDERERS.get(type(result))
    response = renderer(result) if renderer is not None else _render_other(result)
    if status is not None:
        if response is result:  # the caller's object, maybe shared by every request
            response = copy_response(response)
        if isinstance(response, WerkzeugResponse):
            response.status_code = status
        else:
            response.status = status
    return response


def copy_response(response: Response | WerkzeugResponse) -> Response | WerkzeugResponse:
    """Return a copy of ``response`` whose status and headers can change without touching it.

    The body is shared (a streamed one can only be sent once anyway).
    """
    if isinstance(response, Response):
        return response.copy()
    clone = copy.copy(response)
    clone.headers = response.headers.copy()
    on_close = getattr(response, "_on_close", None)  # call_on_close() appends to it
    if isinstance(on_close, list):
        clone._on_close = list(on_close)
    return clone


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
        return Response(result, 200, None, TEXT)
    raise TypeError(
        f"cannot render a value of type {type(result).__qualname__}; return str, bytes, dict, "
        f"list, a dataclass/Struct, None, a (body, status) tuple, a Response or an iterator"
    )


def _render_tuple(result: tuple[Any, ...]) -> Response | WerkzeugResponse:
    if not 2 <= len(result) <= 3 or not isinstance(result[1], int):
        raise TypeError("a tuple return value must be (body, status) or (body, status, headers)")
    response = render(result[0], result[1])  # a copy, when result[0] is the caller's response
    if len(result) == 3 and result[2]:
        _override_headers(response.headers, result[2])
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

    Everything that can fail (a bad status, a bad header name or value, a body that is not
    iterable) fails here, before the app calls ``start_response``, so a failure can still be
    answered with a clean 500; nothing is closed then (the caller gives the response up
    whole, with :func:`close_unsent`). ``extra_headers`` (the stream's ``X-Request-ID``, made
    by the app) are sent after the response's own, without touching the response object,
    which may be shared between requests.

    PERF: the common response (bytes body, no Headers object, a status with a body) takes the
    first branch: one status-line lookup, a two-item header list, no validation (its content
    type was checked when it was set).
    """
    if not isinstance(response, Response):
        return _prepare_werkzeug(response, environ, extra_headers)
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
        for name, value in header_list:
            check_header(name, value)  # SECURITY: see check_header
    header_list.extend(extra_headers)
    if status in _NO_BODY or status < 200:
        header_list = [
            (name, value)
            for name, value in header_list
            if name.lower() not in ("content-type", "content-length")
        ]
        close_body(body)
        return line, header_list, []
    if isinstance(body, str):  # assigned to .body after the response was made
        body = body.encode()
    if isinstance(body, (bytes, bytearray, memoryview)):
        data = bytes(body)
        if headers is None or "Content-Length" not in headers:
            header_list.append(("Content-Length", str(len(data))))
        return line, header_list, [] if environ["REQUEST_METHOD"] == "HEAD" else [data]
    if environ["REQUEST_METHOD"] == "HEAD":
        close_body(body)
        return line, header_list, []
    return line, header_list, _Stream(body)


def _prepare_werkzeug(
    response: WerkzeugResponse,
    environ: dict[str, Any],
    extra_headers: tuple[tuple[str, str], ...],
) -> Prepared:
    if not isinstance(response, WerkzeugResponse):
        raise TypeError(f"a {type(response).__qualname__} is not a response")
    app_iter, line, wsgi_headers = response.get_wsgi_response(environ)
    # SECURITY: werkzeug checks neither its status line nor its header values for what the
    # server cannot send (CR/LF in a reason phrase, a value outside latin-1).
    if line.__class__ is not str or _STATUS_LINE.fullmatch(line) is None:
        raise ValueError(f"invalid status line {line!r}")
    for name, value in wsgi_headers:
        check_header(name, value)
    return line, [*wsgi_headers, *extra_headers], _Stream(app_iter)


def close_body(body: Any) -> None:
    """Close ``body`` if it can be closed (a generator, a file, a WSGI iterable)."""
    close = getattr(body, "close", None)
    if close is not None:
        close()


def close_unsent(sent: Response | WerkzeugResponse, *unsent: Any) -> None:
    """Close the bodies of responses (or return values) a request made but will not send.

    A response given up for the last-resort 500 (a listener failed after rendering, its
    headers were bad) or replaced by a listener would otherwise hold its generator, file or
    cursor open until the garbage collector finds it. Whatever shares ``sent``'s body is left
    alone; a failure to close is logged, since the request must still be answered.
    """
    kept = _body_of(sent)
    for item in unsent:
        body = _body_of(item)
        if body is None or body is kept:
            continue
        try:
            close_body(body)
        except Exception:
            logger.exception("closing a response body that is not sent failed")


def _body_of(item: Any) -> Any:
    """Return what of ``item`` (a response or a return value) would be streamed, or ``None``."""
    if isinstance(item, Response):
        body = item.body
        return None if isinstance(body, (bytes, bytearray, memoryview)) else body
    if isinstance(item, WerkzeugResponse):
        return item  # its close() closes its iterable and runs its call_on_close functions
    if isinstance(item, tuple):
        return _body_of(item[0]) if item else None
    if isinstance(item, Iterator) or hasattr(item, "__next__"):
        return item
    return None


class _Stream:
    """A streamed body: chunks checked as they come; the source is closed when WSGI closes us.

    SECURITY: PEP 3333 servers expect ``bytes``: a ``str`` chunk is encoded as UTF-8, and
    anything else (an ``int``, ``None``) stops the stream with a logged error, which makes the
    server abort the connection, instead of being handed to the server as it is.
    """

    __slots__ = ("_source", "_chunks")

    def __init__(self, source: Iterable[bytes | str]) -> None:
        self._chunks = iter(source)  # a body that cannot be iterated fails here, not midway
        self._source = source

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._chunks:
                if chunk.__class__ is not bytes:
                    chunk = _chunk_bytes(chunk)
                if chunk:
                    yield chunk
        except Exception:
            # The status is sent: the only honest signal left is to abort the connection,
            # which the server does when the body iterator raises.
            logger.exception("streamed response body failed midway")
            raise

    def close(self) -> None:
        chunks = self._chunks
        try:
            if chunks is not self._source:  # an iterable whose __iter__ made a generator
                close_body(chunks)
        finally:
            close_body(self._source)


def _chunk_bytes(chunk: Any) -> bytes:
    if isinstance(chunk, str):
        return chunk.encode()
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return bytes(chunk)
    raise TypeError(f"a streamed body yielded a {type(chunk).__qualname__}, not bytes or str")
