"""The proxy, against real upstream servers on 127.0.0.1 (never a mock of the HTTP client)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from tests.upstreams import faulty, refused_url, upstream
from workflowhttp import App, HttpEvent, Limits, Response, http, http_workflow
from workflowhttp.proxy import Proxy, ProxyEvent, proxy_workflow
from workflowhttp.stream import Stream
from workflowhttp.testing import TestClient

MiB = 1024 * 1024


@pytest.fixture
def origin() -> Iterator[Any]:
    with upstream() as server:
        yield server


def proxy_client(*upstreams: str, **options: Any) -> tuple[App, TestClient]:
    limits = options.pop("limits", None)
    app_options = {"limits": limits} if limits else {}
    proxy = Proxy("/api", list(upstreams), name="api", **options)
    app = App(controllers=[proxy], **app_options)
    return app, TestClient(app)


# -- forwarding ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_passes_with_its_query_and_body(origin, method):
    _, client = proxy_client(origin.url)
    body = b"" if method in ("GET", "OPTIONS") else b'{"a": 1}'
    answer = client.open(
        "/api/echo/x%20y/z?b=2&a=1&a=%C3%A9",
        method=method,
        data=body,
        content_type="application/json" if body else None,
    )
    assert answer.status_code == 200, answer.text
    echo = answer.json
    assert echo["method"] == method
    assert echo["path"] == "/echo/x%20y/z"  # below the base path, percent-encoding kept
    assert echo["query"] == "b=2&a=1&a=%C3%A9"
    assert echo["body"] == body.decode()
    if body:
        assert echo["headers"]["content-type"] == "application/json"


def test_head_is_forwarded_without_a_body(origin):
    _, client = proxy_client(origin.url)
    answer = client.head("/api/large?size=1000")
    assert answer.status_code == 200
    assert answer.headers["Content-Length"] == "1000"
    assert answer.data == b""
    assert origin.requests[-1]["method"] == "HEAD"


def test_the_base_path_itself_is_proxied(origin):
    _, client = proxy_client(origin.url)
    assert client.get("/api").json["path"] == "/"
    assert client.get("/api/").json["path"] == "/"


def test_an_upstream_with_a_path_prefixes_it(origin):
    _, client = proxy_client(origin.url + "/echo/base")
    assert client.get("/api/more?q=1").json["path"] == "/echo/base/more"


def test_upstream_statuses_and_repeated_headers_come_back(origin):
    _, client = proxy_client(origin.url)
    assert client.get("/api/status/418").status_code == 418
    assert client.get("/api/status/204").status_code == 204
    hop = client.get("/api/hop")
    assert hop.headers.getlist("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]


def test_the_routes_carry_the_name_and_the_proxy_group(origin):
    app, client = proxy_client(origin.url)
    seen: list[tuple[str, tuple[str, ...]]] = []

    @app.listen(http_workflow.on_auth)
    def look(event: HttpEvent) -> None:
        seen.append((event.route.name, event.route.groups))

    client.get("/api")
    client.get("/api/echo")
    assert seen == [("api", ("proxy",)), ("api", ("proxy",))]


def test_an_auth_listener_guards_the_proxy(origin):
    app, client = proxy_client(origin.url)

    @app.listen(http_workflow.on_auth)
    def guard(event: HttpEvent) -> None:
        if "proxy" in event.route.groups and "HTTP_X_KEY" not in event.environ:
            event.access_denied()

    assert client.get("/api/echo").status_code == 403
    assert origin.requests == []
    assert client.get("/api/echo", headers={"X-Key": "1"}).status_code == 200


# -- headers ---------------------------------------------------------------------------------


def test_hop_by_hop_headers_are_dropped_both_ways(origin):
    _, client = proxy_client(origin.url)
    answer = client.get(
        "/api/echo",
        headers={
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "secret",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Upgrade": "websocket",
            "Proxy-Authorization": "Basic abc",
            "X-Keep": "kept",
        },
    )
    sent = answer.json["headers"]
    for name in ("x-drop-me", "keep-alive", "te", "upgrade", "proxy-authorization"):
        assert name not in sent, name
    assert sent["x-keep"] == "kept"
    hop = client.get("/api/hop")
    assert hop.headers["X-Public"] == "yes"
    for name in ("X-Private", "Keep-Alive", "Proxy-Authenticate", "Upgrade"):
        assert name not in hop.headers, name


def test_forwarded_headers_are_set_and_a_clients_chain_is_not_trusted(origin):
    _, client = proxy_client(origin.url)
    answer = client.get(
        "/api/echo",
        headers={"X-Forwarded-For": "6.6.6.6", "Host": "shop.example"},
        environ_base={"REMOTE_ADDR": "10.1.2.3"},
    )
    sent = answer.json["headers"]
    assert sent["x-forwarded-for"] == "10.1.2.3"  # SECURITY: the forged chain is gone
    assert sent["x-forwarded-proto"] == "http"
    assert sent["x-forwarded-host"] == "shop.example"
    assert sent["host"] == origin.url.removeprefix("http://")


def test_a_trusted_chain_is_extended(origin):
    proxy = Proxy("/api", origin.url)
    client = TestClient(App(controllers=[proxy], proxy_hops=1))
    answer = client.get(
        "/api/echo",
        headers={"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https"},
        environ_base={"REMOTE_ADDR": "10.0.0.1"},
    )
    sent = answer.json["headers"]
    assert sent["x-forwarded-for"] == "1.2.3.4, 10.0.0.1"
    assert sent["x-forwarded-proto"] == "https"


def test_preserve_host_sends_the_clients_host(origin):
    _, client = proxy_client(origin.url, preserve_host=True)
    sent = client.get("/api/echo", headers={"Host": "shop.example"}).json["headers"]
    assert sent["host"] == "shop.example"


def test_tags_go_to_the_transaction_and_not_upstream(origin):
    app, client = proxy_client(origin.url)
    tags: list[dict[str, str]] = []

    @app.listen(proxy_workflow.on_transaction_ended)
    def remember(event: ProxyEvent) -> None:
        tags.append(dict(event.transaction.tags))

    sent = client.get("/api/echo", headers={"X-Proxy-Tag-Tenant": "acme"}).json["headers"]
    assert "x-proxy-tag-tenant" not in sent
    assert tags == [{"tenant": "acme"}]


# -- the transaction workflow ----------------------------------------------------------------

STATES = [
    "transaction_started",
    "filter_request",
    "forward",
    "upstream_error",
    "filter_response",
    "transaction_ended",
]


def record_states(app: App, seen: list[str]) -> None:
    for state in STATES:
        app.listen(state, lambda event: seen.append(event.state), priority=-5)


def test_a_forwarded_transaction_walks_every_state_in_order(origin):
    app, client = proxy_client(origin.url)
    seen: list[str] = []
    record_states(app, seen)
    assert client.get("/api/echo").status_code == 200
    assert seen == [
        "transaction_started",
        "filter_request",
        "forward",
        "filter_response",
        "transaction_ended",
    ]


@pytest.mark.parametrize("where", ["transaction_started", "filter_request"])
def test_forging_skips_forward_and_the_upstream_hears_nothing(origin, where):
    app, client = proxy_client(origin.url)
    seen: list[str] = []
    record_states(app, seen)

    @app.listen(where)
    def teapot(event: ProxyEvent) -> None:
        if event.outgoing.path.endswith("/coffee"):
            event.send(Response("I'm a teapot", status=418))

    answer = client.get("/api/coffee")
    assert (answer.status_code, answer.text) == (418, "I'm a teapot")
    assert origin.requests == []
    assert "forward" not in seen
    assert seen[-2:] == ["filter_response", "transaction_ended"]
    assert client.get("/api/echo").status_code == 200


def test_filters_run_by_priority_and_stopping_one_state_spares_the_next(origin):
    app, client = proxy_client(origin.url)
    order: list[str] = []

    @app.listen(proxy_workflow.on_filter_request, priority=5)
    def second(event: ProxyEvent) -> None:
        order.append("request-5")  # never runs: stopped at 1

    @app.listen(proxy_workflow.on_filter_request, priority=1)
    def first(event: ProxyEvent) -> None:
        order.append("request-1")
        event.outgoing.headers["X-Added"] = "by-filter"
        event.next("forward")  # stopping skips the kernel too: say where to go
        event.stop_propagation()

    @app.listen(proxy_workflow.on_filter_response)
    def response_filter(event: ProxyEvent) -> None:
        order.append("response-0")
        event.response.headers["X-Filtered"] = "yes"

    answer = client.get("/api/echo")
    assert answer.json["headers"]["x-added"] == "by-filter"
    assert answer.headers["X-Filtered"] == "yes"
    # HARP reuses one event for both filters, so stopping the first silences the second.
    assert order == ["request-1", "response-0"]


@pytest.mark.parametrize(
    ("replacement", "sent"),
    [(b"short", "short"), ("été", "été"), (None, "")],
    ids=["bytes", "str", "none"],
)
def test_a_request_filter_can_replace_the_body(origin, replacement, sent):
    app, client = proxy_client(origin.url)

    @app.listen(proxy_workflow.on_filter_request)
    def replace(event: ProxyEvent) -> None:
        event.outgoing.body = replacement

    echo = client.post("/api/echo", data=b"a much longer original body").json
    assert echo["body"] == sent.encode().decode("latin-1")
    assert echo["length"] == len(sent.encode())


def test_a_response_filter_can_rewrite_the_body(origin):
    app, client = proxy_client(origin.url)

    @app.listen(proxy_workflow.on_filter_response)
    def upper(event: ProxyEvent) -> None:
        event.response.body = event.response.body.upper()

    answer = client.get("/api/hop")
    assert answer.data == b"HOP"
    assert answer.headers["Content-Length"] == "3"


def test_an_illegal_move_in_the_proxy_workflow_is_a_clear_500(origin, caplog):
    app, client = proxy_client(origin.url)

    @app.listen(proxy_workflow.on_filter_request)
    def wrong(event: ProxyEvent) -> None:
        event.next("transaction_ended")

    with caplog.at_level(logging.ERROR):
        answer = client.get("/api/echo")
    assert answer.status_code == 500
    assert answer.json == {"message": "Internal Server Error"}
    assert "illegal transition from 'filter_request' to 'transaction_ended'" in caplog.text


def test_a_stalled_proxy_workflow_is_a_clear_500(origin, caplog):
    app, client = proxy_client(origin.url)

    @app.listen(proxy_workflow.on_filter_request)
    def stall(event: ProxyEvent) -> None:
        event.stop_propagation()

    with caplog.at_level(logging.ERROR):
        assert client.get("/api/echo").status_code == 500
    assert "workflow stalled in state 'filter_request'" in caplog.text


def test_an_http_error_raised_in_a_filter_keeps_its_status(origin):
    from workflowhttp import TooManyRequests

    app, client = proxy_client(origin.url)

    @app.listen(proxy_workflow.on_filter_request)
    def limit(event: ProxyEvent) -> None:
        raise TooManyRequests(headers={"Retry-After": "3"})

    answer = client.get("/api/echo")
    assert answer.status_code == 429
    assert origin.requests == []


# -- errors and pools ------------------------------------------------------------------------


def test_a_refused_connection_is_a_502():
    _, client = proxy_client(refused_url())
    answer = client.get("/api/echo")
    assert answer.status_code == 502
    assert answer.json == {"message": "Upstream refused the connection"}


@pytest.mark.parametrize("mode", ["garbage", "reset"])
def test_garbage_or_a_reset_before_the_answer_is_a_502(mode):
    with faulty(mode) as bad:
        _, client = proxy_client(bad.url)
        answer = client.get("/api/echo")
    assert answer.status_code == 502
    assert answer.headers["Content-Type"] == "application/json"


def test_a_reset_midway_cuts_the_clients_body(caplog):
    with faulty("reset-midway") as bad:
        _, client = proxy_client(bad.url)
        answer = client.get("/api/echo", buffered=False)
        assert answer.status_code == 200  # the status was on its way already
        with pytest.raises(Exception, match="Upstream body failed midway"):
            b"".join(answer.response)
        answer.close()


def test_a_small_body_cut_short_is_still_a_clean_502():
    # A small body of known length is read whole before anything is sent: its failure can
    # still be answered properly.
    with faulty("short-midway") as bad:
        _, client = proxy_client(bad.url)
        answer = client.get("/api/echo")
    assert answer.status_code == 502
    assert answer.json == {"message": "Upstream closed the connection midway"}


def test_a_slow_upstream_is_a_504_at_the_timeout():
    with faulty("hang") as bad:
        _, client = proxy_client(bad.url, timeout=0.3)
        answer = client.get("/api/echo")
    assert answer.status_code == 504
    assert answer.json == {"message": "Upstream did not answer in time"}


def test_all_upstreams_down_is_a_503_and_one_comes_back_after_check_after(origin):
    down = refused_url()
    app, client = proxy_client(down, check_after=0.2)
    assert client.get("/api/echo").status_code == 502  # tried and marked down
    assert client.get("/api/echo").status_code == 503  # nothing left to try
    proxy = app.routes[0].data["proxy"]
    proxy.pool.primary[0].base = origin.url  # the same upstream, now answering
    proxy.pool.primary[0].down_until = 0.0  # as after check_after
    assert client.get("/api/echo").status_code == 200


def test_round_robin_over_the_upstreams():
    with upstream() as one, upstream() as two:
        _, client = proxy_client(one.url, two.url)
        for _ in range(6):
            assert client.get("/api/echo").status_code == 200
        assert (len(one.requests), len(two.requests)) == (3, 3)


def test_an_idempotent_request_is_retried_on_the_next_upstream(origin):
    _, client = proxy_client(refused_url(), origin.url)
    assert client.get("/api/echo").status_code == 200
    assert len(origin.requests) == 1


def test_a_post_is_not_retried(origin):
    _, client = proxy_client(refused_url(), origin.url)
    assert client.post("/api/echo", data=b"x").status_code == 502
    assert origin.requests == []


def test_the_fallback_pool_serves_when_the_primary_is_down(origin):
    _, client = proxy_client(refused_url(), fallback=[origin.url])
    assert client.get("/api/echo").status_code == 200  # retried on the fallback
    assert client.get("/api/echo").status_code == 200  # primary down: fallback
    assert len(origin.requests) == 2


# -- streaming -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/chunks?n=3", "/api/sse?n=3"])
def test_the_first_chunk_arrives_before_the_upstream_finishes(origin, path):
    _, client = proxy_client(origin.url)
    answer = client.get(path, buffered=False)
    chunks = iter(answer.response)
    first = next(chunks)
    # The upstream is still waiting for `proceed` (up to 5 s) before its second chunk.
    assert not origin.proceed.is_set()
    assert first.startswith((b"chunk 0", b"data: 0"))
    origin.proceed.set()
    rest = b"".join(chunks)
    answer.close()
    assert rest.endswith((b"chunk 2\n", b"data: 2\n\n"))


def test_a_50_mb_download_and_upload_keep_memory_flat(origin):
    size = 50 * MiB
    _, client = proxy_client(origin.url, limits=Limits(max_content_length=64 * MiB))
    tracemalloc.start()
    try:
        answer = client.get(f"/api/large?size={size}", buffered=False)
        received = 0
        for chunk in answer.response:
            received += len(chunk)
        answer.close()
        download_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        upload = client.post(
            "/api/upload",
            input_stream=_Zeros(size),
            content_type="application/octet-stream",
        )
        upload_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert received == size
    assert upload.json == {"length": size, "sha256": _zeros_digest(size)}
    # Bounded, not proportional: at most a few buffers of sockets and threads (up to ~10 MiB
    # seen, for 50 and for 150 MiB bodies alike), never the body.
    assert download_peak < 16 * MiB, download_peak
    assert upload_peak < 16 * MiB, upload_peak


class _Zeros:
    """A request body of ``size`` zero bytes, made as it is read (seekable, like a file)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        left = self.size - self.position
        size = left if size < 0 else min(size, left)
        size = min(size, 64 * 1024)
        self.position += size
        return bytes(size)

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return [self.read()]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.read, b"")

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = self.size + offset if whence == 2 else offset
        return self.position


def _zeros_digest(size: int) -> str:
    digest = hashlib.sha256()
    block = bytes(64 * 1024)
    while size:
        piece = min(size, len(block))
        digest.update(block[:piece])
        size -= piece
    return digest.hexdigest()


def test_reading_the_body_beyond_max_buffer_is_a_502(origin):
    app, client = proxy_client(origin.url, max_buffer=1000)

    @app.listen(proxy_workflow.on_filter_response)
    def read(event: ProxyEvent) -> None:
        assert event.response.body

    assert client.get("/api/large?size=999").status_code == 200
    assert client.get("/api/large?size=5000").status_code == 502


# -- observability ---------------------------------------------------------------------------


class _Collect:
    def __init__(self) -> None:
        self.received: list[Any] = []
        self.lock = threading.Lock()

    def process(self, event: Any) -> None:
        with self.lock:
            self.received.append(event)

    def shutdown(self) -> None:
        pass


def test_transactions_are_sent_to_the_stream(origin):
    from workflowhttp.proxy import TransactionEnded, TransactionStarted

    collected = _Collect()
    stream = Stream(lambda: collected)
    proxy = Proxy("/api", origin.url, name="api")
    app = App(controllers=[proxy], stream=stream)

    @app.listen(proxy_workflow.on_filter_request)
    def forge(event: ProxyEvent) -> None:
        if event.outgoing.path == "/forged":
            event.send({"forged": True})

    client = TestClient(app)
    stream.start()
    try:
        assert client.get("/api/large?size=3000").status_code == 200
        assert client.get("/api/forged").json == {"forged": True}
        assert stream.flush()
    finally:
        stream.shutdown()
    # Two requests, possibly on two shards: in the order they started (ids sort by time).
    received = sorted(collected.received, key=lambda e: getattr(e, "transaction_id", ""))
    started = [e for e in received if isinstance(e, TransactionStarted)]
    ended = [e for e in received if isinstance(e, TransactionEnded)]
    assert [e.path for e in started] == ["/large?size=3000", "/forged"]
    assert [(e.status, e.forged, e.bytes) for e in ended] == [
        (200, False, 3000),
        (200, True, len(json.dumps({"forged": True}, separators=(",", ":")))),
    ]
    assert ended[0].remote == origin.url + "/large?size=3000"
    assert ended[0].upstream_seconds is not None and ended[0].upstream_seconds > 0
    assert ended[1].remote is None
    assert {e.endpoint for e in ended} == {"api"}


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        (("api", "http://127.0.0.1:1"), {}, "must start with '/'"),
        (("/api", "ftp://127.0.0.1/"), {}, "http:// or https://"),
        (("/api", []), {}, "at least one upstream"),
        (("/api", "http://127.0.0.1:1"), {"timeout": 0}, "timeout must be a positive"),
        (("/api", "http://127.0.0.1:1"), {"pool_size": 0}, "pool_size must be a positive"),
    ],
    ids=["relative-base", "ftp-upstream", "no-upstream", "zero-timeout", "zero-pool"],
)
def test_a_misconfigured_proxy_fails_when_built(args, options, message):
    from workflowhttp import ConfigurationError

    with pytest.raises(ConfigurationError, match=message):
        Proxy(*args, **options)


def test_a_proxy_sits_beside_ordinary_routes(origin):
    @http.GET("/local")
    def local() -> dict:
        return {"local": True}

    client = TestClient(App(controllers=[local, Proxy("/api", origin.url)]))
    assert client.get("/local").json == {"local": True}
    assert client.get("/api/echo").json["path"] == "/echo"
    assert client.get("/nope").status_code == 404


def test_the_metrics_processor_counts_upstream_calls_by_endpoint_and_status(origin):
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry

    from workflowhttp.stream.processors import MetricsProcessor

    registry = CollectorRegistry()
    stream = Stream(lambda: MetricsProcessor(registry))
    proxy = Proxy("/api", origin.url, name="api")
    app = App(controllers=[proxy], stream=stream)

    @app.listen(proxy_workflow.on_filter_request)
    def forge(event: ProxyEvent) -> None:
        if event.outgoing.path == "/forged":
            event.send("forged", status=202)

    client = TestClient(app)
    stream.start()
    try:
        for path in ("/api/echo", "/api/echo", "/api/status/418", "/api/forged"):
            client.get(path)
        assert stream.flush()
    finally:
        stream.shutdown()
    sample = registry.get_sample_value
    calls = "workflowhttp_upstream_requests_total"
    assert sample(calls, {"endpoint": "api", "status": "200", "forged": "false"}) == 2
    assert sample(calls, {"endpoint": "api", "status": "418", "forged": "false"}) == 1
    assert sample(calls, {"endpoint": "api", "status": "202", "forged": "true"}) == 1
    durations = "workflowhttp_upstream_duration_seconds_count"
    assert sample(durations, {"endpoint": "api"}) == 3  # the forged one called nobody
