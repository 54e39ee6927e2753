"""The app ``tests/test_gunicorn_hostile.py`` serves under a real gunicorn.

Every answer echoes what identifies its request (a token from the query, the worker's PID,
what the request's listener, service and controller instance saw), so a test can tell a right
answer from one meant for another request.

``HOSTILE_APP_MARKERS`` (a directory, optional): ``/slow`` creates ``<token>.started`` there
before it sleeps, so a test knows its request is being served.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from workflowhttp import App, Body, HttpEvent, Provider, Response, http, http_workflow

SLOW_AT_MOST = 5.0  # seconds: /slow never sleeps longer, whatever it is asked
STREAM_CHUNK = b"x" * 1024
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


class RequestToken:
    """A request-scoped service: built for each request from that request's query."""

    def __init__(self, value: str) -> None:
        self.value = value


def request_token(event: HttpEvent) -> RequestToken:
    return RequestToken(_token_of(event))


def _token_of(event: HttpEvent) -> str:
    for pair in event.environ.get("QUERY_STRING", "").split("&"):
        name, _, value = pair.partition("=")
        if name == "token":
            return value
    return ""


@http.GET("/health")
def health() -> dict:
    return {"status": "ok", "pid": os.getpid()}


@http.controller("/echo")
class Echo:
    """One instance per request, holding its request's service; see ``echo``."""

    def __init__(self, token: RequestToken) -> None:
        self.service = token
        self.seen = ""

    @http.GET("/")
    def echo(self, event: HttpEvent, token: str = "", pause: float = 0.0) -> dict:
        # An instance shared by concurrent requests would lose this during the pause, in which
        # the other threads of a gthread worker run.
        self.seen = token
        time.sleep(min(max(pause, 0.0), 0.05))
        return {
            "token": token,
            "store": event.store.get("token"),
            "service": self.service.value,
            "controller": self.seen,
            "pid": os.getpid(),
            "thread": threading.get_ident(),
        }


@http.GET("/slow")
def slow(token: str = "", seconds: float = 1.0) -> dict:
    markers = os.environ.get("HOSTILE_APP_MARKERS")
    if markers and _TOKEN.fullmatch(token):
        (Path(markers) / f"{token}.started").touch()
    time.sleep(min(max(seconds, 0.0), SLOW_AT_MOST))
    return {"token": token, "pid": os.getpid()}


@http.GET("/stream-fails")
def stream_fails(chunks: int = 4) -> Response:
    """Stream ``chunks`` chunks of 1 KiB, then fail: the status is already sent."""

    def body() -> Iterator[bytes]:
        for _ in range(min(chunks, 64)):
            yield STREAM_CHUNK
        raise RuntimeError("the stream broke midway")

    return Response(body(), content_type="application/octet-stream")


@http.GET("/stream")
def stream(chunks: int = 4) -> Response:
    return Response(
        (STREAM_CHUNK for _ in range(min(chunks, 64))), content_type="application/octet-stream"
    )


@http.POST("/body")
def body(data: Annotated[bytes, Body()], token: str = "") -> dict:
    return {"token": token, "length": len(data), "head": data[:32].decode("latin-1")}


@http.GET("/files/{rest:path}")
def files(rest: str) -> dict:
    return {"rest": rest}


app = App(
    controllers=[health, Echo, slow, stream_fails, stream, body, files],
    providers=[Provider(RequestToken, request_token, scope="request")],
)


@app.listen(http_workflow.on_request)
def remember_the_token(event: HttpEvent) -> None:
    # A store that carried anything over from another request would fail loudly here.
    if event.store:
        raise RuntimeError(f"event.store carried over: {event.store!r}")
    event.store["token"] = _token_of(event)
