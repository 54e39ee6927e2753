"""The proxy under a real gunicorn (gthread workers): a bounded load with zero wrong answers,
and keep-alive connections to the upstream reused across requests."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path

import pytest

from tests import servers

pytestmark = pytest.mark.gunicorn

REQUESTS = 2000
CLIENTS = 8


def test_a_load_through_the_proxy_has_no_wrong_answer_and_reuses_connections(
    tmp_path: Path,
) -> None:
    shop = servers.start(
        "tests.apps.echo_upstream:app",
        tmp_path / "shop",
        "--threads",
        "8",
        "--keepalive",
        "30",
        workers=1,
        graceful_timeout=5,
        ready="/health",
    )
    peers: set[str] = set()
    with servers.serving(shop):
        server = servers.start(
            "examples.gateway.app:app",
            tmp_path / "gateway",
            "--threads",
            "4",
            workers=2,
            graceful_timeout=5,
            env={"GATEWAY_UPSTREAM": f"http://127.0.0.1:{shop.port}"},
            ready="/shop/health",  # answered by the gateway itself
        )
        wrong: list[str] = []
        done = [0]
        lock = threading.Lock()

        def client(index: int) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            try:
                for number in range(REQUESTS // CLIENTS):
                    path = f"/shop/echo/{index}/{number}?n={number}"
                    connection.request("GET", path)
                    response = connection.getresponse()
                    body = response.read()
                    answer = json.loads(body) if response.status == 200 else None
                    ok = (
                        answer is not None
                        and answer["path"] == f"/echo/{index}/{number}"
                        and answer["query"] == f"n={number}"
                        and response.getheader("X-Served-By") == "shop"
                    )
                    with lock:
                        if answer is not None:
                            peers.add(answer["peer"])
                        done[0] += 1
                        if not ok:
                            wrong.append(f"{path}: {response.status} {body[:120]!r}")
            finally:
                connection.close()

        with servers.serving(server):
            threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
        assert done[0] == REQUESTS
        assert wrong == []
    # Every request reached the upstream over a few pooled keep-alive connections (about one
    # per proxy worker thread: 2 workers x 4 threads), not one per request.
    assert 1 <= len(peers) <= 2 * 4 * 2, len(peers)
