"""Hostile clients against a real gunicorn: smuggling, oversized and broken requests,
pipelining, concurrency, streams failing midway, shutdown with requests in flight, memory.

Each server runs ``python -m workflowhttp serve tests.apps.hostile_app:app`` on 127.0.0.1 in
its own process group, with its own ``XDG_RUNTIME_DIR``; it is waited for with a deadline and
always stopped by its PID (SIGTERM, then SIGKILL to its group). Raw requests are written on
plain sockets, so the bytes on the wire are exactly the ones below.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.servers import Answer, Server, exchange, serving, start, stop, wait_for_exit

pytestmark = pytest.mark.gunicorn

APP = "tests.apps.hostile_app:app"
START_DEADLINE = 20.0  # seconds for a server to answer /health with all its workers up
GRACEFUL_TIMEOUT = 5  # seconds, given to `serve --graceful-timeout`
WORKERS = 2
MB = 1024 * 1024


# -- the server --------------------------------------------------------------------------------


def start_hostile(directory: Path, *options: str, workers: int = WORKERS) -> Server:
    """Serve the hostile app on a free port; return once /health answers and workers are up."""
    markers = directory / "markers"  # where the app marks the requests it has begun
    markers.mkdir(parents=True, exist_ok=True)
    return start(
        APP,
        directory,
        *options,
        workers=workers,
        graceful_timeout=GRACEFUL_TIMEOUT,
        env={"HOSTILE_APP_MARKERS": str(markers)},
        deadline=START_DEADLINE,
    )


def echo(server: Server, token: str, pause: float = 0.0) -> dict[str, Any]:
    return server.get_json(f"/echo?token={token}&pause={pause}")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def sync_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(start_hostile(tmp_path_factory.mktemp("sync"))) as running:
        yield running


@pytest.fixture(scope="module")
def threaded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(start_hostile(tmp_path_factory.mktemp("threaded"), "--threads", "4")) as running:
        yield running


@pytest.fixture(params=["sync", "threaded"])
def server(request: pytest.FixtureRequest) -> Server:
    """Each of the two servers in turn."""
    return request.getfixturevalue(f"{request.param}_server")  # type: ignore[no-any-return]


def assert_still_serving(server: Server, workers: set[int]) -> None:
    """The same workers (none died or was replaced) answer normal requests correctly."""
    for number in range(2 * WORKERS * 2):
        answer = echo(server, f"after{number}")
        assert answer["token"] == answer["service"] == f"after{number}", answer
    assert server.workers() == workers, server.output()[-3000:]


# -- raw HTTP ----------------------------------------------------------------------------------


class RawResponse(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


def parse_responses(data: bytes) -> list[RawResponse]:
    """Split what a connection received into complete HTTP/1.1 responses."""
    responses = []
    while data:
        head, separator, rest = data.partition(b"\r\n\r\n")
        assert separator, f"an incomplete response head: {data[:300]!r}"
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        version, status, *_ = status_line.split(" ")
        assert version == "HTTP/1.1", status_line
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            length = int(headers["content-length"])
            assert len(rest) >= length, f"a truncated body: {data[:300]!r}"
            body, data = rest[:length], rest[length:]
        else:
            body, data = rest, b""
        responses.append(RawResponse(int(status), headers, body))
    return responses


HOST = b"Host: 127.0.0.1\r\n"
SMUGGLED = b"GET /echo?token=smuggled HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"


def post_body(*headers: bytes, body: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    return (
        b"POST /body?token=outer " + version + b"\r\n" + HOST + b"".join(headers) + b"\r\n" + body
    )


# -- request smuggling -------------------------------------------------------------------------

SMUGGLING: list[tuple[str, bytes, int]] = [
    (
        "content-length-then-chunked",
        post_body(b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n", body=b"0\r\n\r\n"),
        400,
    ),
    (
        "chunked-then-content-length",
        post_body(b"Transfer-Encoding: chunked\r\n", b"Content-Length: 60\r\n", body=b"0\r\n\r\n"),
        400,
    ),
    (
        "duplicate-differing-content-length",
        post_body(b"Content-Length: 0\r\n", b"Content-Length: 70\r\n"),
        400,
    ),
    (
        "duplicate-equal-content-length",
        post_body(b"Content-Length: 0\r\n", b"Content-Length: 0\r\n"),
        400,
    ),
    ("content-length-list", post_body(b"Content-Length: 0, 70\r\n"), 400),
    ("content-length-with-a-sign", post_body(b"Content-Length: +0\r\n"), 400),
    (
        "obfuscated-transfer-encoding",
        post_body(b"Transfer-Encoding: xchunked\r\n", b"Content-Length: 5\r\n", body=b"0\r\n\r\n"),
        501,
    ),
    (
        "space-before-the-colon",
        post_body(b"Transfer-Encoding : chunked\r\n", b"Content-Length: 5\r\n", body=b"0\r\n\r\n"),
        400,
    ),
    (
        "folded-transfer-encoding",
        post_body(
            b"Transfer-Encoding:\r\n chunked\r\n", b"Content-Length: 5\r\n", body=b"0\r\n\r\n"
        ),
        400,
    ),
    (
        "chunked-twice",
        post_body(b"Transfer-Encoding: chunked, chunked\r\n", body=b"0\r\n\r\n"),
        400,
    ),
    (
        "chunked-then-identity",
        post_body(
            b"Transfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: identity\r\n",
            body=b"0\r\n\r\n",
        ),
        400,
    ),
    (
        "chunked-in-http-1.0",
        post_body(b"Transfer-Encoding: chunked\r\n", body=b"0\r\n\r\n", version=b"HTTP/1.0"),
        400,
    ),
]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [case[1:] for case in SMUGGLING],
    ids=[case[0] for case in SMUGGLING],
)
def test_smuggling_attempt_is_refused(server, request_bytes, status):
    workers = server.workers()
    received = exchange(server.port, request_bytes + SMUGGLED)
    responses = parse_responses(received)
    # Refused, or the connection closed; never a second response to the smuggled request.
    assert [response.status for response in responses] in ([], [status]), received[:500]
    assert b"smuggled" not in received
    assert_still_serving(server, workers)


@pytest.mark.parametrize(
    "chunks",
    [b"zz\r\n", b"5\r\nhelloXX0\r\n\r\n", b"5;a=\x00\r\nhello\r\n0\r\n\r\n"],
    ids=["bad-chunk-size", "missing-chunk-terminator", "bad-chunk-extension"],
)
def test_malformed_chunked_body_is_a_400(server, chunks):
    """The app reads a chunked body that the server finds malformed: a client error (400),
    not a 500 logged as a failure of the app; and nothing after it is served."""
    workers = server.workers()
    request_bytes = post_body(b"Transfer-Encoding: chunked\r\n", body=chunks)
    received = exchange(server.port, request_bytes + SMUGGLED)
    responses = parse_responses(received)
    assert [response.status for response in responses] in ([], [400]), received[:500]
    assert b"smuggled" not in received
    assert_still_serving(server, workers)


# -- oversized and malformed requests ----------------------------------------------------------


def get_request(target: bytes = b"/echo?token=raw", *headers: bytes) -> bytes:
    return (
        b"GET "
        + target
        + b" HTTP/1.1\r\n"
        + HOST
        + b"".join(headers)
        + b"Connection: close\r\n\r\n"
    )


def many_headers(count: int) -> list[bytes]:
    return [b"X-Header-%d: 1\r\n" % number for number in range(count)]


OVERSIZED: list[tuple[str, bytes, int]] = [
    ("request-line-too-long", get_request(b"/echo?token=" + b"a" * 9000), 414),
    ("header-field-too-long", get_request(b"/echo", b"X-Big: " + b"a" * 9000 + b"\r\n"), 431),
    ("too-many-header-fields", get_request(b"/echo", *many_headers(150)), 431),
    ("nul-in-a-header-value", get_request(b"/echo", b"X-A: a\x00b\r\n"), 400),
    ("bare-lf-line-endings", b"GET /echo HTTP/1.1\nHost: 127.0.0.1\n\n", 400),
    ("garbage-request-line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    ("unknown-http-version", b"GET /echo HTTP/9.9\r\n" + HOST + b"\r\n", 400),
]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [case[1:] for case in OVERSIZED],
    ids=[case[0] for case in OVERSIZED],
)
def test_oversized_or_malformed_request_is_refused_by_gunicorn(sync_server, request_bytes, status):
    workers = sync_server.workers()
    responses = parse_responses(exchange(sync_server.port, request_bytes))
    assert [response.status for response in responses] == [status]
    assert_still_serving(sync_server, workers)


def test_requests_within_gunicorns_limits_are_served(sync_server):
    long_line = get_request(b"/echo?token=" + b"a" * 8000)
    (answer,) = parse_responses(exchange(sync_server.port, long_line))
    assert (answer.status, json.loads(answer.body)["token"]) == (200, "a" * 8000)
    many = get_request(b"/echo?token=many", *many_headers(97))  # + Host and Connection
    (answer,) = parse_responses(exchange(sync_server.port, many))
    assert (answer.status, json.loads(answer.body)["token"]) == (200, "many")


@pytest.mark.parametrize(
    "target",
    [
        b"/files/%2e%2e/%2e%2e/etc/passwd",
        b"/files/%2E%2E/secret",
        b"/files/..%2f..%2fetc%2fpasswd",
        b"/files/a/../../etc/passwd",
        b"/files//etc/passwd",
    ],
    ids=["encoded-dotdot", "upper-case", "encoded-slashes", "plain-dotdot", "absolute"],
)
def test_path_traversal_over_the_wire_is_404(sync_server, target):
    (answer,) = parse_responses(exchange(sync_server.port, get_request(target)))
    assert answer.status == 404
    assert json.loads(answer.body) == {"message": "Not Found"}


def test_a_path_parameter_over_the_wire(sync_server):
    (answer,) = parse_responses(exchange(sync_server.port, get_request(b"/files/a/b%20c")))
    assert (answer.status, json.loads(answer.body)) == (200, {"rest": "a/b c"})


# -- clients that go away, clients that pipeline -----------------------------------------------


def test_a_client_that_hangs_up_mid_body_leaves_the_worker_serving(sync_server):
    workers = sync_server.workers()
    for number in range(2 * WORKERS):
        with socket.create_connection(("127.0.0.1", sync_server.port), timeout=5) as connection:
            connection.sendall(
                b"POST /body?token=gone%d HTTP/1.1\r\n" % number
                + HOST
                + b"Content-Type: application/octet-stream\r\n"
                + b"Content-Length: 100\r\n\r\n0123456789"
            )
    time.sleep(0.2)  # let the workers find the connections closed
    assert_still_serving(sync_server, workers)


def test_a_body_shorter_than_its_content_length_is_a_400(sync_server):
    workers = sync_server.workers()
    with socket.create_connection(("127.0.0.1", sync_server.port), timeout=5) as connection:
        connection.sendall(
            b"POST /body?token=short HTTP/1.1\r\n"
            + HOST
            + b"Content-Type: application/octet-stream\r\n"
            + b"Content-Length: 100\r\n\r\n0123456789"
        )
        connection.shutdown(socket.SHUT_WR)  # no more body: the app reads 10 bytes, then EOF
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    (answer,) = parse_responses(received)
    assert answer.status == 400
    assert json.loads(answer.body) == {"message": "Incomplete request body"}
    assert_still_serving(sync_server, workers)


def test_pipelined_requests_are_answered_in_order_or_refused(server):
    workers = server.workers()
    pipelined = (
        b"GET /echo?token=first HTTP/1.1\r\n"
        + HOST
        + b"\r\n"
        + b"GET /echo?token=second HTTP/1.1\r\n"
        + HOST
        + b"Connection: close\r\n\r\n"
    )
    received = exchange(server.port, pipelined)
    responses = parse_responses(received)
    # Both answered in order, or the second refused by closing; never mixed.
    assert 1 <= len(responses) <= 2, received[:500]
    for response, token in zip(responses, ("first", "second"), strict=False):
        assert response.status == 200
        answer = json.loads(response.body)
        assert [answer[key] for key in ("token", "store", "service", "controller")] == [token] * 4
    assert_still_serving(server, workers)


def test_pipelined_post_then_get(server):
    pipelined = (
        b"POST /body?token=posted HTTP/1.1\r\n"
        + HOST
        + b"Content-Length: 27\r\n\r\n"
        + b"GET /echo?token=inside HTTP"  # 27 bytes of body that look like a request
        + b"GET /echo?token=after HTTP/1.1\r\n"
        + HOST
        + b"Connection: close\r\n\r\n"
    )
    responses = parse_responses(exchange(server.port, pipelined))
    assert 1 <= len(responses) <= 2
    first = json.loads(responses[0].body)
    assert first == {"token": "posted", "length": 27, "head": "GET /echo?token=inside HTTP"}
    if len(responses) == 2:
        assert json.loads(responses[1].body)["token"] == "after"


# -- load and isolation ------------------------------------------------------------------------


def run_echoes(server: Server, count: int, threads: int, pause: float = 0.0) -> list[Any]:
    """``count`` echo requests from ``threads`` threads; return the wrong answers and answers."""

    def one(number: int) -> tuple[str | None, dict[str, Any] | None]:
        token = f"n{number}"
        try:
            answer = echo(server, token, pause)
        except Exception as ex:  # a refused or reset connection is a wrong answer too
            return f"{token}: {type(ex).__name__}: {ex}", None
        values = [answer[key] for key in ("token", "store", "service", "controller")]
        if values != [token] * 4:
            return f"{token}: {answer}", answer
        return None, answer

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.timeout(120)
def test_2000_requests_from_16_threads_get_their_own_answers(sync_server):
    workers = sync_server.workers()
    started = time.monotonic()
    outcomes = run_echoes(sync_server, 2000, 16)
    wrong = [problem for problem, _ in outcomes if problem is not None]
    assert wrong == [], wrong[:5]
    assert {answer["pid"] for _, answer in outcomes} == workers  # both workers served
    assert time.monotonic() - started < 100
    assert sync_server.workers() == workers


@pytest.mark.timeout(120)
def test_threads_of_a_gthread_worker_keep_requests_apart(threaded_server):
    workers = threaded_server.workers()
    outcomes = run_echoes(threaded_server, 400, 16, pause=0.01)
    wrong = [problem for problem, _ in outcomes if problem is not None]
    assert wrong == [], wrong[:5]
    threads_per_worker: dict[int, set[int]] = {}
    for _, answer in outcomes:
        threads_per_worker.setdefault(answer["pid"], set()).add(answer["thread"])
    # Requests really ran side by side in one process.
    assert max(len(threads) for threads in threads_per_worker.values()) > 1, threads_per_worker
    assert threaded_server.workers() == workers


# -- a stream failing midway -------------------------------------------------------------------


def test_a_stream_failing_midway_is_cut_off_and_the_server_keeps_serving(server):
    workers = server.workers()
    complete = server.request("GET", "/stream?chunks=4")
    assert (complete.status, complete.body) == (200, b"x" * 4096)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", "/stream-fails?chunks=4")
        response = connection.getresponse()
        assert response.status == 200  # sent before the body failed
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            response.read()
    finally:
        connection.close()
    assert_still_serving(server, workers)
    deadline = time.monotonic() + 5
    while "streamed response body failed midway" not in server.output():
        assert time.monotonic() < deadline, server.output()[-3000:]
        time.sleep(0.05)


def test_the_cut_off_stream_is_not_a_complete_chunked_body(sync_server):
    received = exchange(sync_server.port, get_request(b"/stream-fails?chunks=2"))
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding: chunked" in head.lower()
    assert not body.endswith(b"0\r\n\r\n"), "the last-chunk marker would claim it complete"


# -- graceful shutdown -------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_sigterm_lets_requests_in_flight_finish(tmp_path):
    running = start_hostile(tmp_path / "graceful", workers=4)
    try:
        results: dict[str, Any] = {}  # token → (status, body), or what went wrong

        def slow(token: str) -> None:
            try:
                results[token] = running.request(
                    "GET", f"/slow?token={token}&seconds=2", timeout=20
                )
            except Exception as ex:
                results[token] = f"{type(ex).__name__}: {ex}"

        tokens = [f"inflight{number}" for number in range(4)]
        threads = [threading.Thread(target=slow, args=(token,)) for token in tokens]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(list((running.directory / "markers").glob("inflight*.started"))) < 4:
            assert time.monotonic() < deadline, running.output()
            time.sleep(0.02)
        running.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        for thread in threads:
            thread.join(20)
        assert not any(thread.is_alive() for thread in threads)
        for token in tokens:
            assert isinstance(results[token], Answer), results[token]
            assert results[token].status == 200, results[token]
            assert json.loads(results[token].body)["token"] == token
        code = wait_for_exit(running, GRACEFUL_TIMEOUT + 5)
        elapsed = time.monotonic() - signalled
        assert code == 0, running.output()
        assert elapsed < GRACEFUL_TIMEOUT, elapsed
        with pytest.raises(OSError):
            running.request("GET", "/health", timeout=2)
    finally:
        stop(running)


# -- memory ------------------------------------------------------------------------------------


def rss(pid: int) -> int:
    """The resident set size of ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def mixed_requests(server: Server, first: int, count: int, threads: int = 8) -> list[str]:
    """Echoes with a few bodies, misses, streams and bad requests mixed in."""

    def one(number: int) -> str | None:
        kind = number % 10
        try:
            if kind == 7:
                status = server.request("POST", f"/body?token=m{number}", b"y" * 2000).status
                return None if status == 200 else f"{number}: body {status}"
            if kind == 8:
                status = server.request("GET", f"/missing/{number}").status
                return None if status == 404 else f"{number}: miss {status}"
            if kind == 9:
                status = server.request("GET", "/echo?pause=nope").status
                return None if status == 400 else f"{number}: bad {status}"
            answer = echo(server, f"m{number}")
            return None if answer["controller"] == f"m{number}" else f"{number}: {answer}"
        except Exception as ex:
            return f"{number}: {type(ex).__name__}: {ex}"

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [wrong for wrong in pool.map(one, range(first, first + count)) if wrong]


@pytest.mark.timeout(150)
def test_worker_memory_is_flat_between_1000_and_10000_requests(sync_server):
    workers = sync_server.workers()
    assert mixed_requests(sync_server, 0, 1000) == []
    before = {pid: rss(pid) for pid in workers}
    assert mixed_requests(sync_server, 1000, 9000) == []
    after = {pid: rss(pid) for pid in workers}
    assert sync_server.workers() == workers  # the same processes were measured twice
    growth = {pid: (after[pid] - before[pid]) / MB for pid in workers}
    assert all(grown < 10 for grown in growth.values()), growth
