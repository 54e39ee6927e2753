"""The request: werkzeug's ``Request`` with the app's limits, and the lean readers the kernel uses.

PERF: building a werkzeug ``Request`` costs more than the whole workflow, so the kernel reads
the query string, headers and body straight from the WSGI environ; ``event.request`` builds the
full object only when someone asks for it. Whatever the lean readers consumed (the body), they
leave readable for a ``Request`` built later.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, unquote_to_bytes

from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException
from werkzeug.formparser import FormDataParser, MultiPartParser
from werkzeug.sansio.multipart import File
from werkzeug.utils import cached_property
from werkzeug.wrappers import Request as _WerkzeugRequest

from .errors import BadRequest, HTTPError, PayloadTooLarge, URITooLong
from .numbers import parse_int
from .routing.paths import BAD_PERCENT

if TYPE_CHECKING:
    from .events import HttpEvent
    from .limits import Limits

__all__ = ["Request"]

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


class _ClientInput:
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
        try:
            return self._stream.read(*args)  # type: ignore[no-any-return]
        except (HTTPError, HTTPException):
            raise
        except Exception as ex:
            raise _unreadable() from ex

    def readline(self, *args: Any) -> bytes:
        try:
            return self._stream.readline(*args)  # type: ignore[no-any-return]
        except (HTTPError, HTTPException):
            raise
        except Exception as ex:
            raise _unreadable() from ex

    def readlines(self, *args: Any) -> list[bytes]:
        try:
            return self._stream.readlines(*args)  # type: ignore[no-any-return]
        except (HTTPError, HTTPException):
            raise
        except Exception as ex:
            raise _unreadable() from ex

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def __getattr__(self, name: str) -> Any:  # close(), seekable(), ...: the stream's own
        return getattr(self._stream, name)


def _unreadable() -> BadRequest:
    return BadRequest("Malformed or incomplete request body")


class _CountingMultiPartParser(MultiPartParser):
    """werkzeug's multipart parser, refusing more parts or files than the app allows (400).

    SECURITY: parts are counted as werkzeug decodes them, so an oversized form is refused
    after at most one part more than the limit, not after reading the whole body.
    """

    def __init__(self, *args: Any, max_parts: int, max_files: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_parts = max_parts
        self._max_files = max_files
        self._parts = 0
        self._files = 0
        self._streams: list[Any] = []

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().parse(*args, **kwargs)
        except BaseException:
            for stream in self._streams:  # the files werkzeug opened before giving up
                stream.close()
            raise

    def _count_part(self) -> None:
        self._parts += 1
        if self._parts > self._max_parts:
            raise BadRequest(f"Too many form parts (at most {self._max_parts})")

    def get_part_charset(self, headers: Headers) -> str:
        self._count_part()  # called once per completed field part
        return super().get_part_charset(headers)

    def start_file_streaming(self, event: File, total_content_length: int | None) -> Any:
        self._count_part()
        self._files += 1
        if self._files > self._max_files:
            raise BadRequest(f"Too many files (at most {self._max_files})")
        stream = super().start_file_streaming(event, total_content_length)
        self._streams.append(stream)
        return stream


class _FormDataParser(FormDataParser):
    max_form_files = 100

    def _parse_urlencoded(
        self, stream: Any, mimetype: str, content_length: int | None, options: dict[str, str]
    ) -> Any:
        # SECURITY: an urlencoded form is held in memory whole, so max_form_memory_size bounds
        # the whole body (413). werkzeug checks that only against a Content-Length; a chunked
        # body (no Content-Length) was read to max_content_length whatever its size.
        limit = self.max_form_memory_size
        if limit is not None:
            if content_length is not None and content_length > limit:
                raise PayloadTooLarge(f"Form data larger than {limit} bytes")
            data = _read_to_end(stream, limit, "Form data")
            stream, content_length = io.BytesIO(data), len(data)
        return super()._parse_urlencoded(stream, mimetype, content_length, options)

    def _parse_multipart(
        self, stream: Any, mimetype: str, content_length: int | None, options: dict[str, str]
    ) -> Any:
        max_parts = self.max_form_parts or 1000
        parser = _CountingMultiPartParser(
            stream_factory=self.stream_factory,
            max_form_memory_size=self.max_form_memory_size,
            # werkzeug's own bound (413) stays as a backstop one part behind ours (400).
            max_form_parts=max_parts + 1,
            cls=self.cls,
            max_parts=max_parts,
            max_files=self.max_form_files,
        )
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")
        form, files = parser.parse(stream, boundary, content_length)
        return stream, form, files


class Request(_WerkzeugRequest):
    """werkzeug's request with the app's :class:`~workflowhttp.Limits` applied.

    Each app makes a subclass whose class attributes carry its limits, so parsing forms and
    multipart bodies is bounded the same way as the lean readers.
    """

    form_data_parser_class = _FormDataParser
    max_params: int = 1000

    @classmethod
    def with_limits(cls, limits: Limits) -> type[Request]:
        """Return a subclass bounded by ``limits``."""
        parser = type(
            "_FormDataParser", (_FormDataParser,), {"max_form_files": limits.max_form_files}
        )
        return type(
            cls.__name__,
            (cls,),
            {
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "form_data_parser_class": parser,
                "max_content_length": limits.max_content_length,
                "max_form_memory_size": limits.max_form_memory_size,
                "max_form_parts": limits.max_form_parts,
                "max_params": limits.max_params,
            },
        )

    @cached_property
    def stream(self) -> IO[bytes]:
        """werkzeug's guarded input stream; what the server fails to read is a 400."""
        return cast(IO[bytes], _ClientInput(_WERKZEUG_STREAM(self)))

    def _load_form_data(self) -> None:
        super()._load_form_data()
        # SECURITY: werkzeug bounds the body's size; this bounds the fields the app is handed,
        # the query's and the form's together (8 + 8 fields do not pass a limit of 10).
        fields = sum(len(values) for _, values in self.form.lists())
        fields += query_field_count(self.environ.get("QUERY_STRING", ""))
        if fields > self.max_params:
            raise BadRequest(f"Too many parameters (at most {self.max_params})")


# werkzeug's own (uncached) getter of Request.stream, which Request.stream wraps.
_WERKZEUG_STREAM: Any = vars(_WerkzeugRequest)["stream"].fget


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
    if length > limit:
        raise PayloadTooLarge(f"Request body larger than {limit} bytes")
    return length


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
    if query_field_count(query_string) > max_params:
        raise BadRequest(f"Too many parameters (at most {max_params})")
    return query_string


def query_field_count(query_string: str) -> int:
    """Return how many fields ``query_string`` has, counted as ``parse_qsl``'s
    ``max_num_fields`` counts them (one more than its ``&``), without parsing it."""
    return query_string.count("&") + 1 if query_string else 0


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
    if query_field_count(query_string) > max_params:  # an environ a listener changed
        raise BadRequest(f"Too many parameters (at most {max_params})")
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
    stream = _ClientInput(environ["wsgi.input"])
    length = content_length(environ, limit)
    if length is not None:
        body = _read_exactly(stream, length)
        if len(body) < length:
            raise BadRequest("Incomplete request body")
    elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() or environ.get(
        "wsgi.input_terminated"
    ):
        body = _read_to_end(stream, limit)
    else:
        body = b""
    # Leave the body readable for a werkzeug Request built later in the request.
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


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


def _read_to_end(stream: Any, limit: int, what: str = "Request body") -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(_CHUNK, limit - size + 1))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:  # SECURITY: stop reading a chunked body past the limit
            raise PayloadTooLarge(f"{what} larger than {limit} bytes")
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
