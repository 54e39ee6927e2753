"""The proxy's event: one transaction's journey through the proxy workflow, and its parts.

A :class:`ProxyEvent` is to a transaction what :class:`~workflowhttp.HttpEvent` is to a
request: it travels through ``transaction_started → filter_request → forward →
filter_response → transaction_ended`` (``upstream_error`` when the upstream fails), and the
listeners of each state read and change it.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from werkzeug.datastructures import Headers
from werkzeug.wrappers import Response as WerkzeugResponse

from ..errors import BadGateway, ConfigurationError, IllegalTransition
from ..events import returned_error
from ..responses import Response, render
from ..stream.events import StreamEvent
from ..workflow import (
    FILTER_REQUEST,
    FILTER_RESPONSE,
    PROXY_ALLOWED,
    TRANSACTION_ENDED,
    TRANSACTION_STARTED,
)

if TYPE_CHECKING:
    from ..events import HttpEvent
    from .controller import Proxy

__all__ = [
    "Outgoing",
    "ProxyEvent",
    "Transaction",
    "TransactionEnded",
    "TransactionStarted",
    "UpstreamResponse",
]

_sequence = itertools.count()
_process = f"{os.getpid() & 0xFFFF:04x}"


def _after_fork() -> None:  # a forked worker gets ids of its own
    global _process, _sequence
    _process = f"{os.getpid() & 0xFFFF:04x}"
    _sequence = itertools.count()


os.register_at_fork(after_in_child=_after_fork)


class Transaction:
    """What identifies one proxied exchange.

    Attributes:
        id: Unique, and sortable by creation time.
        endpoint: The proxy's name.
        remote: The upstream URL chosen (``None`` until ``forward`` picks one, or when forged).
        started_at: Wall-clock start (``time.time()``).
        tags: Values of the ``X-Proxy-Tag-<name>`` request headers, by lower-case name (those
            headers are not forwarded).
    """

    __slots__ = ("endpoint", "remote", "started_at", "tags", "_started", "_number", "_id")

    def __init__(self, endpoint: str, tags: dict[str, str]) -> None:
        # PERF: the id is formatted when someone reads it (the stream does); the number that
        # makes it unique is taken now.
        self._number = next(_sequence)
        self._id: str | None = None
        self.endpoint = endpoint
        self.remote: str | None = None
        self.started_at = time.time()
        self.tags = tags
        self._started = time.perf_counter()

    @property
    def id(self) -> str:
        """Unique, and sortable by creation time: ``<µs since epoch, hex>-<pid>-<n>``."""
        made = self._id
        if made is None:
            micros = int(self.started_at * 1_000_000)
            made = self._id = f"{micros:013x}-{_process}-{self._number:x}"
        return made

    @property
    def elapsed(self) -> float:
        """Seconds since the transaction started."""
        return time.perf_counter() - self._started

    def __repr__(self) -> str:
        return f"<Transaction {self.id} {self.endpoint} → {self.remote}>"


class Outgoing:
    """The request the proxy is about to send upstream; listeners may change every field.

    Attributes:
        method: The request method.
        path: The path sent upstream (percent-encoded, as received below the base path).
        query: The raw query string (without ``?``), as received.
        headers: Case-insensitive, mutable; hop-by-hop headers are already removed.
        body: An iterable of ``bytes`` chunks read from the client as they are sent, ``bytes``
            (set it to replace the body), or ``None`` for no body.
    """

    __slots__ = ("method", "path", "query", "headers", "body", "content_length")

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: Headers,
        body: Any,
        content_length: int | None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.content_length = content_length

    @property
    def url(self) -> str:
        """The path and query, as sent to the upstream (the upstream's base not included)."""
        return f"{self.path}?{self.query}" if self.query else self.path


# The slot of Response.body, which UpstreamResponse.body (a property) stands in front of.
_BODY: Any = Response.__dict__["body"]


class UpstreamResponse(Response):
    """The upstream's answer: status, mutable headers, and a body streamed to the client.

    Reading :attr:`body` buffers the rest of the upstream's body (at most the proxy's
    ``max_buffer`` bytes: beyond it, :class:`~workflowhttp.BadGateway`); assigning it replaces
    the body. Left alone, the body goes to the client chunk by chunk as the upstream sends it.
    """

    __slots__ = ("_source", "_max_buffer", "_buffered", "_replaced")

    def __init__(
        self, status: int, headers: Headers, source: Iterator[bytes], max_buffer: int
    ) -> None:
        super().__init__(b"", status, None, None)
        self._headers = headers
        self._content_type = None
        self._source: Iterator[bytes] | None = source
        self._max_buffer = max_buffer
        self._buffered = False
        self._replaced = False  # a listener assigned the body: its length is counted anew

    @property
    def body(self) -> bytes:
        """The whole body, buffered on first access (up to ``max_buffer`` bytes)."""
        if not self._buffered:
            chunks: list[bytes] = []
            size = 0
            source = self._source
            if source is not None:
                for chunk in source:
                    size += len(chunk)
                    if size > self._max_buffer:
                        raise BadGateway(f"Upstream body larger than {self._max_buffer} bytes")
                    chunks.append(chunk)
            _BODY.__set__(self, b"".join(chunks))
            self._buffered = True
        return bytes(_BODY.__get__(self))

    @body.setter
    def body(self, value: Any) -> None:
        _BODY.__set__(self, value.encode() if isinstance(value, str) else bytes(value))
        self._buffered = True
        self._replaced = True

    def preload(self, body: bytes) -> None:
        """Hold the upstream's whole (small) body, read already."""
        _BODY.__set__(self, body)
        self._source = None
        self._buffered = True

    def relay(self) -> tuple[bytes | None, Iterator[bytes] | None, bool]:
        """Return ``(buffered body, None, replaced)`` once buffered, else ``(None, the chunk
        stream, False)``."""
        if self._buffered:
            return bytes(_BODY.__get__(self)), None, self._replaced
        return None, self._source, False


class ProxyEvent:
    """One transaction's journey through the proxy workflow.

    Attributes:
        http: The incoming request's :class:`~workflowhttp.HttpEvent`.
        proxy: The :class:`~workflowhttp.proxy.Proxy` serving it.
        transaction: The :class:`Transaction`.
        outgoing: The :class:`Outgoing` request.
        response: The upstream's :class:`UpstreamResponse`, or the forged/error response.
        error: The upstream failure (a 502/503/504 ``HTTPError``) in ``upstream_error``, or
            the exception a listener raised (see :attr:`raised`).
        upstream_seconds: Seconds until the upstream's status and headers arrived.
        forged: Whether a listener answered instead of the upstream.
        state: The current state's name.
    """

    __slots__ = (
        "http",
        "proxy",
        "transaction",
        "outgoing",
        "response",
        "error",
        "error_state",
        "forged",
        "upstream_seconds",
        "state",
        "_next",
        "_stopped",
        "_raw",
    )

    def __init__(
        self, http: HttpEvent, proxy: Proxy, transaction: Transaction, outgoing: Outgoing
    ) -> None:
        self.http = http
        self.proxy = proxy
        self.transaction = transaction
        self.outgoing = outgoing
        self.response: Response | Any = None
        self.error: BaseException | None = None
        self.error_state: str | None = None
        self.forged = False
        self.upstream_seconds: float | None = None
        self.state = TRANSACTION_STARTED
        self._next: str | None = None
        self._stopped = False
        self._raw: Any = None  # the urllib3 response, released when its body is done

    @property
    def raised(self) -> BaseException | None:
        """The exception a listener raised (the transaction then ended early), or ``None``."""
        return self.error if self.error_state is not None else None

    def next(self, state: str) -> None:
        """Schedule ``state``; the last valid call within a state wins.

        Raises:
            IllegalTransition: the proxy workflow has no edge from the current state there.
        """
        allowed = PROXY_ALLOWED[self.state]
        if state not in allowed:
            raise IllegalTransition(self.state, state, allowed)
        self._next = state

    def has_next(self) -> bool:
        """Return whether a next state is scheduled."""
        return self._next is not None

    def send(self, result: Any, status: int | None = None) -> None:
        """Answer with ``result`` (rendered like a controller's return value).

        In ``transaction_started`` and ``filter_request`` this forges the answer: ``forward``
        is skipped, ``filter_response`` and ``transaction_ended`` still run. In ``forward`` and
        ``upstream_error`` it replaces the answer and moves to ``filter_response``; in
        ``filter_response`` it replaces the answer and moves on to ``transaction_ended``.

        Raises:
            IllegalTransition: in ``transaction_ended``, where the answer is final.
        """
        state = self.state
        target = TRANSACTION_ENDED if state == FILTER_RESPONSE else FILTER_RESPONSE
        if state == TRANSACTION_ENDED:
            raise IllegalTransition(state, FILTER_RESPONSE, PROXY_ALLOWED[state])
        response = render(result, status)
        if state in (TRANSACTION_STARTED, FILTER_REQUEST):
            self.forged = True
        else:  # an upstream answer is replaced: its connection is not read any further
            self.discard_upstream()
        self.response = response
        self.next(target)

    def stop_propagation(self) -> None:
        """Skip the remaining listeners of the current state; a scheduled move still happens."""
        self._stopped = True

    def returned(self, listener: Any, value: Any) -> None:
        """A returned response is sent as :meth:`send` would; anything else is an error.

        Raises:
            ConfigurationError: ``value`` is not a response.
        """
        if isinstance(value, (Response, WerkzeugResponse)):
            self.send(value)
            return
        raise ConfigurationError(returned_error(listener, value))

    def discard_upstream(self) -> None:
        """Release the upstream's connection without reading the rest of its body (nothing
        happens when the body was read to the end: its connection is back in the pool)."""
        raw = self._raw
        if raw is not None:
            self._raw = None
            if raw.connection is not None:  # a half-read connection cannot be reused
                raw.close()
                raw.release_conn()

    def __repr__(self) -> str:
        return f"<ProxyEvent {self.outgoing.method} {self.outgoing.url!r} in {self.state!r}>"


class TransactionStarted(StreamEvent, frozen=True):
    """A proxied transaction started (sent with the request's id as key)."""

    request_id: str | None
    transaction_id: str
    endpoint: str
    method: str
    path: str
    time: float


class TransactionEnded(StreamEvent, frozen=True):
    """A proxied transaction ended, once its body was sent (or failed)."""

    request_id: str | None
    transaction_id: str
    endpoint: str
    remote: str | None
    """The upstream URL called; ``None`` when forged or when none was available."""
    status: int
    upstream_seconds: float | None
    """Seconds until the upstream's headers arrived; ``None`` when it was not called."""
    forged: bool
    error: str | None
    bytes: int
    """Body bytes sent to the client."""
    time: float
