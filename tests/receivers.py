"""A real receiving server on 127.0.0.1 for the listener hooks' deliveries.

:func:`receiver` runs werkzeug's threaded WSGI server on a thread for the length of a ``with``
block and yields a :class:`Receiver`, which records every request it gets (any method, any
path) and answers it as the test asks::

    with receiver() as sink:
        hooks = Hooks(storage=..., allowed_destinations=[sink.url])
        ...
        sink.fail_next(5)              # the next 5 deliveries answer 500
        seen = sink.wait_for(10, timeout=5)
        assert sink.max_in_flight("orders") == 1

A delivery's *key* (for :meth:`Receiver.max_in_flight`) is its ``x-test-queue`` header, or
``""`` without one: give each listener a header rule setting it to tell queues apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from tests.upstreams import read_all

#: The header naming a delivery's queue for the overlap detector.
KEY_HEADER = "x-test-queue"


class Receiver:
    """A running receiver: its URL, what it received, and how it answers.

    Attributes:
        url: ``http://127.0.0.1:<port>`` (no trailing slash).
        deliveries: One dict per request received, in arrival order: ``method``, ``path``
            (raw, without the query), ``query`` (raw), ``headers`` (lower-case names), ``body``
            (bytes), ``at`` (``time.monotonic()`` on arrival), ``key`` (the ``x-test-queue``
            header or ``""``), ``status`` (what it was answered). Read it under :attr:`lock`,
            or use :meth:`snapshot`.
    """

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.deliveries: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._failures: list[int] = []
        self._status = 200
        self._delay = 0.0
        self._in_flight: dict[str, int] = {}
        self._max_in_flight: dict[str, int] = {}

    def fail_next(self, count: int, status: int = 500) -> None:
        """Answer the next ``count`` deliveries with ``status`` (then as before)."""
        with self.lock:
            self._failures.extend([status] * count)

    def answer(self, status: int) -> None:
        """Answer every delivery with ``status`` until called again (200 resets)."""
        with self.lock:
            self._status = status

    def delay(self, seconds: float) -> None:
        """Wait ``seconds`` before answering each delivery (0 resets)."""
        with self.lock:
            self._delay = seconds

    def snapshot(self) -> list[dict[str, Any]]:
        """A copy of :attr:`deliveries` as it is now."""
        with self.lock:
            return list(self.deliveries)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The deliveries once there are at least ``count``; AssertionError after ``timeout``
        seconds, naming what did arrive."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.snapshot()
            if len(seen) >= count:
                return seen
            if time.monotonic() >= deadline:
                arrived = [(d["method"], d["path"], d["query"], d["status"]) for d in seen]
                raise AssertionError(
                    f"expected {count} deliveries within {timeout}s, got {len(seen)}: {arrived}"
                )
            time.sleep(0.01)

    def max_in_flight(self, key: str = "") -> int:
        """The most deliveries with this ``x-test-queue`` key that were ever being answered at
        the same time (1 when they never overlapped; 0 when none came)."""
        with self.lock:
            return self._max_in_flight.get(key, 0)

    def _app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        arrived = time.monotonic()
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length")):
            if environ.get(key):
                headers[name] = environ[key]
        body = read_all(environ)
        key = headers.get(KEY_HEADER, "")
        path = environ.get("REQUEST_URI", environ.get("PATH_INFO", "")).partition("?")[0]
        with self.lock:
            status = self._failures.pop(0) if self._failures else self._status
            delay = self._delay
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            self._max_in_flight[key] = max(self._max_in_flight.get(key, 0), self._in_flight[key])
            self.deliveries.append(
                {
                    "method": environ["REQUEST_METHOD"],
                    "path": path,
                    "query": environ.get("QUERY_STRING", ""),
                    "headers": headers,
                    "body": body,
                    "at": arrived,
                    "key": key,
                    "status": status,
                }
            )
        try:
            if delay:
                time.sleep(delay)
            start_response(f"{status} Answer", [("Content-Type", "text/plain")])
            return [] if status in (204, 304) else [f"receiver {status}".encode()]
        finally:
            with self.lock:
                self._in_flight[key] -= 1


class _Server(ThreadedWSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """werkzeug's handler without its access log line per request."""

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass


@contextmanager
def receiver() -> Iterator[Receiver]:
    """A receiving server on 127.0.0.1 at a free port, stopped when the block ends."""
    server = _Server("127.0.0.1", 0, lambda e, s: [], handler=_QuietHandler)
    state = Receiver(server.server_port)
    server.app = state._app
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
