"""Operating route hooks: the metrics through the stream, and the audit log line of every change."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.hooks_apps import data, local, register, storage_url
from workflowhttp import App
from workflowhttp.hooks import Hooks
from workflowhttp.stream import Stream
from workflowhttp.testing import TestClient


def test_metrics_count_hooks_and_hooked_requests_by_hook_and_status(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry

    from workflowhttp.stream.processors import MetricsProcessor

    registry = CollectorRegistry()
    stream = Stream(lambda: MetricsProcessor(registry))
    hooks = Hooks(storage=storage_url(tmp_path), poll_interval=0.02)
    app = App(controllers=[data, local], extensions=[hooks], stream=stream)
    with TestClient(app) as client:
        register(client, "/data/a", {"destination": "/local/a"})
        register(client, "/data/b", {"destination": "/local/b", "translateStatus": {"200": 299}})
        for path in ("/data/a/1", "/data/a/2", "/data/b/1", "/data/c"):
            assert client.get(path).status_code < 300
        assert stream.flush()
        sample = registry.get_sample_value
        assert sample("workflowhttp_hooks_registered", {"kind": "route"}) == 2
        calls = "workflowhttp_upstream_requests_total"
        hooked = {"endpoint": "hook:/data/a", "status": "200", "forged": "false"}
        assert sample(calls, hooked) == 2
        translated = {"endpoint": "hook:/data/b", "status": "299", "forged": "false"}
        assert sample(calls, translated) == 1
        assert client.delete("/data/b/_hooks/route").status_code == 200
        assert stream.flush()
        assert sample("workflowhttp_hooks_registered", {"kind": "route"}) == 1


def test_every_registration_change_is_an_audit_line(tmp_path: Path, caplog) -> None:
    hooks = Hooks(storage=storage_url(tmp_path), poll_interval=0.02)
    app = App(controllers=[data, local], extensions=[hooks])
    with (
        caplog.at_level(logging.INFO, logger="workflowhttp.hooks"),
        TestClient(app) as client,
    ):
        register(client, "/data/a%0aforged", {"destination": "/local/a"})
        assert client.delete("/data/a%0aforged/_hooks/route").status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "workflowhttp.hooks"]
    registered = [line for line in lines if " registered by" in line]
    removed = [line for line in lines if "unregistered by" in line]
    assert len(registered) == 1 and len(removed) == 1
    assert "/local/a" in registered[0] and "expires" in registered[0]
    # SECURITY: the resource is request text: escaped, one line.
    assert all("\n" not in line for line in registered + removed)
