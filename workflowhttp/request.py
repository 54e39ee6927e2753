"""The request: werkzeug's ``Request`` with the app's limits, and the lean readers the kernel uses.

PERF: building a werkzeug ``Request`` costs more than the whole workflow, so the kernel reads
the query string, headers and body straight from the WSGI environ; ``event.request`` builds the
full object only when someone asks for it. Whatever the lean readers consumed (the body), they
leave readable for a ``Request`` built later.
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from werkzeug.wrappers import Request as _WerkzeugRequest

from .errors import BadRequest, PayloadTooLarge
from .routing import _BAD_PERCENT

if TYPE_CHECKING:
    from .events import HttpEvent
    from .limits import Limits

__all__ = ["Request"]

_CHUNK = 64 * 1024
# A JSON string (with escapes) or one bracket: what the depth scan needs to see.
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class Request(_WerkzeugRequest):
    """werkzeug's request with the app's :class:`~workflowhttp.Limits` applied.

    Each app makes a subclass whose class attributes carry its limits, so parsing forms and
    multipart bodies is bounded the same way as the lean readers.
    """

    max_form_files: int = 100
    max_params: int = 1000

    @classmethod
    def with_limits(cls, limits: Limits) -> type[Request]:
        """Return a subclass bounded by ``limits``."""
        return type(
            cls.__name__,
            (cls,),
            {
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "max_content_length": limits.max_content_length,
                "max_form_memory_size": limits.max_form_memory_size,
                "max_form_parts": limits.max_form_parts,
                "max_form_files": limits.max_form_files,
                "max_params": limits.max_params,
            },
        )

    def _load_form_data(self) -> None:
        super()._load_form_data()
        # SECURITY: werkzeug bounds parts and memory; these bound what the app is handed.
        if len(self.files) > self.max_form_files:
            raise BadRequest(f"Too many files (at most {self.max_form_files})")
        if len(self.form) > self.max_params:
            raise BadRequest(f"Too many parameters (at most {self.max_params})")


def parse_query(query_string: str, max_params: int) -> dict[str, list[str]]:
    """Parse a raw WSGI ``QUERY_STRING`` into ``name → [values]``.

    Raises:
        BadRequest: invalid UTF-8 or percent-encoding, or more than ``max_params`` fields.
    """
    if not query_string:
        return {}
    if not query_string.isascii():
        try:
            query_string = query_string.encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise BadRequest("Invalid query string encoding") from None
    if "%" in query_string and _BAD_PERCENT.search(query_string):
        raise BadRequest("Invalid percent-encoding in query string")
    try:
        pairs = parse_qsl(
            query_string, keep_blank_values=True, errors="strict", max_num_fields=max_params
        )
    except UnicodeError:
        raise BadRequest("Invalid query string encoding") from None
    except ValueError:
        raise BadRequest(f"Too many parameters (at most {max_params})") from None
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
        return event._request.get_data(cache=True)
    environ = event.environ
    limit = event.app.limits.max_content_length
    stream = environ["wsgi.input"]
    length_header = environ.get("CONTENT_LENGTH")
    if length_header:
        length_header = length_header.strip()
        if not (length_header.isascii() and length_header.isdigit()):
            raise BadRequest("Invalid Content-Length")
        length = int(length_header)
        if length > limit:
            raise PayloadTooLarge(f"Request body larger than {limit} bytes")
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


def _read_to_end(stream: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:  # SECURITY: stop reading a chunked body past the limit
            raise PayloadTooLarge(f"Request body larger than {limit} bytes")
        chunks.append(chunk)


def check_json_depth(body: bytes, limit: int) -> None:
    """Raise ``BadRequest`` when ``body`` nests arrays/objects deeper than ``limit``.

    PERF: a body cannot be deeper than its number of opening brackets, which ``bytes.count``
    finds at C speed; only suspicious bodies are scanned token by token.
    """
    if len(body) <= limit or body.count(b"[") + body.count(b"{") <= limit:
        return
    depth = 0
    for token in _JSON_TOKENS.findall(body):
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise BadRequest(f"JSON nested deeper than {limit} levels")
        elif token in (b"]", b"}"):
            depth -= 1
