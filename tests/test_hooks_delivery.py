"""How a worker sends listener hooks' copies to external destinations: kept-alive connections,
a destination that closed one meanwhile, and a destination no longer allowed."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated

import pytest

from tests.receivers import receiver
from workflowhttp import App, Body, http
from workflowhttp.hooks import Hooks, http1
from workflowhttp.hooks.specs import AllowedDestinations
from workflowhttp.hooks.storage import SQLiteStorage
from workflowhttp.testing import TestClient


@http.PUT("/data/{rest:path}")
def data(rest: str, body: Annotated[bytes, Body()] = b"") -> dict[str, str]:
    return {"stored": rest}


PLAIN = {"Content-Type": "text/plain"}


def hooked(tmp_path: Path, destination: str) -> tuple[App, Hooks]:
    # A retry would wait 30 s: a test that passes saw no retry.
    hooks = Hooks(
        storage=f"sqlite:///{tmp_path / 'hooks.sqlite3'}",
        allowed_destinations=[destination],
        poll_interval=0.05,
        retry_delay=30.0,
    )
    return App(controllers=[data], extensions=[hooks]), hooks


KEEP_ALIVE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"


@contextmanager
def raw_destination(
    *, close_after_answer: bool = False, reply: bytes = KEEP_ALIVE
) -> Iterator[RawDestination]:
    """A raw HTTP/1.1 server answering each request with ``reply`` (200 with keep-alive);
    with ``close_after_answer`` it closes each connection right after its answer anyway (as a
    destination whose idle timeout is shorter than ours does)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    destination = RawDestination(f"http://127.0.0.1:{listener.getsockname()[1]}")
    stop = threading.Event()

    def answer(connection: socket.socket) -> None:
        # A client that closes before reading a long answer resets the connection.
        with suppress(ConnectionResetError, BrokenPipeError):
            exchange(connection)

    def exchange(connection: socket.socket) -> None:
        data = b""
        with connection:
            connection.settimeout(5)
            while not stop.is_set():
                while b"\r\n\r\n" not in data:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in lines
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(data) < length:
                    data += connection.recv(65536)
                body, data = data[:length], data[length:]
                destination.requests.append(lines[0] + b" " + body)
                connection.sendall(reply)
                if close_after_answer:
                    return

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            destination.accepted += 1
            threading.Thread(target=answer, args=(connection,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield destination
    finally:
        stop.set()
        thread.join(5)
        listener.close()


class RawDestination:
    def __init__(self, url: str) -> None:
        self.url = url
        self.requests: list[bytes] = []
        self.accepted = 0

    def wait_for(self, count: int, timeout: float = 5.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.requests)


def listen(client: TestClient, destination: str) -> None:
    """Register the listener hook ``x`` on ``/data`` with ``destination``."""
    registered = client.put("/data/_hooks/listeners/http/x", json={"destination": destination})
    assert registered.status_code == 200, registered.text


def test_copies_to_one_destination_share_a_kept_alive_connection(tmp_path: Path) -> None:
    with raw_destination(close_after_answer=False) as destination:
        app, _ = hooked(tmp_path, destination.url)
        with TestClient(app) as client:
            listen(client, destination.url)
            for n in range(5):
                assert client.put(f"/data/{n}", data=b"%d" % n, headers=PLAIN).status_code == 200
            seen = destination.wait_for(5)
        assert seen == [b"PUT /%d HTTP/1.1 %d" % (n, n) for n in range(5)]
        assert destination.accepted == 1


def send_one_by_one(client: TestClient, destination: RawDestination, pause: float = 0) -> None:
    """Three hooked PUTs, each once the copy of the one before has arrived (and ``pause``)."""
    listen(client, destination.url)
    for n in range(3):
        assert client.put(f"/data/{n}", data=b"%d" % n, headers=PLAIN).status_code == 200
        destination.wait_for(n + 1)
        time.sleep(pause)


def test_a_connection_the_destination_closed_is_replaced_without_a_retry(tmp_path: Path) -> None:
    with raw_destination(close_after_answer=True) as destination:
        app, _ = hooked(tmp_path, destination.url)
        with TestClient(app) as client:
            # Each pause: the destination has closed the kept-alive connection meanwhile.
            send_one_by_one(client, destination, pause=0.05)
            seen = destination.wait_for(3)
        assert seen == [b"PUT /%d HTTP/1.1 %d" % (n, n) for n in range(3)]
        assert destination.accepted == 3


def test_a_copy_for_a_destination_no_longer_allowed_is_given_up_unsent(tmp_path: Path) -> None:
    with receiver() as sink:
        app, hooks = hooked(tmp_path, sink.url)
        with TestClient(app) as client:
            hooks.deliverer.stop()  # queue first, deliver later
            registered = client.put("/data/_hooks/listeners/http/x", json={"destination": sink.url})
            assert registered.status_code == 200, registered.text
            assert client.put("/data/1", data=b"1", headers=PLAIN).status_code == 200
            assert sum(n for n, _ in hooks.storage.queue_stats().values()) == 1
            hooks.allowed = AllowedDestinations([])  # the operator took the destination away
            hooks.deliverer.start()
            deadline = time.monotonic() + 5
            while hooks.storage.queue_stats() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert hooks.storage.queue_stats() == {}  # given up, not retried every 30 s
        assert sink.snapshot() == []


class CountingStorage(SQLiteStorage):
    """The SQLite storage, counting the deliverer's looks for queues to claim."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.claims = 0

    def claim(self, owner: str, lease: float, limit: int) -> list[str]:
        self.claims += 1
        return super().claim(owner, lease, limit)


def test_a_burst_of_copies_wakes_the_deliverer_a_few_times_not_once_a_copy(
    tmp_path: Path,
) -> None:
    """PERF: a queued copy wakes the worker's deliverer to claim its queue at once, but a
    look is a write transaction: in a burst it looks at most every quarter of its poll
    interval (and not at all for a queue it is draining), and every copy still arrives."""
    storage = CountingStorage(f"sqlite:///{tmp_path / 'hooks.sqlite3'}")
    with receiver() as sink:
        hooks = Hooks(storage=storage, allowed_destinations=[sink.url], poll_interval=0.2)
        with TestClient(App(controllers=[data], extensions=[hooks])) as client:
            spec = {"destination": f"{sink.url}/copies"}
            assert client.put("/data/_hooks/listeners/http/one", json=spec).status_code == 200
            storage.claims = 0
            started = time.monotonic()
            for n in range(200):
                assert client.put(f"/data/{n}", data=b"x", headers=PLAIN).status_code == 200
            elapsed = time.monotonic() - started
            looks = storage.claims  # during the burst
            assert len(sink.wait_for(200, 10.0)) == 200
    # One look at the first copy, then at most one per quarter poll and one per poll.
    assert looks <= 2 + elapsed / 0.05 + elapsed / 0.2, (looks, elapsed)


ANSWERS = {
    # name: (the destination's answer, whether the connection is kept for the next copy)
    "interim-then-200": (b"HTTP/1.1 100 Continue\r\n\r\n" + KEEP_ALIVE, True),
    "204": (b"HTTP/1.1 204 No Content\r\n\r\n", True),
    "chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        False,
    ),
    "http-1.0": (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
    "connection-close": (b"HTTP/1.1 201 Created\r\nConnection: close\r\n\r\n", False),
    "long-body": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + b"x" * 70000,
        False,
    ),
    "two-lengths": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        False,
    ),
}


@pytest.mark.parametrize("name", list(ANSWERS))
def test_every_kind_of_answer_delivers_once_and_keeps_the_connection_when_it_may(
    tmp_path: Path, name: str
) -> None:
    """The deliveries' client reads the status, and the body only when its length is known
    and small: a chunked, long or HTTP/1.0 answer closes the connection instead (the next
    copy opens another). Each copy is delivered once: none is retried."""
    answer, kept = ANSWERS[name]
    with raw_destination(reply=answer) as destination:
        app, hooks = hooked(tmp_path, destination.url)
        with TestClient(app) as client:
            send_one_by_one(client, destination)
            deadline = time.monotonic() + 5
            while hooks.storage.queue_stats() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert hooks.storage.queue_stats() == {}  # all delivered, none left to retry
        assert destination.requests == [b"PUT /%d HTTP/1.1 %d" % (n, n) for n in range(3)]
        assert destination.accepted == (1 if kept else 3)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/2 200\r\n\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: \xc2\xb2\r\n\r\n",
    ],
    ids=["http-2", "garbage", "four-digits", "head-too-long", "unicode-length"],
)
def test_an_unreadable_answer_leaves_the_copy_queued_for_a_retry(
    tmp_path: Path, answer: bytes
) -> None:
    with raw_destination(reply=answer) as destination:
        app, hooks = hooked(tmp_path, destination.url)  # a retry waits 30 s
        with TestClient(app) as client:
            listen(client, destination.url)
            assert client.put("/data/1", data=b"1", headers=PLAIN).status_code == 200
            assert destination.wait_for(1) == [b"PUT /1 HTTP/1.1 1"]
            time.sleep(0.2)  # the answer is read (and refused) meanwhile
            assert [n for n, _ in hooks.storage.queue_stats().values()] == [1]


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("PUT", "/a\r\nX-Evil: 1", []),
        ("PUT", "/a b", []),
        ("PUT", "/a", [("X-Ok", "1\r\nX-Evil: 1")]),
        ("PUT", "/a", [("X-Ok", "nul\x00")]),
        ("PUT", "/a", [("X Bad", "1")]),
        ("PUT", "/a", [("X-Ok", "\u2603")]),
    ],
    ids=["crlf-in-target", "space-in-target", "crlf-in-value", "nul", "space-in-name", "snowman"],
)
def test_a_request_that_cannot_be_written_safely_is_refused_before_sending(
    method: str, target: str, headers: list[tuple[str, str]]
) -> None:
    """SECURITY: CR or LF in a copy's target or headers would split it into two requests at
    the destination (smuggling): such a copy is never sent (the deliverer gives it up)."""
    with pytest.raises(http1.Refused):
        http1.encode_request(method, target, "example.org", headers, b"")


def test_a_copy_s_own_host_is_sent_once_and_its_length_is_always_the_body_s() -> None:
    """A listener's header rules may set ``Host``: it replaces the destination's (one Host
    line, as with ``http.client``); a ``Content-Length`` or ``Transfer-Encoding`` they set is
    dropped for the body's own length (two lengths would smuggle a request)."""
    headers = [
        ("host", "orders.internal"),
        ("Content-Length", "0"),
        ("Transfer-Encoding", "chunked"),
        ("X-Ok", "1"),
    ]
    request = http1.encode_request("PUT", "/a?b=1", "example.org:8080", headers, b"body")
    assert request == (
        b"PUT /a?b=1 HTTP/1.1\r\nhost: orders.internal\r\nX-Ok: 1\r\nContent-Length: 4\r\n\r\nbody"
    )
    plain = http1.encode_request("GET", "/", "example.org:8080", [], b"")
    assert plain == b"GET / HTTP/1.1\r\nHost: example.org:8080\r\n\r\n"


def test_a_host_set_by_the_listener_s_header_rules_reaches_the_destination(
    tmp_path: Path,
) -> None:
    with receiver() as sink:
        app, _ = hooked(tmp_path, sink.url)
        with TestClient(app) as client:
            spec = {
                "destination": f"{sink.url}/copies",
                "headers": [{"header": "Host", "value": "orders.internal"}],
            }
            registered = client.put("/data/_hooks/listeners/http/x", json=spec)
            assert registered.status_code == 200, registered.text
            assert client.put("/data/1", data=b"1", headers=PLAIN).status_code == 200
            (delivery,) = sink.wait_for(1)
    assert delivery["headers"]["host"] == "orders.internal"
    assert delivery["body"] == b"1"


@pytest.mark.parametrize(
    ("scheme", "host", "port", "header"),
    [
        ("http", "example.org", 80, "example.org"),
        ("http", "example.org", 8080, "example.org:8080"),
        ("https", "example.org", 443, "example.org"),
        ("https", "example.org", 80, "example.org:80"),
        ("http", "::1", 8080, "[::1]:8080"),
        ("http", "::1", 80, "[::1]"),
    ],
)
def test_the_host_header_names_the_port_only_when_it_is_not_the_scheme_s(
    scheme: str, host: str, port: int, header: str
) -> None:
    assert http1.host_header(scheme, host, port) == header
