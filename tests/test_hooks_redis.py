"""The hooks' Redis backend through HTTP, on a real redis-server (``tests/redis_server.py``).

Registration, listing and expiry (key TTLs), two apps on one Redis (pub/sub within a second,
a missed message healed by the periodic reload), corrupt values skipped and logged, and the
faults: Redis stopped, restarted (empty or with its data), frozen, or dropping connections
while the apps serve. Every wait is a bounded loop with a deadline.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import RedisServer, running
from workflowhttp import App, http
from workflowhttp.hooks import Hooks, Storage, StorageUnavailable
from workflowhttp.hooks.redis import RedisStorage
from workflowhttp.testing import TestClient

PREFIX = "workflowhttp:hooks:"
INDEX = f"{PREFIX}index"
SOON = 1.0  # the issue's bound for a change to reach every other app
CATCH_UP = 3.0  # after an outage: the registry's retry backoff (capped at 2 s) and a reload


@http.ANY("/target/{rest:path}")
def target(rest: str) -> dict[str, Any]:
    return {"target": rest, "pid": os.getpid()}


@http.GET("/plain")
def plain() -> dict[str, bool]:
    return {"plain": True}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[Any]:
    """A redis-py client on the server, for looking behind the apps' backs."""
    client = redis_server.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def serve(redis_server: RedisServer) -> Iterator[Callable[..., TestClient]]:
    """``serve(**hooks_options)``: a started app with Hooks on the server (stopped at the
    end). Without ``reload_interval`` it reloads only when told (pub/sub), every 60 s else."""
    with ExitStack() as stack:

        def make(storage: str | Storage | None = None, **options: Any) -> TestClient:
            options.setdefault("reload_interval", 60.0)
            hooks = Hooks(storage=storage or redis_server.url, **options)
            app = App(controllers=[target, plain], extensions=[hooks])
            return stack.enter_context(TestClient(app))

        yield make


def key(resource: str) -> str:
    return f"{PREFIX}hook:route::{resource}"


def register(client: TestClient, resource: str, destination: str, **headers: str) -> Any:
    return client.put(
        f"{resource}/_hooks/route", json={"destination": destination}, headers=headers
    )


def answered_by(client: TestClient, path: str) -> str | None:
    """The ``target`` path that answered ``path`` (None when no hook forwarded it)."""
    response = client.get(path)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return str(response.json["target"])


def eventually(condition: Callable[[], bool], within: float) -> float:
    """Poll ``condition`` until it holds; return the seconds it took. Fail after ``within``."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > within:
            pytest.fail(f"not so within {within}s")
        time.sleep(0.02)
    return time.monotonic() - began


def write_behind(store: Any, resource: str, destination: str, *, announce: bool) -> None:
    """Store a route hook as the backend does, behind every app's back; ``announce`` it on
    the channel or not."""
    value = json.dumps(["route", resource, "", {"destination": destination}, None])
    transaction = store.pipeline(transaction=True)
    transaction.set(key(resource), value)
    transaction.zadd(INDEX, {key(resource): math.inf})
    if announce:
        transaction.publish(f"{PREFIX}changes", key(resource))
    transaction.execute()


def settle(store: Any, *clients: TestClient) -> None:
    """Return once every client's thread follows the channel: a change announced now
    reached them all (so their first reload, at subscription, is behind them)."""
    write_behind(store, "/probe", "/target/probe", announce=True)
    for client in clients:
        eventually(lambda c=client: answered_by(c, "/probe/x") == "probe/x", within=SOON)


def is_unavailable(response: Any) -> bool:
    return (
        response.status_code == 503
        and response.headers["Content-Type"] == "application/json"
        and "unavailable" in response.json["message"]
    )


# -- registration ---------------------------------------------------------------------------


def test_register_show_list_replace_unregister(
    serve: Callable[..., TestClient], store: Any
) -> None:
    client = serve()
    response = register(client, "/data", "/target/one")
    assert response.status_code == 200, response.text
    assert response.json["resource"] == "/data"
    assert answered_by(client, "/data/x/y") == "one/x/y"
    assert answered_by(client, "/data") == "one"
    assert answered_by(client, "/database") is None  # a prefix of segments, not of text

    # Stored as the module docstring of workflowhttp.hooks.redis says.
    kind, resource, id, spec, expires_at = json.loads(store.get(key("/data")))
    assert (kind, resource, id, spec) == ("route", "/data", "", {"destination": "/target/one"})
    assert store.zscore(INDEX, key("/data")) == pytest.approx(expires_at)

    shown = client.get("/data/_hooks/route")
    assert shown.status_code == 200
    assert shown.json["destination"] == "/target/one"
    assert client.get("/_hooks/routes?q=one").json["routes"][0]["resource"] == "/data"
    assert client.get("/_hooks/routes?q=nowhere").json == {"routes": []}

    assert register(client, "/data", "/target/two").status_code == 200  # replaces
    assert answered_by(client, "/data/x") == "two/x"
    assert [r["destination"] for r in client.get("/_hooks/routes").json["routes"]] == [
        "/target/two"
    ]

    assert client.delete("/data/_hooks/route").status_code == 200
    assert answered_by(client, "/data/x") is None
    assert store.exists(key("/data")) == 0
    assert store.zscore(INDEX, key("/data")) is None
    assert client.delete("/data/_hooks/route").status_code == 404
    assert client.get("/data/_hooks/route").status_code == 404


def test_expiry_is_a_key_ttl_and_applies_before_the_sweep(
    serve: Callable[..., TestClient], store: Any
) -> None:
    client = serve(sweep_interval=60.0)
    assert register(client, "/short", "/target/s", **{"X-Expire-After": "1"}).status_code == 200
    registered = time.monotonic()
    assert 0 < store.pttl(key("/short")) <= 1000
    assert answered_by(client, "/short/x") == "s/x"

    # Gone within ~1.2 s: nothing announces a TTL running out, so this is the index refusing
    # an expired hook on read (the worker has not reloaded since the registration).
    eventually(lambda: answered_by(client, "/short/x") is None, within=3.0)
    assert time.monotonic() - registered >= 0.9
    eventually(lambda: store.exists(key("/short")) == 0, within=1.0)  # Redis swept the key
    assert client.get("/_hooks/routes").json == {"routes": []}
    assert client.get("/short/_hooks/route").status_code == 404
    assert client.delete("/short/_hooks/route").status_code == 404


def test_an_expired_hooks_index_entry_is_swept(
    serve: Callable[..., TestClient], store: Any
) -> None:
    client = serve(sweep_interval=0.2)
    assert register(client, "/short", "/target/s", **{"X-Expire-After": "1"}).status_code == 200
    assert store.zscore(INDEX, key("/short")) is not None
    eventually(lambda: store.zscore(INDEX, key("/short")) is None, within=3.0)


def test_expire_after_minus_one_sets_no_ttl(serve: Callable[..., TestClient], store: Any) -> None:
    client = serve()
    response = register(client, "/forever", "/target/f", **{"X-Expire-After": "-1"})
    assert response.status_code == 200
    assert response.json["expires"] is None
    assert store.pttl(key("/forever")) == -1  # the key exists and has no TTL
    assert store.zscore(INDEX, key("/forever")) == math.inf
    assert client.get("/_hooks/routes").json["routes"][0]["expires"] is None
    assert answered_by(client, "/forever/x") == "f/x"


# -- several apps on one Redis --------------------------------------------------------------


def test_two_apps_see_each_others_changes_within_a_second(
    serve: Callable[..., TestClient], store: Any
) -> None:
    first, second = serve(), serve()  # reload only when pub/sub says so
    settle(store, first, second)

    assert register(first, "/data", "/target/one").status_code == 200
    eventually(lambda: answered_by(second, "/data/x") == "one/x", within=SOON)

    assert register(second, "/data", "/target/two").status_code == 200
    eventually(lambda: answered_by(first, "/data/x") == "two/x", within=SOON)

    assert second.delete("/data/_hooks/route").status_code == 200
    eventually(lambda: answered_by(first, "/data/x") is None, within=SOON)
    assert [r["resource"] for r in first.get("/_hooks/routes").json["routes"]] == ["/probe"]


def test_a_missed_message_heals_by_the_periodic_reload(
    serve: Callable[..., TestClient], store: Any
) -> None:
    healing, deaf = serve(reload_interval=0.3), serve(reload_interval=60.0)
    settle(store, healing, deaf)
    write_behind(store, "/quiet", "/target/q", announce=False)

    eventually(lambda: answered_by(healing, "/quiet/x") == "q/x", within=2.0)
    # The same time went by for the other app: only the periodic reload brought the hook.
    assert answered_by(deaf, "/quiet/x") is None

    store.delete(key("/quiet"))  # and removed the same way
    eventually(lambda: answered_by(healing, "/quiet/x") is None, within=2.0)


def test_a_subscription_dropped_by_redis_heals_at_once(
    serve: Callable[..., TestClient], store: Any
) -> None:
    follower = serve()
    settle(store, follower)
    assert answered_by(follower, "/lost/x") is None
    # Redis drops the app's subscription, and the write is announced while nobody listens:
    # the app resubscribes, and reloads because it cannot know what it missed.
    value = json.dumps(["route", "/lost", "", {"destination": "/target/l"}, None])
    transaction = store.pipeline(transaction=True)
    transaction.client_kill_filter(_type="pubsub")
    transaction.set(key("/lost"), value)
    transaction.zadd(INDEX, {key("/lost"): math.inf})
    transaction.publish(f"{PREFIX}changes", key("/lost"))
    killed, _, _, listeners = transaction.execute()
    assert (killed, listeners) == (1, 0)
    eventually(lambda: answered_by(follower, "/lost/x") == "l/x", within=SOON)


# -- corrupt and foreign values -------------------------------------------------------------

CORRUPT = [
    pytest.param(b"\xff\xfe{not json", id="not-json"),
    pytest.param(b'{"destination": "/target/x"}', id="an-object-not-a-record"),
    pytest.param(b'["route", "/bad", ""]', id="a-short-record"),
    pytest.param(b'["route", "/bad", "", {"destination": "/target"}, "soon"]', id="bad-expiry"),
    pytest.param(b'["route", "/bad", "", {"destination": 5}, null]', id="bad-destination"),
    pytest.param(
        b'["route", "/bad", "", {"destination": "/target", "evil": 1}, null]',
        id="unknown-property",
    ),
    pytest.param(
        b'["route", "/bad", "", {"destination": "http://evil.example/"}, null]',
        id="destination-not-allowed",
    ),
    pytest.param(b'["route", "bad", "", {"destination": "/target"}, null]', id="not-a-path"),
    pytest.param(b'["foreign", "/bad", "", {}, null]', id="unknown-kind"),
]


@pytest.mark.parametrize("value", CORRUPT)
def test_a_corrupt_value_is_skipped_and_logged(
    serve: Callable[..., TestClient],
    store: Any,
    value: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="workflowhttp.hooks")
    store.set(key("/bad"), value)
    store.zadd(INDEX, {key("/bad"): math.inf})
    client = serve()

    assert register(client, "/data", "/target/d").status_code == 200
    assert answered_by(client, "/data/x") == "d/x"
    assert answered_by(client, "/bad/x") is None
    assert client.get("/plain").status_code == 200
    assert client.get("/_hooks/routes").status_code == 200
    assert client.get("/data/_hooks/route").status_code == 200
    assert any("skipped" in record.getMessage() for record in caplog.records)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_corrupt_values_are_logged_once_not_at_every_reload(
    serve: Callable[..., TestClient], store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="workflowhttp.hooks")
    for name in ("one", "two", "three"):
        store.set(f"{PREFIX}hook:route::/{name}", f"corrupt {name}")
        store.zadd(INDEX, {f"{PREFIX}hook:route::/{name}": math.inf})
    client = serve(reload_interval=0.1)
    time.sleep(0.6)  # several reloads
    skipped = [record for record in caplog.records if "skipped" in record.getMessage()]
    assert len(skipped) == 3, [record.getMessage() for record in skipped]
    assert client.get("/plain").status_code == 200


def test_a_key_of_another_type_is_skipped(serve: Callable[..., TestClient], store: Any) -> None:
    store.hset(key("/bad"), "field", "value")
    store.zadd(INDEX, {key("/bad"): math.inf})
    client = serve()
    assert register(client, "/data", "/target/d").status_code == 200
    assert answered_by(client, "/data/x") == "d/x"
    assert answered_by(client, "/bad/x") is None
    assert client.get("/_hooks/routes").status_code == 200


# -- faults ---------------------------------------------------------------------------------


def test_redis_stopped_then_restarted_empty(
    serve: Callable[..., TestClient],
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="workflowhttp.hooks")
    first, second = serve(), serve()
    assert register(first, "/data", "/target/d").status_code == 200
    eventually(lambda: answered_by(second, "/data/x") == "d/x", within=SOON)

    redis_server.stop()
    # Both apps' threads notice; the hooks keep applying from each one's local index.
    eventually(
        lambda: sum("serving from the local index" in r.getMessage() for r in caplog.records) >= 2,
        within=CATCH_UP,
    )
    for client in (first, second):
        assert answered_by(client, "/data/x") == "d/x"
        assert client.get("/plain").status_code == 200
        assert client.get("/plain").json == {"plain": True}
    assert is_unavailable(register(first, "/more", "/target/m"))
    assert is_unavailable(second.delete("/data/_hooks/route"))
    assert is_unavailable(first.get("/_hooks/routes"))
    assert is_unavailable(first.get("/data/_hooks/route"))
    assert answered_by(first, "/more/x") is None

    redis_server.restart()  # on the same port, and empty
    assert register(first, "/fresh", "/target/f").status_code == 200
    assert answered_by(first, "/fresh/x") == "f/x"
    eventually(lambda: answered_by(second, "/fresh/x") == "f/x", within=CATCH_UP)
    # The index caught up with what Redis holds now: /data's hook went with the old data.
    assert answered_by(second, "/data/x") is None
    assert answered_by(first, "/data/x") is None
    # And changes travel again within a second.
    assert register(second, "/later", "/target/l").status_code == 200
    eventually(lambda: answered_by(first, "/later/x") == "l/x", within=SOON)


def test_redis_stopped_then_restarted_with_its_data(
    serve: Callable[..., TestClient], redis_server: RedisServer
) -> None:
    first, second = serve(), serve()
    assert register(first, "/data", "/target/d", **{"X-Expire-After": "-1"}).status_code == 200
    eventually(lambda: answered_by(second, "/data/x") == "d/x", within=SOON)

    redis_server.restart(keep_data=True)
    assert answered_by(second, "/data/x") == "d/x"
    assert register(first, "/more", "/target/m").status_code == 200
    eventually(lambda: answered_by(second, "/more/x") == "m/x", within=CATCH_UP)
    assert answered_by(second, "/data/x") == "d/x"
    assert [r["resource"] for r in second.get("/_hooks/routes").json["routes"]] == [
        "/data",
        "/more",
    ]


def test_a_frozen_redis_answers_registrations_503_in_bounded_time(
    serve: Callable[..., TestClient], redis_server: RedisServer
) -> None:
    from workflowhttp.hooks.redis import RedisStorage

    client = serve(RedisStorage(redis_server.url, socket_timeout=0.5))
    assert register(client, "/data", "/target/d").status_code == 200

    redis_server.freeze()  # accepts connections, answers nothing
    try:
        began = time.monotonic()
        assert answered_by(client, "/data/x") == "d/x"
        assert client.get("/plain").status_code == 200
        assert time.monotonic() - began < 0.5  # requests never wait for Redis
        began = time.monotonic()
        assert is_unavailable(register(client, "/more", "/target/m"))
        assert time.monotonic() - began < 5 * 0.5  # the socket timeout, not a hang
    finally:
        redis_server.thaw()
    eventually(lambda: register(client, "/more", "/target/m").status_code == 200, within=3.0)
    assert answered_by(client, "/more/x") == "m/x"


def test_a_closed_storage_opens_no_connection_until_opened_again(
    redis_server: RedisServer, store: Any
) -> None:
    """A thread still inside the storage when the app stops (the registry's, a delivery)
    must not reconnect behind ``close``: that connection would outlive the app, unclosed."""
    storage = RedisStorage(redis_server.url)
    assert storage.records() == []
    storage.close()
    with pytest.raises(StorageUnavailable, match="closed"):
        storage.records()
    assert storage.wait_for_change(0.01) is False
    assert len(store.client_list()) == 1  # only ``store``'s own connection
    storage.open()
    assert storage.records() == []
    storage.close()
