"""The gateway example (examples/gateway): a Proxy in front of a real upstream on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from examples.gateway.app import create_app
from tests.upstreams import upstream
from workflowhttp.testing import TestClient


@pytest.fixture
def shop() -> Iterator[Any]:
    with upstream() as server:
        yield server


@pytest.fixture
def client(shop: Any) -> TestClient:
    return TestClient(create_app(shop.url, key="k3y"))


def test_reads_are_forwarded_and_labelled(client, shop):
    answer = client.get("/shop/echo/books?limit=2")
    assert answer.status_code == 200
    assert answer.json["path"] == "/echo/books"
    assert answer.json["query"] == "limit=2"
    assert answer.headers["X-Served-By"] == "shop"
    assert answer.headers["Server-Timing"].startswith("gateway;dur=")


def test_health_is_answered_by_the_gateway(client, shop):
    answer = client.get("/shop/health")
    assert answer.json == {"status": "ok", "gateway": True}
    assert answer.headers["X-Served-By"] == "gateway"
    assert shop.requests == []


@pytest.mark.parametrize("key", [None, "wrong", "k3y-but-longer"], ids=["none", "wrong", "longer"])
def test_writes_without_the_key_are_refused_before_anything_is_sent(client, shop, key):
    headers = {"X-Gateway-Key": key} if key else {}
    answer = client.post("/shop/echo", json={"title": "x"}, headers=headers)
    assert answer.status_code == 403
    assert answer.json == {"message": "Writes through the gateway need X-Gateway-Key."}
    assert shop.requests == []


def test_writes_with_the_key_are_forwarded(client, shop):
    answer = client.post("/shop/echo", json={"title": "x"}, headers={"X-Gateway-Key": "k3y"})
    assert answer.status_code == 200
    assert answer.json["body"] == '{"title": "x"}'
    assert "x-gateway-key" not in answer.json["headers"]  # the gateway's secret stays there
