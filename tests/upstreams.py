"""Real upstream servers on 127.0.0.1 for the proxy tests: a threaded WSGI server and a raw
socket server for faults. Both run in the test process, on threads, and are stopped when
their ``with`` block ends.

The WSGI upstream (:func:`upstream`) answers:

* ``/echo...`` (any method): JSON of what it received: method, raw path, query, headers,
  body length and SHA-256, and the body itself when it is short;
* ``/chunks?n=N``: N chunks, chunked; after the first it waits (at most 5 s) for
  ``server.proceed`` to be set, so a test can see the first chunk arrive before the rest;
* ``/sse``: like ``/chunks``, as ``text/event-stream``;
* ``/large?size=N``: N bytes with a ``Content-Length``, generated in 64 KiB chunks;
* ``/upload``: reads the body in chunks; JSON of its length and SHA-256;
* ``/slow?seconds=S``: answers after S seconds;
* ``/status/<code>``: that status;
* ``/hop``: hop-by-hop headers (and one the ``Connection`` header names) beside ordinary
  ones, and two ``Set-Cookie``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import parse_qs

from werkzeug.serving import ThreadedWSGIServer

CHUNK = 64 * 1024


class Upstream:
    """A running upstream: its URL, what it saw, and its counters."""

    def __init__(self, server: CountingServer) -> None:
        self.server = server
        self.url = f"http://127.0.0.1:{server.server_port}"
        self.proceed = threading.Event()
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def connections(self) -> int:
        """TCP connections accepted so far."""
        return self.server.accepted


class CountingServer(ThreadedWSGIServer):
    """werkzeug's threaded server (HTTP/1.1 keep-alive), counting accepted connections."""

    daemon_threads = True
    accepted = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        self.accepted += 1
        super().process_request(request, client_address)


def _app(state: Upstream) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        if environ.get("CONTENT_LENGTH"):
            headers["content-length"] = environ["CONTENT_LENGTH"]
        with state.lock:
            state.requests.append(
                {"method": environ["REQUEST_METHOD"], "path": path, "headers": headers}
            )
        if path.startswith("/echo") or path == "/":
            body = read_all(environ)
            answer = {
                "method": environ["REQUEST_METHOD"],
                "path": environ.get("REQUEST_URI", path).partition("?")[0],
                "query": environ.get("QUERY_STRING", ""),
                "headers": headers,
                "length": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "body": body.decode("latin-1") if len(body) <= 1024 else None,
            }
            return _json(start_response, answer)
        if path in ("/chunks", "/sse"):
            count = int(query.get("n", "3"))
            kind = "text/event-stream" if path == "/sse" else "text/plain"
            start_response("200 OK", [("Content-Type", kind), ("Cache-Control", "no-cache")])
            return _chunks(state, count, sse=path == "/sse")
        if path == "/large":
            size = int(query.get("size", str(CHUNK)))
            start_response(
                "200 OK",
                [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
            )
            return _large(size)
        if path == "/upload":
            digest = hashlib.sha256()
            length = 0
            stream = environ["wsgi.input"]
            remaining = int(environ.get("CONTENT_LENGTH") or 0)
            while remaining > 0:
                chunk = stream.read(min(CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                length += len(chunk)
                digest.update(chunk)
            return _json(start_response, {"length": length, "sha256": digest.hexdigest()})
        if path == "/slow":
            time.sleep(float(query.get("seconds", "1")))
            return _json(start_response, {"slow": True})
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            start_response(f"{code} Status", [("Content-Type", "text/plain")])
            return [] if code in (204, 304) else [f"status {code}".encode()]
        if path == "/hop":
            start_response(
                "200 OK",
                [
                    ("Content-Type", "text/plain"),
                    ("Connection", "X-Private"),
                    ("X-Private", "internal"),
                    ("Keep-Alive", "timeout=5"),
                    ("Proxy-Authenticate", "Basic"),
                    ("Upgrade", "h2c"),
                    ("X-Public", "yes"),
                    ("Set-Cookie", "a=1; Path=/"),
                    ("Set-Cookie", "b=2; Path=/"),
                ],
            )
            return [b"hop"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"upstream: no such path"]

    return app


def read_all(environ: dict[str, Any]) -> bytes:
    """Read a test server's request body whole (by its length, or to the end when chunked)."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        return bytes(stream.read(int(length)))
    if environ.get("wsgi.input_terminated") or "chunked" in environ.get(
        "HTTP_TRANSFER_ENCODING", ""
    ):
        return bytes(stream.read())
    return b""


def _json(start_response: Any, value: Any) -> list[bytes]:
    body = json.dumps(value).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def _chunks(state: Upstream, count: int, *, sse: bool) -> Iterator[bytes]:
    for index in range(count):
        yield f"data: {index}\n\n".encode() if sse else f"chunk {index}\n".encode()
        if index == 0:
            state.proceed.wait(5)


def _large(size: int) -> Iterator[bytes]:
    block = b"x" * CHUNK
    remaining = size
    while remaining > 0:
        piece = block[: min(CHUNK, remaining)]
        remaining -= len(piece)
        yield piece


@contextmanager
def upstream() -> Iterator[Upstream]:
    """A threaded WSGI upstream on 127.0.0.1 at a free port, stopped when the block ends."""
    server = CountingServer("127.0.0.1", 0, lambda e, s: [])
    state = Upstream(server)
    server.app = _app(state)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        state.proceed.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


class Faulty:
    """A raw socket server misbehaving in one way, for the proxy's error paths."""

    def __init__(self, listener: socket.socket, mode: str) -> None:
        self.listener = listener
        self.mode = mode
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        self.accepted = 0
        self._stop = threading.Event()
        self._open: list[socket.socket] = []

    def serve(self) -> None:
        self.listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            self._open.append(connection)
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        try:
            connection.settimeout(5)
            connection.recv(65536)
            if self.mode == "garbage":
                connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
                connection.close()
            elif self.mode == "reset":  # RST before any answer
                connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                connection.close()
            elif self.mode == "reset-midway":  # headers and part of the body, then RST
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nContent-Type: text/plain"
                    b"\r\n\r\n" + b"x" * 1000
                )
                time.sleep(0.1)
                connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                connection.close()
            elif self.mode == "short-midway":  # a small body cut short, then RST
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/plain"
                    b"\r\n\r\n" + b"x" * 10
                )
                time.sleep(0.1)
                connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                connection.close()
            elif self.mode == "hang":  # never answers; closed when the server stops
                self._stop.wait(10)
        except OSError:
            pass

    def stop(self) -> None:
        self._stop.set()
        for connection in self._open:
            with suppress(OSError):
                connection.close()
        self.listener.close()


@contextmanager
def faulty(mode: str) -> Iterator[Faulty]:
    """A raw upstream on 127.0.0.1: ``garbage``, ``reset``, ``reset-midway`` (a large body cut
    short), ``short-midway`` (a small one) or ``hang``."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    server = Faulty(listener, mode)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(5)


def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
