"""Listener hooks over HTTP (after Gateleen's ListenerHook integration tests): registration,
matching, before/after, the durable queues' guarantees (FIFO per queue, retries, at least once,
expiry), the queueing strategies, Gateleen's "deadlock" scenario and loop detection.

Copies go to a real receiving server on 127.0.0.1 (``tests/receivers.py``) or to a path of the
app itself (delivered in process). The tests about the queues run on SQLite and on a real
redis-server (``tests/redis_server.py``: skipped when it is missing, failed under
``WORKFLOWHTTP_REQUIRE_REDIS=1``). Leases and retry delays are short; every wait is bounded.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pytest

from tests.receivers import Receiver, receiver
from tests.redis_server import RedisServer, running
from workflowhttp import App, HttpEvent, http
from workflowhttp.hooks import Hooks
from workflowhttp.hooks.storage import SQLiteStorage
from workflowhttp.params import Body, Query
from workflowhttp.stream import Stream
from workflowhttp.stream.events import HookDelivered
from workflowhttp.testing import TestClient

#: What makes the deliverer fast enough for tests (seconds).
FAST: dict[str, Any] = {
    "lease": 1.0,
    "retry_delay": 0.02,
    "max_retry_delay": 0.1,
    "poll_interval": 0.02,
}
WAIT = 5.0  # seconds any expected delivery may take to arrive
QUIET = 0.3  # seconds we watch for a delivery that must not come


# -- the app ----------------------------------------------------------------------------------


@dataclass
class Seen:
    """What the app's own routes received: the hooked resources' controller (``data``), the
    local destinations (``sink``) and the loop test's resources (``loop``)."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    probe: Callable[[], Any] | None = None  # run inside the data controller, result recorded

    def add(self, where: str, event: HttpEvent, body: bytes, **more: Any) -> None:
        environ = event.environ
        headers = {
            key[5:].lower().replace("_", "-"): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        with self.lock:
            self.requests.append(
                {
                    "where": where,
                    "method": environ["REQUEST_METHOD"],
                    "path": environ.get("PATH_INFO"),
                    "query": environ.get("QUERY_STRING", ""),
                    "headers": headers,
                    "body": body,
                    "remote_addr": environ.get("REMOTE_ADDR"),
                    **more,
                }
            )

    def of(self, where: str) -> list[dict[str, Any]]:
        with self.lock:
            return [request for request in self.requests if request["where"] == where]

    def wait_for(self, where: str, count: int, timeout: float = WAIT) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.of(where)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                shown = [(r["method"], r["path"], r["query"]) for r in found]
                raise AssertionError(f"expected {count} at {where}, got {len(found)}: {shown}")
            time.sleep(0.01)


class Outcomes:
    """A stream processor keeping the deliverer's HookDelivered events."""

    events = (HookDelivered,)

    def __init__(self, kept: list[HookDelivered]) -> None:
        self.kept = kept

    def process(self, event: Any) -> None:
        self.kept.append(event)

    def shutdown(self) -> None:
        pass


def make_app(storage: Any, seen: Seen, *, stream: Stream | None = None, **options: Any) -> App:
    """The app under test: ``/data/...`` (the hooked resources; ``?status=`` sets the
    answer), ``/sink/...`` (a local destination) and ``/loop/...`` (the loop test's)."""

    @http.ANY("/data/{rest:path}")
    def data(
        event: HttpEvent,
        rest: str,
        body: Annotated[bytes, Body()] = b"",
        status: Annotated[int, Query()] = 200,
    ) -> tuple[dict[str, Any], int]:
        probed = seen.probe() if seen.probe is not None else None
        seen.add("data", event, body, probed=probed)
        return {"served": rest}, status

    @http.ANY("/sink/{rest:path}")
    def sink(event: HttpEvent, rest: str, body: Annotated[bytes, Body()] = b"") -> dict[str, str]:
        seen.add("sink", event, body)
        return {"sink": rest}

    @http.ANY("/loop/{rest:path}")
    def loop(event: HttpEvent, rest: str, body: Annotated[bytes, Body()] = b"") -> dict[str, str]:
        seen.add("loop", event, body)
        return {"loop": rest}

    hooks = Hooks(storage=storage, **{**FAST, **options})
    return App(controllers=[data, sink, loop], extensions=[hooks], stream=stream)


def listen(
    client: TestClient, resource: str, id: str, spec: dict[str, Any], **headers: str
) -> dict[str, Any]:
    """Register a listener; return the answer's JSON (asserting a 200)."""
    answer = client.put(f"{resource}/_hooks/listeners/http/{id}", json=spec, headers=headers)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json
    return result


def queue_key(name: str) -> list[dict[str, str]]:
    """The header rule marking a listener's copies for the receiver's overlap detector."""
    return [{"header": "x-test-queue", "value": name}]


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def sink() -> Iterator[Receiver]:
    with receiver() as started:
        yield started


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def client(tmp_path: Path, sink: Receiver, seen: Seen) -> Iterator[TestClient]:
    """The app on SQLite, allowed to deliver to ``sink``."""
    app = make_app(f"sqlite:///{tmp_path}/hooks.db", seen, allowed_destinations=[sink.url])
    with TestClient(app) as started:
        yield started


@dataclass
class Backend:
    name: str
    url: str
    server: RedisServer | None


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path}/hooks.db", None)
        return
    with running(tmp_path / "redis") as server:
        yield Backend("redis", server.url, server)


@pytest.fixture
def on_backend(backend: Backend, sink: Receiver, seen: Seen) -> Iterator[TestClient]:
    """The app on each backend, allowed to deliver to ``sink``."""
    app = make_app(backend.url, seen, allowed_destinations=[sink.url])
    with TestClient(app) as started:
        yield started


# -- registration -----------------------------------------------------------------------------


def test_a_registration_answers_its_description(client, sink):
    spec = {"destination": f"{sink.url}/orders", "methods": ["PUT"], "type": "after"}
    answer = listen(client, "/data/orders", "audit", spec)
    assert answer["resource"] == "/data/orders"
    assert answer["id"] == "audit"
    assert answer["name"] == "data+orders+audit"
    assert answer["queue"] == "listener-hook-data+orders+audit"
    assert answer["destination"] == f"{sink.url}/orders"
    assert answer["methods"] == ["PUT"]
    assert answer["type"] == "after"
    assert answer["expires"].endswith("Z")


def test_show_counts_the_queue_and_the_listing_filters_by_destination(client, sink):
    listen(client, "/data/a", "one", {"destination": f"{sink.url}/one"})
    listen(client, "/data/b", "two", {"destination": "/sink/two"})
    sink.answer(500)  # nothing leaves the queue
    for n in range(3):
        assert client.put(f"/data/a/{n}", data=b"x").status_code == 200
    shown = client.get("/data/a/_hooks/listeners/http/one")
    assert shown.status_code == 200, shown.text
    assert shown.json["queueLength"] == 3
    assert shown.json["oldestQueuedSeconds"] is not None
    assert client.get("/data/b/_hooks/listeners/http/two").json["queueLength"] == 0
    everything = client.get("/_hooks/listeners").json["listeners"]
    assert [(e["resource"], e["id"]) for e in everything] == [
        ("/data/a", "one"),
        ("/data/b", "two"),
    ]
    found = client.get("/_hooks/listeners", query_string={"q": "/sink/"}).json["listeners"]
    assert [e["id"] for e in found] == ["two"]
    assert client.get("/_hooks/listeners", query_string={"q": "nowhere"}).json == {"listeners": []}


def test_delete_removes_the_listener_then_answers_404(client, sink):
    listen(client, "/data/a", "one", {"destination": f"{sink.url}/one"})
    assert client.delete("/data/a/_hooks/listeners/http/one").status_code == 200
    again = client.delete("/data/a/_hooks/listeners/http/one")
    assert again.status_code == 404
    assert again.json["message"]
    assert client.get("/data/a/_hooks/listeners/http/one").status_code == 404
    assert client.put("/data/a/1", data=b"x").status_code == 200
    time.sleep(QUIET)
    assert sink.snapshot() == []  # no longer hooked


def test_requests_pass_the_listener_trigger_only_while_a_listener_is_registered(
    tmp_path, sink, seen
):
    """PERF: without listener hooks, ``controller`` runs no hooks listener at all (it is
    subscribed when the first listener hook is registered, here or by another worker, and
    dropped with the last), and the copies still come as soon as one is registered."""
    url = f"sqlite:///{tmp_path}/hooks.db"
    here = make_app(url, seen, allowed_destinations=[sink.url])
    there = make_app(url, seen, allowed_destinations=[sink.url])
    with TestClient(here) as client, TestClient(there) as other:
        assert triggers(here) == triggers(there) == 0
        listen(client, "/data/a", "one", {"destination": f"{sink.url}/one"})
        assert triggers(here) == 1
        # The other app subscribes when its registry thread sees the registration.
        deadline = time.monotonic() + WAIT
        while triggers(there) == 0:
            assert time.monotonic() < deadline, "the other app never subscribed"
            time.sleep(0.02)
        assert other.put("/data/a/1", data=b"x").status_code == 200
        sink.wait_for(1, WAIT)
        assert client.delete("/data/a/_hooks/listeners/http/one").status_code == 200
        assert triggers(here) == 0


def triggers(app: App) -> int:
    """How many of the app's ``controller`` listeners are the hooks' (bound to a Hooks)."""
    return sum(isinstance(getattr(f, "__self__", None), Hooks) for f in app.listeners("controller"))


INVALID = [
    ("unknown-property", {"destination": "/sink", "bogus": 1}, "bogus"),
    ("missing-destination", {"methods": ["PUT"]}, "destination"),
    ("method-unknown", {"destination": "/sink", "methods": ["PUT", "TRACE"]}, "methods.1"),
    ("filter-bad-regex", {"destination": "/sink", "filter": "/data/(a"}, "filter"),
    (
        "headers-filter-bad-regex",
        {"destination": "/sink", "headersFilter": "(a)\\1"},
        "headersFilter",
    ),
    ("destination-inside-resource", {"destination": "/data/a/b"}, "destination"),
    ("destination-is-resource", {"destination": "/data/a"}, "destination"),
    ("external-not-allowed", {"destination": "http://127.0.0.1:1/x"}, "destination"),
    ("type-unknown", {"destination": "/sink", "type": "during"}, "type"),
    (
        "reduced-propagation-without-interval",
        {"destination": "/sink", "queueingStrategy": {"type": "reducedPropagation"}},
        "queueingStrategy.intervalMs",
    ),
    (
        "strategy-unknown",
        {"destination": "/sink", "queueingStrategy": {"type": "sometimes"}},
        "queueingStrategy.type",
    ),
    ("expire-after-zero", {"destination": "/sink", "queueExpireAfter": 0}, "queueExpireAfter"),
]


@pytest.mark.parametrize(
    ("spec", "where"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_an_invalid_listener_is_a_400_with_the_reason(client, sink, spec, where):
    answer = client.put("/data/a/_hooks/listeners/http/one", json=spec)
    assert answer.status_code == 400, answer.text
    assert answer.json["message"]
    assert [error["path"] for error in answer.json["errors"]] == [where], answer.json
    assert client.get("/_hooks/listeners").json == {"listeners": []}


@pytest.mark.parametrize("id", ["a:b", "a+b", "a%20b", "%C3%A9", "a" * 129], ids=str)
def test_a_bad_listener_id_is_a_400(client, id):
    answer = client.put(f"/data/a/_hooks/listeners/http/{id}", json={"destination": "/sink"})
    assert answer.status_code == 400, answer.text
    assert [error["path"] for error in answer.json["errors"]] == ["id"]
    assert client.get("/_hooks/listeners").json == {"listeners": []}


# -- matching ---------------------------------------------------------------------------------


def test_one_listener_gets_the_method_suffix_query_body_and_header_rules(client, sink):
    rules = [
        {"header": "x-added", "value": "yes"},
        {"header": "x-copied", "value": "from-{x-origin}"},
        {"header": "x-secret"},  # removed
    ]
    listen(client, "/data/orders", "audit", {"destination": f"{sink.url}/in", "headers": rules})
    headers = {"X-Origin": "shop", "X-Secret": "s3cret", "Content-Type": "application/json"}
    answer = client.post("/data/orders/7/items?x=1&y=%C3%A9", data=b'{"n":1}', headers=headers)
    assert answer.status_code == 200, answer.text
    (copy,) = sink.wait_for(1, WAIT)
    assert copy["method"] == "POST"
    assert copy["path"] == "/in/7/items"
    assert copy["query"] == "x=1&y=%C3%A9"
    assert copy["body"] == b'{"n":1}'
    assert copy["headers"]["content-length"] == "7"
    assert copy["headers"]["content-type"] == "application/json"
    assert copy["headers"]["x-added"] == "yes"
    assert copy["headers"]["x-copied"] == "from-shop"
    assert "x-secret" not in copy["headers"]
    assert "x-queue" not in copy["headers"]


def test_full_url_delivers_to_the_exact_destination(client, sink):
    listen(client, "/data/orders", "audit", {"destination": f"{sink.url}/in", "fullUrl": True})
    client.put("/data/orders/7?x=1", data=b"x")
    (copy,) = sink.wait_for(1, WAIT)
    assert (copy["path"], copy["query"]) == ("/in", "x=1")


def test_two_listeners_on_one_resource_both_get_a_copy(client, sink):
    listen(client, "/data/a", "one", {"destination": f"{sink.url}/one"})
    listen(client, "/data/a", "two", {"destination": f"{sink.url}/two"})
    client.put("/data/a/1", data=b"x")
    copies = sink.wait_for(2, WAIT)
    assert sorted(copy["path"] for copy in copies) == ["/one/1", "/two/1"]
    time.sleep(QUIET)
    assert len(sink.snapshot()) == 2


def test_parent_and_child_listeners_both_match_a_child_path_and_a_sibling_neither(client, sink):
    listen(client, "/data/a", "parent", {"destination": f"{sink.url}/parent"})
    listen(client, "/data/a/b", "child", {"destination": f"{sink.url}/child"})
    client.put("/data/a/b/c", data=b"x")
    copies = sink.wait_for(2, WAIT)
    assert sorted(copy["path"] for copy in copies) == ["/child/c", "/parent/b/c"]
    client.put("/data/a/x", data=b"x")  # under the parent only
    copies = sink.wait_for(3, WAIT)
    assert copies[2]["path"] == "/parent/x"
    client.put("/data/ab/c", data=b"x")  # a sibling of /data/a: neither
    client.put("/data/c", data=b"x")
    time.sleep(QUIET)
    assert len(sink.snapshot()) == 3


@pytest.mark.parametrize(
    ("spec", "requests", "expected"),
    [
        (
            {"filter": ".*/orders/[0-9]+"},
            [("PUT", "/data/shop/orders/1", {}), ("PUT", "/data/shop/orders/x", {})],
            ["/in/orders/1"],
        ),
        (
            {"filter": ".*[?]notify=1"},
            [("PUT", "/data/shop/a?notify=1", {}), ("PUT", "/data/shop/b?notify=0", {})],
            ["/in/a"],
        ),
        (
            {"headersFilter": "x-tenant: (acme|globex)"},
            [
                ("PUT", "/data/shop/a", {"X-Tenant": "acme"}),
                ("PUT", "/data/shop/b", {"X-Tenant": "initech"}),
                ("PUT", "/data/shop/c", {}),
            ],
            ["/in/a"],
        ),
        (
            {"methods": ["PUT", "DELETE"]},
            [
                ("PUT", "/data/shop/a", {}),
                ("POST", "/data/shop/b", {}),
                ("DELETE", "/data/shop/c", {}),
            ],
            ["/in/a", "/in/c"],
        ),
    ],
    ids=["filter-path", "filter-query", "headers-filter", "methods"],
)
def test_filter_headers_filter_and_methods_choose_the_requests(
    client, sink, spec, requests, expected
):
    listen(client, "/data/shop", "one", {"destination": f"{sink.url}/in", **spec})
    for method, path, headers in requests:
        assert client.open(path, method=method, data=b"x", headers=headers).status_code == 200
    copies = sink.wait_for(len(expected), WAIT)
    time.sleep(QUIET)
    assert [copy["path"] for copy in sink.snapshot()] == expected
    assert len(copies) == len(expected)


# -- before and after -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["before", "after"])
def test_an_after_copy_is_queued_only_once_the_request_answered(client, sink, seen, kind):
    listen(client, "/data/a", "one", {"destination": f"{sink.url}/one", "type": kind})

    def watch() -> int:  # inside the controller: does the receiver get the copy meanwhile?
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and not sink.snapshot():
            time.sleep(0.01)
        return len(sink.snapshot())

    seen.probe = watch
    assert client.put("/data/a/1", data=b"x").status_code == 200
    answered = time.monotonic()
    seen.probe = None
    (probed,) = [request["probed"] for request in seen.of("data")]
    (copy,) = sink.wait_for(1, WAIT)
    if kind == "before":
        assert probed == 1  # queued on entering the controller: delivered while it runs
    else:
        assert probed == 0  # nothing before the controller answered...
        assert copy["at"] >= answered - 0.05  # ...and only once the response was done


@pytest.mark.parametrize("status", [404, 500, 302])
def test_an_after_listener_queues_nothing_for_an_answer_other_than_2xx(client, sink, status):
    listen(client, "/data/a", "one", {"destination": f"{sink.url}/one", "type": "after"})
    assert client.put(f"/data/a/1?status={status}", data=b"x").status_code == status
    assert client.put("/data/a/2?status=201", data=b"x").status_code == 201
    (copy,) = sink.wait_for(1, WAIT)
    assert copy["path"] == "/one/2"
    time.sleep(QUIET)
    assert len(sink.snapshot()) == 1


def test_a_before_listener_queues_a_request_whatever_its_answer(client, sink):
    listen(client, "/data/a", "one", {"destination": f"{sink.url}/one"})
    assert client.put("/data/a/1?status=500", data=b"x").status_code == 500
    (copy,) = sink.wait_for(1, WAIT)
    assert copy["path"] == "/one/1"


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_failing_enqueue_is_a_503_and_the_controller_does_not_run(tmp_path, sink, seen, kind):
    if kind == "sqlite":
        path = tmp_path / "hooks.db"
        storage: Any = SQLiteStorage(f"sqlite:///{path}", busy_timeout=0.2)
        with TestClient(make_app(storage, seen, allowed_destinations=[sink.url])) as client:
            listen(client, "/data/a", "one", {"destination": f"{sink.url}/one"})
            # Another process holds the write lock: the enqueue cannot commit.
            other = sqlite3.connect(path, isolation_level=None)
            try:
                other.execute("BEGIN EXCLUSIVE")
                _assert_refused(client, seen)
            finally:
                other.close()
            _assert_served_again(client, sink, seen)
        return
    with (
        running(tmp_path / "redis") as server,
        TestClient(make_app(server.url, seen, allowed_destinations=[sink.url])) as client,
    ):
        listen(client, "/data/a", "one", {"destination": f"{sink.url}/one"})
        assert server.command(b"SAVE").startswith(b"+OK")  # the listener outlives the restart
        server.stop()
        _assert_refused(client, seen)
        server.start()
        _assert_served_again(client, sink, seen)


def _assert_refused(client: TestClient, seen: Seen) -> None:
    answer = client.put("/data/a/1", data=b"x")
    assert answer.status_code == 503, answer.text
    assert answer.json["message"]
    assert seen.of("data") == []  # the controller did not run
    assert client.get("/data/b").status_code == 200  # an unhooked path is served meanwhile


def _assert_served_again(client: TestClient, sink: Receiver, seen: Seen) -> None:
    deadline = time.monotonic() + WAIT
    while (answer := client.put("/data/a/2", data=b"x")).status_code == 503:
        assert time.monotonic() < deadline, "the storage never came back"
        time.sleep(0.05)
    assert answer.status_code == 200, answer.text
    (copy,) = sink.wait_for(1, WAIT)
    assert copy["path"] == "/one/2"  # the refused request left no copy behind
    assert [request["path"] for request in seen.of("data")][-1] == "/data/a/2"


# -- the queues -------------------------------------------------------------------------------


def test_fifo_per_queue_under_8_concurrent_writers(on_backend, sink):
    client = on_backend
    spec = {"destination": f"{sink.url}/in", "headers": queue_key("fifo")}
    listen(client, "/data/a", "one", spec)
    sink.delay(0.002)  # a delivery takes a moment: overlapping ones would show
    writers, each = 8, 10
    failures: list[Any] = []

    def write(writer: int) -> None:
        mine = TestClient(client.app_under_test)  # the same app, not started again
        for sequence in range(each):
            answer = mine.put(f"/data/a/{writer}?seq={sequence}", data=f"{writer}:{sequence}")
            if answer.status_code != 200:
                failures.append(answer.status_code)

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
    assert failures == []
    copies = sink.wait_for(writers * each, WAIT * 2)
    assert len(copies) == writers * each
    for writer in range(writers):
        mine = [copy["body"] for copy in copies if copy["path"] == f"/in/{writer}"]
        assert mine == [f"{writer}:{sequence}".encode() for sequence in range(each)]
    assert sink.max_in_flight("fifo") == 1  # one item in flight per queue


def test_retries_keep_the_order_until_a_failing_receiver_recovers(on_backend, sink):
    client = on_backend
    listen(client, "/data/a", "one", {"destination": f"{sink.url}/in"})
    sink.fail_next(5)
    for n in range(5):
        assert client.put(f"/data/a/{n}", data=f"item {n}").status_code == 200
    copies = sink.wait_for(10, WAIT)
    time.sleep(QUIET)
    copies = sink.snapshot()
    assert [copy["body"] for copy in copies] == [b"item 0"] * 6 + [
        f"item {n}".encode() for n in range(1, 5)
    ]
    assert [copy["status"] for copy in copies] == [500] * 5 + [200] * 5
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(copies[:6])]
    assert all(gap >= FAST["retry_delay"] * 0.8 for gap in gaps), gaps  # retries wait


def test_a_retry_of_one_queue_does_not_block_another(client, sink):
    listen(client, "/data/a", "slow", {"destination": f"{sink.url}/slow"})
    listen(client, "/data/b", "fine", {"destination": f"{sink.url}/fine"})
    sink.fail_next(1, 503)
    client.put("/data/a/1", data=b"x")  # its first delivery fails
    sink.wait_for(1, WAIT)
    client.put("/data/b/1", data=b"x")
    copies = sink.wait_for(3, WAIT)
    assert sorted(copy["path"] for copy in copies) == ["/fine/1", "/slow/1", "/slow/1"]


@pytest.mark.parametrize("status", [409, 200, 204])
def test_409_and_2xx_count_as_delivered(client, sink, status):
    listen(client, "/data/a", "one", {"destination": f"{sink.url}/in"})
    sink.answer(status)
    for n in range(3):
        client.put(f"/data/a/{n}", data=b"x")
    sink.wait_for(3, WAIT)
    time.sleep(QUIET)
    assert [copy["path"] for copy in sink.snapshot()] == ["/in/0", "/in/1", "/in/2"]
    assert client.get("/data/a/_hooks/listeners/http/one").json["queueLength"] == 0


@pytest.mark.parametrize(
    ("rule", "status", "retried"),
    [
        ("x-queue-retry-4xx", 404, False),
        ("x-queue-retry-404", 404, False),
        ("x-queue-retry-404", 400, True),
        ("x-queue-retry-5xx", 503, False),
        ("x-queue-retry-4xx", 503, True),
    ],
    ids=["4xx-404", "404-404", "404-400", "5xx-503", "4xx-503"],
)
def test_x_queue_retry_0_gives_up_on_those_statuses(client, sink, rule, status, retried):
    headers = [{"header": rule, "value": "0"}]
    listen(client, "/data/a", "one", {"destination": f"{sink.url}/in", "headers": headers})
    sink.fail_next(1, status)
    client.put("/data/a/1", data=b"x")
    client.put("/data/a/2", data=b"x")
    copies = sink.wait_for(3 if retried else 2, WAIT)
    time.sleep(QUIET)
    copies = sink.snapshot()
    expected = ["/in/1", "/in/1", "/in/2"] if retried else ["/in/1", "/in/2"]
    assert [copy["path"] for copy in copies] == expected
    assert rule not in copies[0]["headers"]  # the rule is the queue's, not the receiver's


def test_queue_expire_after_drops_an_old_item_and_counts_it(tmp_path, backend, sink, seen):
    kept: list[HookDelivered] = []
    stream = Stream(lambda: Outcomes(kept))
    app = make_app(backend.url, seen, stream=stream, allowed_destinations=[sink.url])
    with TestClient(app) as client:
        listen(client, "/data/a", "old", {"destination": f"{sink.url}/old", "queueExpireAfter": 1})
        listen(client, "/data/b", "kept", {"destination": f"{sink.url}/kept"})
        sink.answer(500)
        client.put("/data/a/1", data=b"x")
        client.put("/data/b/1", data=b"x")
        sink.wait_for(4, WAIT)  # both retried a few times
        time.sleep(1.2)  # the first one expires meanwhile
        sink.answer(200)
        client.put("/data/a/2", data=b"x")  # queued after the expiry: delivered
        deadline = time.monotonic() + WAIT
        while not any(e.outcome == "expired" for e in kept):
            assert time.monotonic() < deadline, kept
            assert stream.flush()
            time.sleep(0.02)
        delivered = [c["path"] for c in sink.wait_for(1, WAIT) if c["status"] == 200]
        deadline = time.monotonic() + WAIT
        while sorted(set(delivered)) != ["/kept/1", "/old/2"]:
            assert time.monotonic() < deadline, delivered
            time.sleep(0.02)
            delivered = [c["path"] for c in sink.snapshot() if c["status"] == 200]
        assert stream.flush()
        expired = [e for e in kept if e.outcome == "expired"]
        assert [e.queue for e in expired] == ["listener-hook-data+a+old"]
        assert delivered.count("/kept/1") == 1  # the one without expiry was kept and delivered
        assert "/old/1" not in delivered


# -- queueing strategies ----------------------------------------------------------------------


def test_discard_payload_delivers_without_the_body(client, sink):
    spec = {"destination": f"{sink.url}/in", "queueingStrategy": {"type": "discardPayload"}}
    listen(client, "/data/a", "one", spec)
    answer = client.put("/data/a/1?x=1", data=b"a body", headers={"X-Trace": "t"})
    assert answer.status_code == 200
    (copy,) = sink.wait_for(1, WAIT)
    assert (copy["method"], copy["path"], copy["query"]) == ("PUT", "/in/1", "x=1")
    assert copy["body"] == b""
    assert copy["headers"]["content-length"] == "0"
    assert copy["headers"]["x-trace"] == "t"


def test_discard_payload_still_lets_the_controller_read_the_body(client, sink, seen):
    spec = {"destination": f"{sink.url}/in", "queueingStrategy": {"type": "discardPayload"}}
    listen(client, "/data/a", "one", spec)
    listen(client, "/data/a", "two", {"destination": f"{sink.url}/two"})  # with payload
    client.put("/data/a/1", data=b"a body")
    assert seen.of("data")[0]["body"] == b"a body"
    copies = sink.wait_for(2, WAIT)
    bodies = {copy["path"]: copy["body"] for copy in copies}
    assert bodies == {"/in/1": b"", "/two/1": b"a body"}


def test_reduced_propagation_delivers_one_payloadless_copy_per_interval(on_backend, sink):
    client = on_backend
    interval = 0.6
    spec = {
        "destination": f"{sink.url}/in",
        "queueingStrategy": {"type": "reducedPropagation", "intervalMs": int(interval * 1000)},
    }
    listen(client, "/data/a", "one", spec)
    started = time.monotonic()
    for n in range(20):
        assert client.put(f"/data/a/{n}", data=b"payload").status_code == 200
    assert time.monotonic() - started < interval  # all within one interval
    (copy,) = sink.wait_for(1, WAIT)
    assert copy["body"] == b""
    assert copy["headers"]["content-length"] == "0"
    assert copy["at"] - started >= interval * 0.9  # held back for the interval
    time.sleep(interval + QUIET)
    assert len(sink.snapshot()) == 1  # the other 19 were folded into it
    client.put("/data/a/late", data=b"payload")  # a change after the interval
    copies = sink.wait_for(2, WAIT)
    assert copies[1]["body"] == b""
    time.sleep(QUIET)
    assert len(sink.snapshot()) == 2


# -- Gateleen's scenarios ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["external", "local"])
def test_100_repeated_puts_on_a_hooked_resource_are_all_answered_and_delivered(
    on_backend, sink, seen, where
):
    # Gateleen's "deadlock" test: a burst of PUTs on one hooked resource must neither block
    # the requests nor lose copies.
    client = on_backend
    destination = f"{sink.url}/in" if where == "external" else "/sink/in"
    listen(client, "/data/a", "one", {"destination": destination})
    for n in range(100):
        answer = client.put("/data/a/same", data=f"version {n}")
        assert answer.status_code == 200, answer.text
    if where == "external":
        copies = sink.wait_for(100, WAIT * 2)
        bodies = [copy["body"] for copy in copies]
    else:
        copies = seen.wait_for("sink", 100, WAIT * 2)
        bodies = [copy["body"] for copy in copies]
    assert bodies == [f"version {n}".encode() for n in range(100)]


def test_two_listeners_delivering_to_each_others_resources_stop_after_one_round(client, seen):
    listen(client, "/loop/a", "to-b", {"destination": "/loop/b"})
    listen(client, "/loop/b", "to-a", {"destination": "/loop/a"})
    assert client.put("/loop/a/x", data=b"start").status_code == 200
    arrived = seen.wait_for("loop", 3, WAIT)
    time.sleep(QUIET * 2)
    arrived = seen.of("loop")
    assert [request["path"] for request in arrived] == ["/loop/a/x", "/loop/b/x", "/loop/a/x"]
    assert [request["body"] for request in arrived] == [b"start"] * 3


def test_a_local_delivery_is_the_original_clients_request(client, seen):
    listen(client, "/data/a", "one", {"destination": "/sink/in"})
    client.put(
        "/data/a/1?q=2",
        data=b"x",
        headers={"X-Origin": "shop"},
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )
    (copy,) = seen.wait_for("sink", 1, WAIT)
    assert (copy["method"], copy["path"], copy["query"]) == ("PUT", "/sink/in/1", "q=2")
    assert copy["headers"]["x-origin"] == "shop"
    assert copy["remote_addr"] == "203.0.113.9"
