"""How a route hook forwards: a :class:`~workflowhttp.proxy.Proxy` per hook, over HTTP or in
process.

Each hooked request is a proxy transaction like any other (the proxy workflow, its listeners,
``TransactionStarted``/``TransactionEnded``, timeouts, 502/503/504), with the hook's header
rules applied to the outgoing request and ``translateStatus`` to the answer. An external
destination goes through the hooks' one pooled urllib3 client; a local one (``/other/path``)
is answered by the app itself, in process: no socket, and the hooks the request already went
through are remembered so that coming back to one is a 508, never a loop.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_to_bytes

from werkzeug.datastructures import Headers

from ..errors import BadRequest, HTTPError
from ..events import HttpEvent
from ..proxy import Proxy
from ..proxy.events import Outgoing, ProxyEvent, UpstreamResponse
from ..proxy.headers import response_headers
from ..responses import Response
from ..workflow import FILTER_RESPONSE
from .specs import REFERENCE

if TYPE_CHECKING:
    from .extension import Hooks
    from .registry import RouteHook

__all__ = ["CHAIN", "HookProxy", "LoopDetected", "path_below"]

#: The environ key of an in-process request: the resources of the hooks it came through.
CHAIN = "workflowhttp.hooks.chain"
#: The most hooks one request may go through in process.
MAX_CHAIN = 8
# A stand-in upstream for a local destination: the pool is never asked (dispatch answers).
_NOWHERE = "http://127.0.0.1:9"


class LoopDetected(HTTPError):
    """A hooked request came back to a hook it went through (RFC 5842's 508)."""

    status = 508
    message = "Loop Detected"


class HookProxy(Proxy):
    """The proxy of one route hook (made by :class:`~workflowhttp.hooks.Hooks`)."""

    def __init__(self, hook: RouteHook, hooks: Hooks) -> None:
        spec = hook.spec
        super().__init__(
            hook.resource,
            _NOWHERE if hook.local else spec.destination,
            name=f"hook:{hook.resource}",
            timeout=spec.timeout,
            connect_timeout=min(5.0, spec.timeout),
            pool_size=hooks.pool_size,
            max_buffer=hooks.max_buffer,
        )
        self.hook = hook
        self.hooks = hooks
        if hook.local:
            self.dispatch = self._dispatch_local

    def _route(self) -> Any:
        return None  # the hook claims requests in `route`; it declares no routes

    @property
    def client(self) -> Any:
        return self.hooks.client  # one pool for every hook of the worker

    def outgoing_path(self, environ: dict[str, Any]) -> str:
        """The path below the hooked resource (nothing with ``fullUrl``), as received."""
        return "" if self.hook.spec.fullUrl else path_below(environ, self.hook.resource)

    def outgoing(self, event: HttpEvent) -> tuple[Outgoing, dict[str, str]]:
        outgoing, tags = super().outgoing(event)
        rules = self.hook.rules
        if rules:
            apply_header_rules(rules, outgoing.headers, event.environ)
        return outgoing, tags

    def relay(self, event: ProxyEvent) -> Response:
        response = event.response
        if isinstance(response, UpstreamResponse) and self.hook.translate:
            response.status = self.hook.translated(response.status)
        return super().relay(event)

    def _dispatch_local(self, event: ProxyEvent) -> None:
        """Answer the transaction by calling the app in process (``forward``'s stand-in)."""
        http = event.http
        outgoing = event.outgoing
        destination = self.hook.spec.destination.rstrip("/")
        path = destination + outgoing.path if outgoing.path else destination or "/"
        environ = _local_environ(http.environ, outgoing, path, self.hook.resource)
        event.transaction.remote = path
        started = time.perf_counter()
        answer: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            answer[:] = [status, headers]
            return no_write

        body = http.app(environ, start_response)
        event.upstream_seconds = time.perf_counter() - started
        status = int(answer[0][:3]) if answer else 500
        headers = response_headers(Headers(answer[1] if answer else []))
        event.response = UpstreamResponse(status, headers, chunks(body), self.max_buffer)
        event._next = FILTER_RESPONSE


def path_below(environ: dict[str, Any], resource: str) -> str:
    """Return the request's path below the hooked ``resource``, percent-encoded as received
    (``""`` for the resource itself)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    raw_path = str(raw).partition("?")[0] if raw else ""
    if raw_path.startswith(resource) and resource.isascii() and "%" not in resource:
        suffix = raw_path[len(resource) :]
    else:  # the resource was percent-encoded in the request: encode the decoded rest
        path = environ.get("PATH_INFO") or "/"
        decoded = path.encode("latin-1").decode("utf-8", "replace")
        suffix = quote(decoded[len(resource) :], safe="/%:@!$&'()*+,;=-._~")
    return suffix.rstrip("/") if suffix.strip("/") == "" else suffix


def no_write(data: bytes) -> None:  # pragma: no cover - our app never calls write()
    raise RuntimeError("write() is not supported in process")


def chunks(body: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the non-empty chunks of a WSGI body, then close it (however the loop ends)."""
    try:
        for chunk in body:
            if chunk:
                yield chunk
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def _local_environ(
    original: dict[str, Any], outgoing: Outgoing, path: str, resource: str
) -> dict[str, Any]:
    """Return the WSGI environ of the in-process request ``outgoing`` to ``path``."""
    chain = original.get(CHAIN, ())
    environ = {
        key: value
        for key, value in original.items()
        if not key.startswith("HTTP_") and key not in ("CONTENT_TYPE", "CONTENT_LENGTH")
    }
    # Werkzeug's cached Request, the hook claimed, the raw URI: the new request's own.
    for key in ("werkzeug.request", "RAW_URI", "REQUEST_URI", "workflowhttp.hook"):
        environ.pop(key, None)
    raw = path + (f"?{outgoing.query}" if outgoing.query else "")
    environ["REQUEST_METHOD"] = outgoing.method
    environ["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1")
    environ["QUERY_STRING"] = outgoing.query
    environ["RAW_URI"] = environ["REQUEST_URI"] = raw
    environ[CHAIN] = (*chain, resource)
    add_headers(environ, outgoing.headers.items())
    if "HTTP_HOST" in original:  # the app's own host, not the stand-in upstream's
        environ["HTTP_HOST"] = original["HTTP_HOST"]
    body = outgoing.body
    if body is None:
        data = b""
    elif isinstance(body, (bytes, bytearray)):
        data = bytes(body)
    elif isinstance(body, str):
        data = body.encode()
    else:  # the client's body, read as it comes (bounded by the app's limits)
        data = b"".join(body)
    environ["wsgi.input"] = io.BytesIO(data)
    environ.pop("wsgi.input_terminated", None)
    if data or "CONTENT_LENGTH" in environ:
        environ["CONTENT_LENGTH"] = str(len(data))
    return environ


def add_headers(environ: dict[str, Any], headers: Iterable[tuple[str, str]]) -> None:
    """Add ``(name, value)`` headers to a WSGI environ of a request made in process (a
    repeated header's values joined by commas, as a server does)."""
    for name, value in headers:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            key = "HTTP_" + key
            environ[key] = f"{environ[key]},{value}" if key in environ else value


def apply_header_rules(
    rules: tuple[tuple[str, str | None, str], ...], headers: Headers, environ: dict[str, Any]
) -> None:
    """Apply a hook's header rules to the outgoing ``headers`` (see ``HeaderRule``).

    Raises:
        BadRequest: a rule refers to a request header the request does not have.
    """
    for name, value, mode in rules:
        if value is None:
            headers.pop(name, None)
            continue
        if "{" in value:
            value = _expand(value, environ)
        present = name in headers
        if (
            mode == "set"
            or (mode == "complete" and not present)
            or (mode == "override" and present)
        ):
            headers[name] = value


def _expand(template: str, environ: dict[str, Any]) -> str:
    """Replace each ``{name}`` in a rule's value by that request header's value."""

    def value_of(match: Any) -> str:
        name = match.group(1)
        key = name.upper().replace("-", "_")
        found = environ.get(key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key)
        if found is None:
            raise BadRequest(f"a hook's header rule needs the request header {name}")
        # SECURITY: a request header's value is one line (servers unfold none), but make sure.
        return str(found).replace("\r", "").replace("\n", "")

    return REFERENCE.sub(value_of, template)
