"""The proxy workflow's kernel listeners: forwarding, and answering upstream failures.

Like the HTTP kernel's, each is an ordinary listener at priority 100 that acts only when no
listener scheduled anything yet, so a user listener (priority 0) can take over any step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from werkzeug.datastructures import Headers

from ..errors import BadGateway, GatewayTimeout, HTTPError, ServiceUnavailable
from ..responses import JSONResponse
from ..workflow import (
    FILTER_REQUEST,
    FILTER_RESPONSE,
    FORWARD,
    TRANSACTION_ENDED,
    TRANSACTION_STARTED,
    UPSTREAM_ERROR,
)
from .events import ProxyEvent, UpstreamResponse
from .headers import response_headers

if TYPE_CHECKING:
    from .upstreams import Upstream

__all__ = ["KERNEL", "forward"]

logger = logging.getLogger("workflowhttp.proxy")

_CHUNK = 64 * 1024
#: Bodies of a known length up to this are read whole before the response filters run.
SMALL_BODY = 64 * 1024
#: Methods that may be sent twice (RFC 9110 §9.2.2): retried once on the next upstream when
#: their connection failed before anything was sent.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})


def schedule_filter_request(event: ProxyEvent) -> None:
    if event._next is None:
        event._next = FILTER_REQUEST


def schedule_forward(event: ProxyEvent) -> None:
    if event._next is None:
        event._next = FORWARD


def forward(event: ProxyEvent) -> None:
    """Send the outgoing request upstream; its answer goes on to ``filter_response``.

    The upstreams are tried in the pool's order. A refused connection or a connect timeout
    marks that upstream down for ``check_after`` seconds; an idempotent request whose body was
    not started is then retried once on the next upstream, and so is one whose pooled
    connection the upstream had closed. Failures go to ``upstream_error`` as
    :class:`~workflowhttp.BadGateway` (refused, reset, protocol error),
    :class:`~workflowhttp.GatewayTimeout` (connect or read timeout) or
    :class:`~workflowhttp.ServiceUnavailable` (no upstream left to try).
    """
    if event._next is not None:
        return
    proxy = event.proxy
    if proxy.dispatch is not None:  # answered in process (a hook's local destination)
        proxy.dispatch(event)
        return
    outgoing = event.outgoing
    body = outgoing.body
    if isinstance(body, str):
        body = body.encode()
    if isinstance(body, (bytes, bytearray)):  # a listener replaced the body: say its length
        outgoing.headers["Content-Length"] = str(len(body))
    elif body is None:
        outgoing.headers.pop("Content-Length", None)
    tracked = _TrackedBody(body) if body is not None and not isinstance(body, bytes) else None
    retry_allowed = outgoing.method in IDEMPOTENT
    error: HTTPError | None = None
    candidates = list(proxy.pool.candidates())
    index = attempts = 0
    while index < len(candidates) and attempts < 2:
        upstream = candidates[index]
        attempts += 1
        url = upstream.base + outgoing.url
        event.transaction.remote = url
        started = time.perf_counter()
        try:
            raw = proxy.client.urlopen(
                outgoing.method,
                url,
                body=tracked if tracked is not None else body,
                headers=_upstream_headers(outgoing.headers),
                chunked=tracked is not None and outgoing.content_length is None,
                redirect=False,
                retries=False,
                preload_content=False,
                decode_content=False,
                timeout=proxy.timeouts,
                assert_same_host=False,
            )
        except NewConnectionError as ex:  # before ConnectTimeoutError: it subclasses it
            proxy.pool.mark_down(upstream)
            error = BadGateway("Upstream refused the connection")
            _log_failure(upstream, ex)
            index += 1
        except ConnectTimeoutError as ex:
            proxy.pool.mark_down(upstream)
            error = GatewayTimeout("Upstream did not accept the connection in time")
            _log_failure(upstream, ex)
            index += 1
        except ReadTimeoutError as ex:
            proxy.pool.mark_down(upstream)
            error = GatewayTimeout("Upstream did not answer in time")
            _log_failure(upstream, ex)
            break  # the request was sent: never send it twice
        except ProtocolError as ex:  # reset, closed, garbage instead of a status line
            error = BadGateway("Upstream closed the connection or answered garbage")
            _log_failure(upstream, ex)
            # A pooled connection the upstream closed meanwhile fails like this too: the retry
            # goes to the next upstream, or to this one again (on a new connection).
            if index + 1 < len(candidates):
                index += 1
        except urllib3.exceptions.HTTPError as ex:
            error = BadGateway("Upstream request failed")
            _log_failure(upstream, ex)
            break
        else:
            event.upstream_seconds = time.perf_counter() - started
            response = UpstreamResponse(
                raw.status, response_headers(raw.headers), _chunks(raw), proxy.max_buffer
            )
            length = raw.length_remaining
            if length is not None and length <= min(SMALL_BODY, proxy.max_buffer):
                # PERF: a small body of known length is read at once (nginx's proxy buffer):
                # one write to the client, the connection back in the pool before the
                # listeners run, and a failure midway still answerable with a clean 502.
                try:
                    response.preload(raw.read(decode_content=False))
                except ReadTimeoutError as ex:
                    raw.close()
                    raw.release_conn()
                    proxy.pool.mark_down(upstream)
                    error = GatewayTimeout("Upstream did not answer in time")
                    _log_failure(upstream, ex)
                    break
                except (ProtocolError, OSError) as ex:
                    raw.close()
                    raw.release_conn()
                    error = BadGateway("Upstream closed the connection midway")
                    _log_failure(upstream, ex)
                    break
                raw.release_conn()
            else:
                event._raw = raw
            event.response = response
            event._next = FILTER_RESPONSE
            return
        if not retry_allowed or (tracked is not None and tracked.started):
            break
    event.error = error or ServiceUnavailable("No upstream available")
    event._next = UPSTREAM_ERROR


def answer_upstream_error(event: ProxyEvent) -> None:
    """Answer the upstream failure as JSON (502, 503 or 504), like every kernel error."""
    if event._next is None:
        error = event.error
        if not isinstance(error, HTTPError):
            error = BadGateway()
        event.response = JSONResponse(error.to_body(), error.status, error.headers)
        event._next = FILTER_RESPONSE


def schedule_transaction_ended(event: ProxyEvent) -> None:
    if event._next is None:
        event._next = TRANSACTION_ENDED


KERNEL: tuple[tuple[str, int, Any], ...] = (
    (TRANSACTION_STARTED, 100, schedule_filter_request),
    (FILTER_REQUEST, 100, schedule_forward),
    (FORWARD, 100, forward),
    (UPSTREAM_ERROR, 100, answer_upstream_error),
    (FILTER_RESPONSE, 100, schedule_transaction_ended),
)
"""The proxy workflow's kernel listeners, as ``(state, priority, listener)``."""


def _upstream_headers(headers: Headers) -> urllib3.HTTPHeaderDict:
    sent = urllib3.HTTPHeaderDict()
    for name, value in headers.items():
        sent.add(name, value)
    return sent


def _chunks(raw: Any) -> Iterator[bytes]:
    """Yield the upstream's body as it arrives (``read1``: whatever one read returns).

    It holds the urllib3 response only, never the event: the event holds this generator
    (through its response), and a generator holding the event back would be a cycle that
    keeps the whole request alive until the cyclic GC runs.
    """
    read = raw.read1
    try:
        while True:
            chunk = read(_CHUNK, decode_content=False)
            if not chunk:
                break
            yield chunk
    except (ProtocolError, ReadTimeoutError, OSError) as ex:
        # The status line is sent already: the honest signal left is to cut the connection.
        raw.close()
        raw.release_conn()
        raise BadGateway("Upstream body failed midway") from ex
    raw.release_conn()  # read to the end: the connection goes back to the pool


class _TrackedBody:
    """The client's body as sent upstream: remembers whether sending it started."""

    __slots__ = ("source", "started")

    def __init__(self, source: Any) -> None:
        self.source = source
        self.started = False

    def __iter__(self) -> Iterator[bytes]:
        self.started = True
        yield from self.source


def _log_failure(upstream: Upstream, error: BaseException) -> None:
    logger.warning("upstream %s failed: %s", upstream.url, error)
