"""The hooks example (examples/hooks): operators re-route the catalogue at run time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from examples.hooks.app import create_app
from workflowhttp.testing import TestClient

ROOT = Path(__file__).resolve().parent.parent
KEY = {"X-Operator-Key": "let-me-in"}


def hooks_command(storage: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """Run ``workflowhttp hooks examples.hooks.app:app`` on ``storage``; it must succeed."""
    env = {**os.environ, "HOOKS_STORAGE": storage, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "workflowhttp", "hooks", "examples.hooks.app:app"],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_operators_reroute_part_of_the_catalogue(tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path}/hooks.sqlite3")
    with TestClient(app) as client:
        assert client.get("/catalogue/books/1").json == {"page": "books/1"}
        hook = {"destination": "/maintenance"}
        assert client.put("/catalogue/books/_hooks/route", json=hook).status_code == 403
        registered = client.put("/catalogue/books/_hooks/route", json=hook, headers=KEY)
        assert registered.status_code == 200, registered.text

        answer = client.get("/catalogue/books/1")
        assert answer.status_code == 503
        assert answer.json == {"message": "under maintenance", "page": "1"}
        assert client.get("/catalogue/music/1").json == {"page": "music/1"}

        assert client.delete("/catalogue/books/_hooks/route").status_code == 403
        assert client.delete("/catalogue/books/_hooks/route", headers=KEY).status_code == 200
        assert client.get("/catalogue/books/1").json == {"page": "books/1"}


def test_the_hooks_command_lists_what_is_registered(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/hooks.sqlite3"
    with TestClient(create_app(storage)) as client:
        hook = {"destination": "/maintenance", "methods": ["GET", "HEAD"]}
        books = client.put("/catalogue/books/_hooks/route", json=hook, headers=KEY)
        assert books.status_code == 200
        forever = {**KEY, "X-Expire-After": "-1"}
        toys = client.put("/catalogue/toys/_hooks/route", json=hook, headers=forever)
        assert toys.status_code == 200

    result = hooks_command(storage, tmp_path)
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "KIND",
        "RESOURCE",
        "ID",
        "DESTINATION",
        "METHODS",
        "EXPIRES",
        "QUEUED",
        "OLDEST",
    ]
    cells = [row.split() for row in rows]
    assert [row[:4] for row in cells] == [
        ["route", "/catalogue/books", "/maintenance", "GET,HEAD"],
        ["route", "/catalogue/toys", "/maintenance", "GET,HEAD"],
    ]
    assert cells[0][4].endswith("Z") and cells[1][4] == "never"


def test_a_listener_hook_audits_every_successful_change(tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path}/hooks.sqlite3")
    with TestClient(app) as client:
        audit = {"destination": "/audit", "methods": ["PUT"], "type": "after"}
        registered = client.put("/catalogue/_hooks/listeners/http/audit", json=audit, headers=KEY)
        assert registered.status_code == 200, registered.text
        assert registered.json["queue"] == "listener-hook-catalogue+audit"
        text = {"Content-Type": "text/plain"}
        assert client.put("/catalogue/books/1", data="Dune", headers=text).status_code == 200
        assert client.put("/catalogue/books/2", data="Emma", headers=text).status_code == 200
        # A client cannot write to the audit log itself (auth, for the audit group).
        assert client.put("/audit/books/3", data="forged", headers=text).status_code == 403
        changes: list[dict[str, str]] = []
        deadline = time.monotonic() + 10
        while len(changes) < 2 and time.monotonic() < deadline:
            changes = client.get("/audit").json["changes"]
            time.sleep(0.05)
        assert changes == [
            {"page": "books/1", "text": "Dune"},
            {"page": "books/2", "text": "Emma"},
        ]


def test_the_hooks_command_shows_each_listeners_queue(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/hooks.sqlite3"
    # A listener to an external receiver that is not there: its copies wait in the queue.
    app = create_app(storage)
    app.extensions[0].deliverer.concurrency = 0  # (nothing delivered in this process)
    with TestClient(app) as client:
        audit = {"destination": "/audit", "methods": ["PUT"]}
        registered = client.put("/catalogue/_hooks/listeners/http/audit", json=audit, headers=KEY)
        assert registered.status_code == 200, registered.text
        text = {"Content-Type": "text/plain"}
        for page in ("1", "2", "3"):
            assert (
                client.put(f"/catalogue/books/{page}", data=page, headers=text).status_code == 200
            )

    result = hooks_command(storage, tmp_path)
    _, row = result.stdout.splitlines()
    cells = row.split()
    assert cells[:5] == ["listener", "/catalogue", "audit", "/audit", "PUT"]
    assert cells[6] == "3"
    assert cells[7].endswith("s")


def test_the_hooks_command_without_hooks_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "workflowhttp", "hooks", "examples.gateway.app:app"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == "workflowhttp: error: examples.gateway.app:app has no Hooks extension\n"
