"""Writing a response to WSGI: what the server is handed, checked once, and what is closed.

:func:`prepare` turns a response (ours or werkzeug's) into what ``start_response`` and the
server need, the status line, the header list and the body iterable, calling neither;
:func:`close_body` and :func:`close_unsent` close what a request opened and will not send.

What leaves for the server is checked once, in :func:`prepare`, before ``start_response``: the
status, every header name (an RFC 9110 token) and value (PEP 3333: a latin-1 ``str`` without
CR, LF or other control characters), and every chunk of a streamed body (``bytes``, or ``str``
encoded as UTF-8). A bad status or header becomes the app's clean 500; a bad chunk, once the
status is sent, aborts the stream.

This module owns the wire side only. The response types, the rendering of return values and
the header check both sides use (a :class:`~workflowhttp.responses.Response` checks its
content type when it is set) are :mod:`workflowhttp.responses`'. It imports ``responses``
and werkzeug's ``Response``; ``responses`` never imports it (werkzeug keeps its ``sansio/``
apart from its WSGI wrappers the same way).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Response as WerkzeugResponse

from . import responses  # for responses.check_header: one check of a header, shared
from .di import Teardown, run_teardowns
from .responses import Response

if TYPE_CHECKING:
    from .request import Request

__all__ = ["ClosingBody", "Prepared", "close_body", "close_unsent", "prepare"]

logger = logging.getLogger("workflowhttp")

_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}
_NO_BODY = frozenset({204, 304})
_WITH_BODY_LINES = {
    code: line for code, line in _STATUS_LINES.items() if code >= 200 and code not in _NO_BODY
}
_STATUS_LINE = re.compile(r"[1-9][0-9]{2} [\t\x20-\x7e\x80-\xff]*")


def status_line(status: int) -> str:
    """Return the WSGI status line of ``status``."""
    line = _STATUS_LINES.get(status)
    if line is None:
        if not isinstance(status, int) or not 100 <= status <= 999:
            raise ValueError(f"invalid HTTP status {status!r}")
        line = f"{status} Unknown"
    return line


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
            responses.check_header(name, value)  # SECURITY: see responses.check_header
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
        responses.check_header(name, value)
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


class ClosingBody:
    """The body handed to the server: closing it closes the body, then runs the teardowns of
    the request's generator services (newest first, ``error`` thrown in when the request
    failed), then closes the request's files.

    Unlike werkzeug's ``ClosingIterator``, the rest still happens when closing the body
    raises (a generator's ``finally`` that fails).
    """

    __slots__ = ("_body", "_request", "_teardowns", "_error")

    def __init__(
        self,
        body: Iterable[bytes],
        request: Request | None,
        teardowns: list[Teardown] | None,
        error: BaseException | None,
    ) -> None:
        self._body = body
        self._request = request
        self._teardowns = teardowns
        self._error = error

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close_body(self._body)
        finally:
            try:
                if self._teardowns:
                    run_teardowns(self._teardowns, self._error)
            finally:
                if self._request is not None:
                    self._request.close()
