"""Header rules of the proxy: hop-by-hop headers, ``X-Forwarded-*``, ``Host`` and tags."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from werkzeug.datastructures import Headers

__all__ = ["TAG_PREFIX", "request_headers", "response_headers"]

#: Headers that describe one connection, not the message (RFC 9110 §7.6.1): never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: ``X-Proxy-Tag-<name>: value`` request headers become ``transaction.tags[name]``.
TAG_PREFIX = "x-proxy-tag-"
_TAG_KEY = "HTTP_X_PROXY_TAG_"
_FORWARDED_KEYS = frozenset(
    {"HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "HTTP_HOST"}
)


def _hop_by_hop(connection: str | None) -> frozenset[str]:
    """Return the hop-by-hop names: the fixed ones and those the ``Connection`` header names."""
    if not connection:
        return HOP_BY_HOP
    named = {token.strip().lower() for token in connection.split(",")}
    return HOP_BY_HOP | named


def _is_hop(name: str, hop: frozenset[str]) -> bool:
    lower = name.lower()
    return lower in hop or lower.startswith("proxy-")


def request_headers(
    environ: dict[str, Any], *, trust_forwarded: bool, preserve_host: bool
) -> tuple[Headers, dict[str, str]]:
    """Return the headers to send upstream, and the transaction's tags.

    SECURITY: hop-by-hop headers (and those ``Connection`` names) are dropped, so a client
    cannot make the proxy strip or forge a header upstream (``Connection: X-Forwarded-For``
    removes the client's own copy only). ``X-Forwarded-For`` starts afresh with the peer's
    address unless the app trusts the proxies in front of it (``App(proxy_hops=...)``): then
    the chain they sent is extended. ``Host`` is the upstream's unless ``preserve_host``.
    """
    hop = _hop_by_hop(environ.get("HTTP_CONNECTION"))
    headers = Headers()
    tags: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            if key in _FORWARDED_KEYS:
                continue
            if key.startswith(_TAG_KEY):
                tags[key[len(_TAG_KEY) :].lower().replace("_", "-")] = value
                continue
            name = key[5:].replace("_", "-").title()
        elif key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
            if not value:
                continue
            name = key.replace("_", "-").title()
        else:
            continue
        if not _is_hop(name, hop):
            headers.add(name, value)
    # PERF: add(), not item assignment: the loop above skipped these names, so there is
    # nothing to replace (assignment would scan the list for one).
    peer, forwarded_for = _peer(environ, trust_forwarded)
    headers.add("X-Forwarded-For", f"{forwarded_for}, {peer}" if forwarded_for else peer)
    headers.add("X-Forwarded-Proto", environ.get("wsgi.url_scheme", "http"))
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    if host:
        headers.add("X-Forwarded-Host", host)
        if preserve_host:
            headers.add("Host", host)
    return headers, tags


def _peer(environ: dict[str, Any], trusted: bool) -> tuple[str, str]:
    """Return the direct peer's address and, when trusted, the chain it forwarded."""
    if not trusted:
        return environ.get("REMOTE_ADDR", ""), ""
    # werkzeug's ProxyFix replaced REMOTE_ADDR by the client it trusts; the peer that
    # connected to us is the original one, and the chain is the header it sent.
    original = environ.get("werkzeug.proxy_fix.orig", {})
    peer = original.get("REMOTE_ADDR", environ.get("REMOTE_ADDR", ""))
    return peer, environ.get("HTTP_X_FORWARDED_FOR", "")


def response_headers(upstream: Iterable[Any]) -> Headers:
    """Return the upstream's headers without the hop-by-hop ones (``items()`` of urllib3's
    ``HTTPHeaderDict``: repeated names, ``Set-Cookie`` say, stay separate)."""
    items = list(upstream.items())  # type: ignore[attr-defined]
    connection = ", ".join(value for name, value in items if name.lower() == "connection")
    hop = _hop_by_hop(connection)
    headers = Headers()
    for name, value in items:
        if not _is_hop(name, hop):
            headers.add(name, value)
    return headers
