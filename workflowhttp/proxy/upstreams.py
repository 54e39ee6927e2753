"""Upstream pools: round-robin over the healthy upstreams, passive health, a fallback pool."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable

import urllib3
from urllib3.util import parse_url

from ..errors import ConfigurationError

__all__ = ["LazyClient", "Pool", "Upstream"]


class Upstream:
    """One upstream server: its base URL and when it may be tried again after a failure."""

    __slots__ = ("url", "base", "host", "down_until")

    def __init__(self, url: str) -> None:
        if not isinstance(url, str):
            raise ConfigurationError(f"an upstream is a URL string, not {url!r}")
        try:
            parsed = parse_url(url)
        except ValueError as ex:
            raise ConfigurationError(f"upstream {url!r}: {ex}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigurationError(f"upstream {url!r} must be an http:// or https:// URL")
        if parsed.query or parsed.fragment:
            raise ConfigurationError(f"upstream {url!r} cannot have a query or a fragment")
        self.host = parsed.netloc or parsed.host
        # The path below the proxy's base path is appended to the upstream's own path.
        self.base = f"{parsed.scheme}://{self.host}{(parsed.path or '').rstrip('/')}"
        self.url = url
        self.down_until = 0.0

    def __repr__(self) -> str:
        return f"<Upstream {self.url}>"


class Pool:
    """The upstreams of one proxy: the primary ones round-robin, then the fallback ones.

    A failed upstream (connection refused, a timeout) is skipped for ``check_after`` seconds,
    then tried again with live traffic (passive health checks, as nginx's ``max_fails`` /
    ``fail_timeout``).
    """

    __slots__ = ("primary", "fallback", "check_after", "_turn")

    def __init__(self, primary: Iterable[str], fallback: Iterable[str], check_after: float) -> None:
        if isinstance(primary, str):
            primary = [primary]
        if isinstance(fallback, str):
            fallback = [fallback]
        self.primary = tuple(Upstream(url) for url in primary)
        self.fallback = tuple(Upstream(url) for url in fallback)
        if not self.primary:
            raise ConfigurationError("a proxy needs at least one upstream")
        self.check_after = check_after
        self._turn = itertools.count()  # PERF: next() on a count is atomic under the GIL

    def candidates(self) -> list[Upstream]:
        """Return the upstreams to try, in order: healthy primaries from the next in turn,
        then healthy fallbacks from the next in turn."""
        now = time.monotonic()
        primary = self.primary
        if len(primary) == 1 and not self.fallback:  # PERF: the common single upstream
            return [primary[0]] if primary[0].down_until <= now else []
        turn = next(self._turn)
        found = []
        for upstreams in (primary, self.fallback):
            count = len(upstreams)
            for offset in range(count):
                upstream = upstreams[(turn + offset) % count]
                if upstream.down_until <= now:
                    found.append(upstream)
        return found

    def mark_down(self, upstream: Upstream) -> None:
        """Skip ``upstream`` for ``check_after`` seconds."""
        upstream.down_until = time.monotonic() + self.check_after

    @property
    def upstreams(self) -> tuple[Upstream, ...]:
        """Every upstream, primaries first."""
        return self.primary + self.fallback


class LazyClient:
    """A worker's pooled urllib3 client, made on first use: after gunicorn's fork, never in
    the master, and once however many threads ask at the same moment."""

    __slots__ = ("num_pools", "maxsize", "_client", "_lock")

    def __init__(self, num_pools: int, maxsize: int) -> None:
        self.num_pools = num_pools
        self.maxsize = maxsize
        self._client: urllib3.PoolManager | None = None
        self._lock = threading.Lock()

    def get(self) -> urllib3.PoolManager:
        client = self._client
        if client is None:
            with self._lock:
                client = self._client
                if client is None:
                    client = self._client = urllib3.PoolManager(
                        num_pools=self.num_pools, maxsize=self.maxsize, block=False
                    )
        return client

    def clear(self) -> None:
        """Close the pooled connections; a later :meth:`get` makes a new client."""
        client, self._client = self._client, None
        if client is not None:
            client.clear()
