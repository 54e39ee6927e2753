"""Listener hooks against hostile clients: the queue's control headers are the listener's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import pytest

from workflowhttp import App, Body, HttpEvent, http, http_workflow
from workflowhttp.hooks import Hooks
from workflowhttp.hooks.delivery import decode_copy
from workflowhttp.testing import TestClient


@http.PUT("/data/{rest:path}")
def data(rest: str, body: Annotated[bytes, Body()] = b"") -> dict[str, str]:
    return {"stored": rest}


def make_app(tmp_path: Path) -> tuple[App, Hooks]:
    hooks = Hooks(storage=f"sqlite:///{tmp_path / 'hooks.sqlite3'}", delivery_concurrency=1)
    return App(controllers=[data], extensions=[hooks]), hooks


@pytest.mark.parametrize(
    "header",
    [
        {"X-Queue": "listener-hook-someone+else"},
        {"x-queue": "elsewhere"},
        {"X-Queue-Retry-5xx": "0"},
    ],
    ids=["X-Queue", "x-queue lower case", "X-Queue-Retry"],
)
def test_a_client_cannot_choose_the_queue_of_its_copy(
    tmp_path: Path, header: dict[str, str]
) -> None:
    app, hooks = make_app(tmp_path)
    with TestClient(app) as client:
        hooks.deliverer.stop()  # nothing delivered: the copies stay where they were queued
        answer = client.put("/data/_hooks/listeners/http/audit", json={"destination": "/sink"})
        assert answer.status_code == 200, answer.text
        stored = client.put("/data/1", data=b"x", headers={"Content-Type": "text/plain", **header})
        assert stored.status_code == 200
        stats = hooks.storage.queue_stats()
        assert set(stats) == {"listener-hook-data+audit"}
        head = hooks.storage.head("listener-hook-data+audit")
        assert head is not None
        copy = decode_copy(head.data)
        assert copy.give_up == []  # the client's X-Queue-Retry did not make it give up
        assert not [name for name, _ in copy.headers if name.lower().startswith("x-queue")]


def test_a_copy_delivered_in_process_is_the_original_clients_request(tmp_path: Path) -> None:
    # An auth listener trusting the local machine must not let a listener hook in: a copy of
    # a remote client's request delivered in process is still that client's.
    ran: list[str] = []

    @http.PUT("/admin/{rest:path}").group("admin")
    def admin(rest: str) -> dict[str, str]:
        ran.append(rest)
        return {}

    hooks = Hooks(storage=f"sqlite:///{tmp_path / 'hooks.sqlite3'}", poll_interval=0.05)
    app = App(controllers=[data, admin], extensions=[hooks])

    @app.listen(http_workflow.on_auth)
    def only_this_machine(event: HttpEvent) -> None:
        route = event.route
        remote = event.environ.get("REMOTE_ADDR")
        if route is not None and "admin" in route.groups and remote != "127.0.0.1":
            event.access_denied("admin is for this machine only")

    give_up = [{"header": "x-queue-retry-4xx", "value": "0"}]
    with TestClient(app) as client:
        listener = {"destination": "/admin", "headers": give_up}
        answer = client.put("/data/_hooks/listeners/http/a", json=listener)
        assert answer.status_code == 200, answer.text
        remote = {"REMOTE_ADDR": "203.0.113.9"}
        local = {"REMOTE_ADDR": "127.0.0.1"}
        headers = {"Content-Type": "text/plain"}
        assert (
            client.put("/data/x", data=b"1", headers=headers, environ_base=remote).status_code
            == 200
        )
        assert (
            client.put("/data/y", data=b"2", headers=headers, environ_base=local).status_code == 200
        )
        deadline = time.monotonic() + 5
        while hooks.storage.queue_stats() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hooks.storage.queue_stats() == {}
    assert ran == ["y"]  # the remote client's copy was refused (403) and given up
