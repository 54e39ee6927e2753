"""The apps of the route hook tests (tests/test_hooks*.py): what answers a hooked request.

``/data/{rest:path}`` is the app's own catch-all (the resources hooks are registered on);
``/local`` and ``/local/{rest:path}`` are local destinations. Both answer JSON of what they
received, so a test sees the path, query, headers and body a hook forwarded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from workflowhttp import App, HttpEvent, http
from workflowhttp.hooks import Hooks
from workflowhttp.params import Body
from workflowhttp.testing import TestClient


def _seen(event: HttpEvent, body: bytes, **where: str) -> dict[str, Any]:
    environ = event.environ
    headers = {
        key[5:].lower().replace("_", "-"): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    return {
        **where,
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("PATH_INFO"),
        "query": environ.get("QUERY_STRING", ""),
        "headers": headers,
        "body": body.decode("latin-1"),
    }


@http.ANY("/data/{rest:path}")
def data(event: HttpEvent, rest: str, body: Annotated[bytes, Body()] = b"") -> dict[str, Any]:
    """The app's own catch-all: what a request nobody hooks gets."""
    return _seen(event, body, served=rest)


@http.ANY("/local")
@http.ANY("/local/{rest:path}")
def local(event: HttpEvent, body: Annotated[bytes, Body()] = b"", rest: str = "") -> dict[str, Any]:
    """A local destination (answered in process)."""
    return _seen(event, body, local=rest)


@http.ANY("/teapot/{rest:path}")
def teapot(rest: str) -> tuple[dict[str, str], int]:
    """A local destination answering 418."""
    return {"teapot": rest}, 418


def storage_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/hooks.sqlite3"


def make_app(tmp_path: Path, *, setup: Callable[[App], None] | None = None, **options: Any) -> App:
    """The app with ``Hooks`` on ``tmp_path``'s SQLite file; ``options`` go to ``Hooks``."""
    options.setdefault("storage", storage_url(tmp_path))
    options.setdefault("poll_interval", 0.02)  # Hooks.stop() waits for one poll
    app = App(controllers=[data, local, teapot], extensions=[Hooks(**options)])
    if setup is not None:
        setup(app)
    return app


def register(
    client: TestClient, resource: str, spec: dict[str, Any], expire: str | None = None
) -> Any:
    """Register a route hook on ``resource``; return the answer's JSON (asserting a 200)."""
    headers = {"X-Expire-After": expire} if expire is not None else {}
    answer = client.put(f"{resource}/_hooks/route", json=spec, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json
