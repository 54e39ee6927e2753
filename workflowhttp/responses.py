"""Responses and the rendering of return values: what a request's answer is, before WSGI.

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

This module owns the response types (:class:`Response` and its subclasses, the content-type
constants), making one from a return value (:func:`render`, :func:`copy_response`) and
:func:`check_header`, the one check of a header name and value: a :class:`Response` checks
its content type with it when the type is set, and :mod:`workflowhttp.wsgi`, which turns a
response into what the server is handed, checks every other header with it there. It imports
:mod:`workflowhttp.errors` and werkzeug's data structures, never the WSGI writer
(:mod:`workflowhttp.wsgi` imports this module, not the reverse), the request or the app.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator
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
    "check_header",
    "copy_response",
    "render",
    "status_of",
]

HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
OCTETS = "application/octet-stream"

_json_encode = msgspec.json.Encoder().encode

# SECURITY: what reaches the server's start_response is checked by check_header (from
# wsgi.prepare, and here when a content type is set), so a header built from client data (an
# upload's filename, a Content-Type echoed back) can neither forge another header (CR/LF) nor
# make the server raise out of the app (a value outside latin-1).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 9110 field name
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")  # VCHAR, SP, HTAB, obs-text: latin-1
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
            # so that the fast branch of wsgi.prepare() can send it as it is.
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


def status_of(response: Response | WerkzeugResponse) -> int:
    """Return a response's status code (ours or werkzeug's)."""
    if isinstance(response, Response):
        return response.status
    return response.status_code


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
