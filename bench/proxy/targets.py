"""The two gunicorn-served contenders of the proxy benchmark: ``bench.proxy.targets:<name>``.

- ``forward`` is the floor of any Python proxy: a bare WSGI function that makes one call to a
  module-level ``urllib3.PoolManager`` and streams the upstream's body back in 64 KiB chunks.
- ``workflowhttp_proxy`` is ``App(controllers=[Proxy("/", [upstream], name="bench")])``
  (DESIGN.md section 7), built lazily (PEP 562 module ``__getattr__``) in the worker, so that
  importing this module never needs ``workflowhttp.proxy``.

Both read the upstream's base URL (``http://127.0.0.1:PORT``, no trailing slash) from the
environment variable ``BENCH_PROXY_UPSTREAM``, which the bench sets for gunicorn.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from urllib.parse import quote
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import urllib3

#: Where the bench's gunicorn finds the upstream's base URL.
UPSTREAM_VARIABLE = "BENCH_PROXY_UPSTREAM"
UPSTREAM = os.environ.get(UPSTREAM_VARIABLE, "http://127.0.0.1:9").rstrip("/")
#: Bytes per chunk streamed back to the client.
CHUNK = 65536

#: Headers that describe one connection, not the message (RFC 9110 section 7.6.1).
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: ``HTTP_*`` environ keys not forwarded: the hop-by-hop ones, and Host (the upstream's own).
_SKIPPED_ENVIRON = frozenset(
    "HTTP_" + name.upper().replace("-", "_") for name in (*_HOP_BY_HOP, "host")
)

# One pool per worker process, shared by its threads (urllib3's PoolManager is thread-safe).
# Created at import, which gunicorn does in each worker (the bench does not preload).
_pool = urllib3.PoolManager(maxsize=32)


class _StreamedBody:
    """The upstream's body as a WSGI iterable; ``close()`` gives the connection back."""

    __slots__ = ("_done", "_response")

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self._response.stream(CHUNK)
        self._done = True

    def close(self) -> None:
        try:
            if not self._done:  # the client went away mid-body: the connection is unusable
                self._response.close()
        finally:
            self._response.release_conn()


def forward(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Forward the request to :data:`UPSTREAM` with one urllib3 call; stream the answer back."""
    url = UPSTREAM + quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
    query = environ.get("QUERY_STRING")
    if query:
        url = f"{url}?{query}"
    headers = {
        key[5:].replace("_", "-").title(): value
        for key, value in environ.items()
        if key.startswith("HTTP_") and key not in _SKIPPED_ENVIRON
    }
    body = None
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    length = environ.get("CONTENT_LENGTH")
    if length and length != "0":  # gunicorn has checked it is a number
        headers["Content-Length"] = length
        body = environ["wsgi.input"].read(int(length))
    response = _pool.request(
        environ["REQUEST_METHOD"],
        url,
        body=body,
        headers=headers,
        preload_content=False,
        decode_content=False,  # the bytes go on as they came, Content-Encoding and all
        redirect=False,
    )
    start_response(
        f"{response.status} {response.reason or ''}".rstrip(),
        [
            (name, value)
            for name, value in response.headers.items()
            if name.lower() not in _HOP_BY_HOP
        ],
    )
    return _StreamedBody(response)


_built: dict[str, WSGIApplication] = {}


def _workflowhttp_proxy() -> WSGIApplication:
    from workflowhttp import App
    from workflowhttp.proxy import Proxy

    app: WSGIApplication = App(controllers=[Proxy("/", [UPSTREAM], name="bench")])
    return app


def __getattr__(name: str) -> WSGIApplication:
    if name != "workflowhttp_proxy":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = _built.get(name)
    if app is None:
        app = _built[name] = _workflowhttp_proxy()
    return app
