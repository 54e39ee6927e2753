"""Reading the request from the WSGI environ: the checks every request passes, and lean readers.

PERF: building a werkzeug ``Request`` costs more than the whole workflow, so the kernel reads
the query string, headers and body straight from the WSGI environ with the readers here;
``event.request`` builds the full object (:mod:`workflowhttp.request`) only when someone asks
for it. Whatever these readers consumed (the body), they leave readable for a ``Request`` built
later.

This module owns what is read from the environ and the limits on it: :func:`request_checks`
(run by the app before every walk), the one parser of ``Content-Length`` and the one check of
a body's size (:func:`content_length`, :func:`check_size`), the one count of query and form
fields against ``max_params`` (:func:`check_params`), the query parser, the bounded body
readers, the guard that makes the server's failures to read a 400 (:class:`ClientInput`), and
the JSON depth scan. It imports :mod:`workflowhttp.errors`, :mod:`workflowhttp.numbers`,
:mod:`workflowhttp.routing.paths` and werkzeug's helpers; never :mod:`workflowhttp.request`
(which imports it), the kernel or the app.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_to_bytes

from werkzeug.exceptions import HTTPException
from werkzeug.sansio.utils import host_is_trusted
from werkzeug.wsgi import get_host

from .errors import (
    BadRequest,
    HTTPError,
    HTTPNotImplemented,
    PayloadTooLarge,
    RequestHeaderFieldsTooLarge,
    URITooLong,
)
from .numbers import parse_int
from .routing.paths import BAD_PERCENT

if TYPE_CHECKING:
    from .events import HttpEvent
    from .limits import Limits

__all__ = [
    "ClientInput",
    "check_json_depth",
    "check_params",
    "check_query_string",
    "check_size",
    "content_length",
    "input_terminated",
    "parse_query",
    "query_of",
    "read_body",
    "read_to_end",
    "request_checks",
]

_CHUNK = 64 * 1024
# The most digits of a Content-Length: far beyond any body, far below Python's 4300-digit limit.
_LENGTH_DIGITS = 32
# A JSON string with its escapes, or an unterminated one to the end of the body. SECURITY: the
# atomic group and possessive quantifiers never give back what they matched, and a string that
# never ends is taken whole, so no quote is ever the start of a second scan of the same bytes.
_JSON_STRING = re.compile(rb'"(?>[^"\\]++|\\.)*+"?', re.DOTALL)
# bytes.translate's arguments for "keep the brackets only, and spell both kinds as [ and ]".
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_ONE_KIND = bytes.maketrans(b"{}", b"[]")
_OPEN = ord("[")


# -- the checks before the walk ----------------------------------------------------------------


def request_checks(
    limits: Limits, trusted_hosts: list[str] | None
) -> Callable[[dict[str, Any]], None]:
    """Compile the checks every request passes before its walk, for one app's settings.

    The returned ``check(environ)`` refuses a malformed or oversized request
    (400/413/414/431/501) or an untrusted host (400). Every request is checked, whether or not
    its controller reads the query or the body: bad input is answered as bad input wherever
    it is.

    SECURITY: this is not a listener. ``App.__call__`` calls it before the walk starts, so no
    listener can switch it off (by scheduling ``route`` itself, answering with ``send()`` or
    stopping propagation in ``request``), and a refused request reaches no user code at all:
    no listener of any state, no middleware, no controller. It is answered like a request the
    server refuses itself, with its status and the kernel's short JSON body.

    PERF: a closure over the limits, so a request pays no attribute lookups for them.

    Raises (from ``check``):
        HTTPError: the status to answer with.
    """
    max_headers = limits.max_headers
    max_content_length = limits.max_content_length
    max_params = limits.max_params
    max_query_length = limits.max_query_length

    def check(environ: dict[str, Any]) -> None:
        # PERF: the environ holds the headers plus a few CGI keys; only a large one is counted.
        if len(environ) > max_headers and _header_count(environ) > max_headers:
            raise RequestHeaderFieldsTooLarge(f"More than {max_headers} headers")
        # SECURITY: RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400 (gunicorn passes
        # it on). HTTP/1.0 has no Host requirement.
        if "HTTP_HOST" not in environ and environ.get("SERVER_PROTOCOL") == "HTTP/1.1":
            raise BadRequest("Missing Host header")
        codings = environ.get("HTTP_TRANSFER_ENCODING")
        if codings:
            _check_transfer_codings(codings, environ)
        if environ.get("CONTENT_LENGTH"):
            content_length(environ, max_content_length)
        query_string = environ.get("QUERY_STRING")
        if query_string:
            check_query_string(query_string, max_params, max_query_length)
        # SECURITY: a Host (or trusted X-Forwarded-Host) outside the list is refused, so URLs
        # the app builds never point elsewhere. Host names are case-insensitive.
        if trusted_hosts is not None:
            host = get_host(environ)
            if not host_is_trusted(host.lower(), trusted_hosts):
                raise BadRequest(f"Host {host!r} is not trusted.")

    return check


def _header_count(environ: dict[str, Any]) -> int:
    count = sum(1 for key in environ if key.startswith("HTTP_"))
    return count + ("CONTENT_TYPE" in environ) + ("CONTENT_LENGTH" in environ)


def _check_transfer_codings(header: str, environ: dict[str, Any]) -> None:
    """Accept a body framed by ``chunked`` alone: the one coding WSGI servers decode.

    SECURITY: RFC 9112 §6.3: when ``chunked`` is not the last coding (or comes twice), the
    body's length cannot be determined: 400. A server hands the app the decoded chunks but
    leaves any coding before them (``gzip, chunked``: gunicorn passes it on) to the app, which
    would read the compressed bytes as if they were the body: 501 (a server that decodes a
    coding drops it from the header). ``Transfer-Encoding`` with ``Content-Length`` is the
    ambiguity request smuggling lives on: 400.
    """
    codings = [coding.strip(" \t").lower() for coding in header.split(",")]
    codings = [coding for coding in codings if coding]  # empty list elements are ignored
    if not codings:
        return
    if codings[-1] != "chunked" or codings.count("chunked") > 1:
        raise BadRequest(f"Transfer-Encoding {header[:64]!r}: chunked must come last, once")
    if len(codings) > 1:
        raise HTTPNotImplemented(f"Transfer-Encoding {header[:64]!r} is not supported")
    if environ.get("CONTENT_LENGTH"):
        raise BadRequest("Both Transfer-Encoding and Content-Length")


def content_length(environ: dict[str, Any], limit: int) -> int | None:
    """Return the request's ``Content-Length``, or ``None`` when it has none.

    Raises:
        BadRequest: a malformed value (only ASCII digits are a length).
        PayloadTooLarge: more than ``limit`` bytes announced; nothing is read.
    """
    header = environ.get("CONTENT_LENGTH")
    if not header:
        return None
    try:
        # SECURITY: ASCII digits only (str.isdigit() accepts "²", which int() then refuses),
        # and at most _LENGTH_DIGITS of them: thousands would hit Python's int-string limit.
        length = parse_int(header.strip(" \t"), signed=False, max_digits=_LENGTH_DIGITS)
    except ValueError:
        raise BadRequest("Invalid Content-Length") from None
    check_size(length, limit)
    return length


def check_size(size: int, limit: int, what: str = "Request body") -> None:
    """Refuse a body (or a form) of ``size`` bytes, announced or read so far, past ``limit``.

    Raises:
        PayloadTooLarge: ``size`` is more than ``limit``.
    """
    if size > limit:
        raise PayloadTooLarge(f"{what} larger than {limit} bytes")


def check_query_string(query_string: str, max_params: int, max_length: int = 0) -> str:
    """Return the raw WSGI ``QUERY_STRING`` as text, refusing a malformed one.

    Every request's query string is checked, used or not: invalid input is a 400 wherever it
    is, not only where a controller happens to read it.

    Raises:
        BadRequest: invalid UTF-8 or percent-encoding, or more than ``max_params`` fields.
        URITooLong: longer than ``max_length`` (when given).
    """
    if max_length and len(query_string) > max_length:
        raise URITooLong(f"Query string longer than {max_length} bytes")
    if not query_string.isascii():
        try:
            query_string = query_string.encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise BadRequest("Invalid query string encoding") from None
    if "%" in query_string:
        if BAD_PERCENT.search(query_string):
            raise BadRequest("Invalid percent-encoding in query string")
        try:
            unquote_to_bytes(query_string).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("Invalid query string encoding") from None
    check_params(query_string, max_params)
    return query_string


def check_params(query_string: str, max_params: int, form_fields: int = 0) -> None:
    """Refuse more than ``max_params`` fields: the query's and the form's, counted together.

    The query's fields are counted as ``parse_qsl``'s ``max_num_fields`` counts them (one more
    than its ``&``), without parsing it.

    Raises:
        BadRequest: more than ``max_params`` fields.
    """
    fields = query_string.count("&") + 1 if query_string else 0
    if fields + form_fields > max_params:
        raise BadRequest(f"Too many parameters (at most {max_params})")


# -- the lean readers --------------------------------------------------------------------------


def parse_query(query_string: str, max_params: int) -> dict[str, list[str]]:
    """Parse a raw WSGI ``QUERY_STRING`` into ``name → [values]``.

    PERF: every request's query string passed :func:`check_query_string` before the walk
    (the request checks), so it is not scanned again here; what a listener may have put in
    the environ since is still refused cleanly.

    Raises:
        BadRequest: invalid UTF-8 or more than ``max_params`` fields.
    """
    if not query_string:
        return {}
    if not query_string.isascii():
        try:
            query_string = query_string.encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise BadRequest("Invalid query string encoding") from None
    check_params(query_string, max_params)  # an environ a listener changed
    try:
        pairs = parse_qsl(query_string, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("Invalid query string encoding") from None
    query: dict[str, list[str]] = {}
    for name, value in pairs:
        values = query.get(name)
        if values is None:
            query[name] = [value]
        else:
            values.append(value)
    return query


def query_of(event: HttpEvent) -> dict[str, list[str]]:
    """Return the event's parsed query, parsing it once."""
    query = event._query
    if query is None:
        query = event._query = parse_query(
            event.environ.get("QUERY_STRING", ""), event.app.limits.max_params
        )
    return query


class ClientInput:
    """The server's input stream, whose failures to read are the client's (400).

    SECURITY: a malformed chunked body or a client gone mid-body makes the server's reader
    raise its own exception types (gunicorn's ``InvalidChunkSize`` and ``NoMoreData``, the
    werkzeug dev server's ``ValueError``/``OSError``, a socket's ``ConnectionResetError`` or
    timeout): that is bad input, answered 400. Only what the server's ``read`` raises is turned
    into a 400; a failure of the app's own work with the data (no space left for a file upload's
    spool file, a parser bug) stays an error of the app: a logged 500.
    """

    __slots__ = ("_stream",)

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, *args: Any) -> bytes:
        return _client_read(self._stream.read, args)  # type: ignore[no-any-return]

    def readline(self, *args: Any) -> bytes:
        return _client_read(self._stream.readline, args)  # type: ignore[no-any-return]

    def readlines(self, *args: Any) -> list[bytes]:
        return _client_read(self._stream.readlines, args)  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def __getattr__(self, name: str) -> Any:  # close(), seekable(), ...: the stream's own
        return getattr(self._stream, name)


def _client_read(method: Any, args: tuple[Any, ...]) -> Any:
    """Call one of the server stream's read methods; what it raises is the client's: 400."""
    try:
        return method(*args)
    except (HTTPError, HTTPException):
        raise
    except Exception as ex:
        raise _unreadable() from ex


def _unreadable() -> BadRequest:
    return BadRequest("Malformed or incomplete request body")


def read_body(event: HttpEvent) -> bytes:
    """Read the request body, bounded by ``max_content_length``, and leave it re-readable.

    Raises:
        BadRequest: a malformed ``Content-Length``, or a body shorter than it.
        PayloadTooLarge: a body larger than ``max_content_length``.
    """
    if event._request is not None:
        return bytes(event._request.get_data(cache=True))
    environ = event.environ
    limit = event.app.limits.max_content_length
    stream = ClientInput(environ["wsgi.input"])
    length = content_length(environ, limit)
    if length is not None:
        body = _read_exactly(stream, length)
        if len(body) < length:
            raise BadRequest("Incomplete request body")
    elif input_terminated(environ):
        body = read_to_end(stream, limit)
    else:
        body = b""
    # Leave the body readable for a werkzeug Request built later in the request.
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def input_terminated(environ: dict[str, Any]) -> bool:
    """Return whether a body without ``Content-Length`` is read until the input ends.

    It is when it is chunked (the server decodes the chunks) or the server says its input
    ends with the body (``wsgi.input_terminated``); otherwise there is no body to read.
    """
    return "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() or bool(
        environ.get("wsgi.input_terminated")
    )


def _read_exactly(stream: Any, length: int) -> bytes:
    chunks = []
    remaining = length
    while remaining > 0:
        chunk = stream.read(min(remaining, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_to_end(stream: Any, limit: int, what: str = "Request body") -> bytes:
    """Return what is left of ``stream``, refusing more than ``limit`` bytes of it.

    Raises:
        PayloadTooLarge: more than ``limit`` bytes; reading stops one chunk past the limit.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(_CHUNK, limit - size + 1))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        check_size(size, limit, what)  # SECURITY: stop reading a chunked body past the limit
        chunks.append(chunk)


def check_json_depth(body: bytes, limit: int) -> None:
    """Raise ``BadRequest`` when ``body`` nests arrays/objects deeper than ``limit``.

    msgspec bounds its own recursion (by Python's recursion limit, about a thousand levels);
    this enforces the app's much lower ``max_json_depth`` before decoding.

    SECURITY: one pass over the body whatever its shape: the strings are cut out by a regex
    that cannot backtrack (an unterminated string ends the scan), then a loop runs over the
    brackets left. The old token regex rescanned an unterminated string of ``\\"`` pairs from
    every quote: quadratic, an hour of CPU for a 1 MiB body.

    PERF: a body cannot be deeper than its number of opening brackets, which ``bytes.count``
    finds at C speed; only suspicious bodies are scanned, and the work the scan leaves to Python
    is one step per bracket outside the strings.
    """
    if len(body) <= limit or body.count(b"[") + body.count(b"{") <= limit:
        return
    brackets = _JSON_STRING.sub(b"", body).translate(_ONE_KIND, _NOT_BRACKETS)
    if brackets.count(b"[") <= limit:  # the others were inside strings
        return
    depth = 0
    for byte in brackets:
        if byte == _OPEN:
            depth += 1
            if depth > limit:
                raise BadRequest(f"JSON nested deeper than {limit} levels")
        else:
            depth -= 1
