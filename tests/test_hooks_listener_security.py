"""Listener hooks against hostile clients: the queue's control headers are the listener's."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest

from workflowhttp import App, Body, http
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
