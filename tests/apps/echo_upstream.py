"""A plain WSGI upstream for the proxy's load test, served by gunicorn (keep-alive with
gthread workers): it answers what it received and the client's port, so the test can count
the connections the proxy opened."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = json.dumps(
        {
            "path": environ.get("RAW_URI", environ.get("PATH_INFO", "")).partition("?")[0],
            "query": environ.get("QUERY_STRING", ""),
            "peer": f"{environ.get('REMOTE_ADDR')}:{environ.get('REMOTE_PORT')}",
        }
    ).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
