"""The :class:`Proxy` controller: each request it serves walks the proxy workflow."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

import urllib3

from ..errors import BadRequest, ConfigurationError
from ..events import HttpEvent
from ..extensions import Extension
from ..reading import check_size, content_length, input_terminated
from ..responses import Response
from ..routing import http, join_paths
from ..settings import check_positive_ints, check_positive_numbers
from ..workflow import PROXY_WORKFLOW, walk
from .events import (
    Outgoing,
    ProxyEvent,
    Transaction,
    TransactionEnded,
    TransactionStarted,
    UpstreamResponse,
)
from .headers import request_headers
from .kernel import KERNEL
from .upstreams import LazyClient, Pool

__all__ = ["Proxy"]

_CHUNK = 64 * 1024
MiB = 1024 * 1024


class Proxy(Extension):
    """A reverse proxy: serves every method on ``base_path`` and below it from ``upstream``.

    Each request walks the proxy workflow (``transaction_started → filter_request → forward →
    filter_response → transaction_ended``, ``upstream_error`` when the upstream fails), whose
    listeners are registered like any other: ``app.listen(proxy_workflow.on_filter_request)``.

    Args:
        base_path: Where the proxy is mounted (``"/api"``); the path below it and the query go
            to the upstream unchanged.
        upstream: One upstream URL or several (used round-robin).
        name: The routes' name (default ``proxy`` + the base path); the routes are in the
            group ``proxy``, so auth listeners and middlewares apply as to any route.
        fallback: Upstreams used when every primary one is down.
        timeout: Seconds to wait for the upstream's answer (each read).
        connect_timeout: Seconds to wait for a connection.
        pool_size: Keep-alive connections kept per upstream (shared by a worker's threads).
        check_after: Seconds a failed upstream is skipped before it is tried again.
        preserve_host: Send the client's ``Host`` instead of the upstream's.
        max_buffer: Most bytes a listener may buffer by reading ``event.response.body``
            (beyond: 502).
    """

    def __init__(
        self,
        base_path: str,
        upstream: str | Iterable[str],
        *,
        name: str | None = None,
        fallback: str | Iterable[str] = (),
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        pool_size: int = 32,
        check_after: float = 10.0,
        preserve_host: bool = False,
        max_buffer: int = 10 * MiB,
    ) -> None:
        if not isinstance(base_path, str) or not base_path.startswith("/"):
            raise ConfigurationError(f"proxy base path must start with '/': {base_path!r}")
        check_positive_numbers(
            "proxy", timeout=timeout, connect_timeout=connect_timeout, check_after=check_after
        )
        check_positive_ints("proxy", pool_size=pool_size, max_buffer=max_buffer)
        self.base_path = join_paths(base_path, "")
        self.name = name or f"proxy{self.base_path if self.base_path != '/' else ''}"
        self.pool = Pool(upstream, fallback, check_after)
        self.timeouts = urllib3.Timeout(connect=connect_timeout, read=timeout)
        self.pool_size = pool_size
        self.preserve_host = preserve_host
        self.max_buffer = max_buffer
        self._client = LazyClient(max(4, len(self.pool.upstreams)), pool_size)
        self.kernel = KERNEL
        self.controllers = (self._route(),)

    # -- the extension ----------------------------------------------------------------------

    @property
    def client(self) -> urllib3.PoolManager:
        """The worker's pooled HTTP client, made on first use (after gunicorn's fork)."""
        return self._client.get()

    def stop(self, app: Any) -> None:
        """Close the pooled connections."""
        self._client.clear()

    def _route(self) -> Any:
        proxy = self

        def forward_request(event: HttpEvent, **path: Any) -> Response:
            # The path below the base goes upstream as the client sent it (percent-encoded),
            # not the decoded {path} parameter: **path takes that placeholder.
            return proxy.handle(event)

        forward_request.__qualname__ = f"Proxy({self.base_path!r}).forward_request"
        described = f"proxy to {', '.join(u.url for u in self.pool.primary)}"
        for path in (self.base_path, join_paths(self.base_path, "{path:path}")):
            spec = http.ANY(path).name(self.name).group("proxy").data("proxy", self)
            spec.description(described)(forward_request)
        return forward_request

    # -- one transaction --------------------------------------------------------------------

    #: Set to answer transactions in process instead of over HTTP: called in ``forward`` with
    #: the event, it sets the response (the hooks' local destinations use it).
    dispatch: Any = None

    def handle(self, event: HttpEvent) -> Response:
        """Walk one transaction through the proxy workflow; return the response to send."""
        outgoing, tags = self.outgoing(event)
        transaction = Transaction(self.name, tags)
        proxy_event = ProxyEvent(event, self, transaction, outgoing)
        stream = event.app.stream
        if stream is not None:
            stream.send(
                TransactionStarted(
                    event.request_id,
                    transaction.id,
                    transaction.endpoint,
                    outgoing.method,
                    outgoing.url,
                    transaction.started_at,
                ),
                key=event.request_id,
            )
        try:
            walk(
                proxy_event,
                event.app.workflow_listeners,
                event.app.limits.max_hops,
                workflow=PROXY_WORKFLOW,
            )
            raised = proxy_event.raised
            if raised is not None:
                raise raised
        except BaseException:
            proxy_event.discard_upstream()
            _ended(proxy_event, 0, None, error=True)
            raise
        return self.relay(proxy_event)

    def outgoing(self, event: HttpEvent) -> tuple[Outgoing, dict[str, str]]:
        """Return the request to send upstream for ``event``, and its ``X-Proxy-Tag`` tags."""
        environ = event.environ
        headers, tags = request_headers(
            environ,
            trust_forwarded=event.app.trusts_forwarded,
            preserve_host=self.preserve_host,
        )
        body, length = _request_body(event)
        outgoing = Outgoing(
            environ["REQUEST_METHOD"],
            self.outgoing_path(environ),
            environ.get("QUERY_STRING", ""),
            headers,
            body,
            length,
        )
        return outgoing, tags

    def outgoing_path(self, environ: dict[str, Any]) -> str:
        """Return the path sent upstream: the request's below the base path, as received."""
        return _path_below(environ, self.base_path)

    def relay(self, event: ProxyEvent) -> Response:
        """Return the response the HTTP workflow sends for the finished transaction."""
        return _relay(event)

    def __repr__(self) -> str:
        return f"<Proxy {self.base_path} → {', '.join(u.url for u in self.pool.primary)}>"


def _path_below(environ: dict[str, Any], base: str) -> str:
    """Return the request's path below ``base``, percent-encoded as the client sent it."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        path = str(raw).partition("?")[0]
        if path.startswith(("http://", "https://")):  # an absolute-form request target
            path = "/" + path.split("/", 3)[-1] if path.count("/") >= 3 else "/"
    else:
        path = quote(environ.get("PATH_INFO", "") or "/", safe="/%:@!$&'()*+,;=-._~")
    if base != "/" and path.startswith(base):
        path = path[len(base) :] or "/"
    return path if path.startswith("/") else "/" + path


def _request_body(event: HttpEvent) -> tuple[Any, int | None]:
    """Return the client's body as chunks read while they are sent upstream, and its length."""
    environ = event.environ
    stream = environ["wsgi.input"]
    limit = event.app.limits.max_content_length
    length = content_length(environ, limit)  # the one parser of client numbers
    if length is not None:
        if length == 0:
            return None, 0
        return _read_exactly(stream, length), length
    if input_terminated(environ):
        return _read_to_end(stream, limit), None
    return None, None


def _read_exactly(stream: Any, length: int) -> Iterator[bytes]:
    remaining = length
    while remaining > 0:
        chunk = _read(stream, min(remaining, _CHUNK))
        if not chunk:
            raise BadRequest("Incomplete request body")
        remaining -= len(chunk)
        yield chunk


def _read_to_end(stream: Any, limit: int) -> Iterator[bytes]:
    size = 0
    while True:
        chunk = _read(stream, _CHUNK)
        if not chunk:
            return
        size += len(chunk)
        check_size(size, limit)  # SECURITY: a chunked body is bounded like any other
        yield chunk


def _read(stream: Any, size: int) -> bytes:
    try:
        return stream.read(size)  # type: ignore[no-any-return]
    except Exception:  # the server's reader: a malformed chunk, a client gone
        raise BadRequest("Malformed or incomplete request body") from None


def _relay(event: ProxyEvent) -> Response:
    """Turn the transaction's answer into the response the HTTP workflow sends."""
    response = event.response
    if not isinstance(response, UpstreamResponse):
        _ended(event, _length(response), response)
        return response
    buffered, source, replaced = response.relay()
    headers = response.headers
    if buffered is not None:
        if replaced:
            headers.pop("Content-Length", None)  # the writer counts what a listener left
        _ended(event, len(buffered), response)
        relayed = Response(buffered, response.status, None, None)
    else:
        relayed = Response(_Relay(event, source), response.status, None, None)
    relayed._headers = headers
    relayed._content_type = None
    return relayed


def _length(response: Any) -> int:
    body = getattr(response, "body", b"")
    return len(body) if isinstance(body, (bytes, bytearray)) else 0


class _Relay:
    """The upstream's body on its way to the client: counts bytes, releases the connection,
    and reports the end of the transaction when the server closes it."""

    __slots__ = ("_event", "_source", "_sent")

    def __init__(self, event: ProxyEvent, source: Iterator[bytes] | None) -> None:
        self._event: ProxyEvent | None = event
        self._source = source
        self._sent = 0

    def __iter__(self) -> Iterator[bytes]:
        source = self._source
        if source is None:
            return
        for chunk in source:
            self._sent += len(chunk)
            yield chunk

    def close(self) -> None:
        event = self._event
        if event is None:
            return
        # The HTTP event holds this body (its response's), and this body the transaction's
        # event, which holds the HTTP event: let go, so the request is freed at once.
        self._event = self._source = None
        event.discard_upstream()  # the client left early: the rest is not read
        _ended(event, self._sent, event.response)


def _ended(event: ProxyEvent, sent: int, response: Any, *, error: bool = False) -> None:
    http_event = event.http
    stream = http_event.app.stream
    if stream is None:
        return
    transaction = event.transaction
    failure = event.error if event.error is not None else event.raised
    stream.send(
        TransactionEnded(
            http_event.request_id,
            transaction.id,
            transaction.endpoint,
            None if event.forged else transaction.remote,
            getattr(response, "status", 500) if not error else 500,
            event.upstream_seconds,
            event.forged,
            None if failure is None else f"{type(failure).__name__}: {failure}",
            sent,
            time.time(),
        ),
        key=http_event.request_id,
    )
