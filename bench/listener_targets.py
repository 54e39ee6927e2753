"""WSGI entry points for the listener-hooks bench (``python -m bench.listeners``).

``bench.listener_targets:<name>`` for gunicorn, built lazily in the worker (after the fork):

* ``plain``: the app, ``PUT /data/{rest:path}`` reading its body, storing nothing and
  answering ``200`` with a small JSON body; no hooks.
* ``sqlite``: the same app with :class:`~workflowhttp.hooks.Hooks` on the SQLite file
  ``$WFBENCH_SQLITE`` (``sqlite:////tmp/…``, WAL mode as the storage always is).
* ``redis``: the same app with hooks on ``$WFBENCH_REDIS`` (``redis://127.0.0.1:<port>/0``).
* ``sqlite_nodelivery``, ``redis_nodelivery``: the same on storages of their own
  (``$WFBENCH_SQLITE_NODELIVERY``, ``$WFBENCH_REDIS_NODELIVERY``) with the workers'
  deliverers never started: copies are queued and stay queued. A diagnostic, not a way to
  run: it tells the request path's price from the deliveries' (which share the cores).
* ``receiver``: the listeners' destination, for gunicorn's ``gthread`` worker (one process,
  so one count): every request other than a ``GET`` is a delivery, counted and answered
  ``200``; ``GET /_count`` answers ``{"count", "first", "last"}`` (``time.monotonic()`` of the
  first and last delivery, comparable across processes on Linux) and ``POST /_reset`` starts
  the count again (and is not counted).

Both hooked apps allow the external destination ``$WFBENCH_RECEIVER`` (``http://127.0.0.1:
<port>/``), the receiver's URL.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Annotated, Any
from wsgiref.types import WSGIApplication

from workflowhttp import App, Body, http

#: The attribute names of the benched apps (the ``receiver`` aside).
APPS = ("plain", "sqlite", "redis", "sqlite_nodelivery", "redis_nodelivery")
TARGETS = (*APPS, "receiver")

_built: dict[str, WSGIApplication] = {}


def target(name: str) -> str:
    """Return the gunicorn ``module:attribute`` target of ``name``."""
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")
    return f"bench.listener_targets:{name}"


@http.GET("/")
def health() -> dict[str, int]:
    return {"pid": os.getpid()}


@http.PUT("/data/{rest:path}")
def store(rest: str, body: Annotated[bytes, Body()]) -> dict[str, Any]:
    """The hooked resource: reads the body, stores nothing."""
    return {"stored": rest, "bytes": len(body)}


def make_app(storage: str | None, *, deliver: bool = True) -> WSGIApplication:
    """Return the benched app; with hooks on ``storage`` unless it is None (their deliverer
    never started unless ``deliver``)."""
    if storage is None:
        return App(controllers=[health, store])
    from workflowhttp.hooks import Hooks

    hooks = Hooks(storage=storage, allowed_destinations=[os.environ["WFBENCH_RECEIVER"]])
    if not deliver:
        hooks.deliverer.start = lambda: None  # type: ignore[method-assign]
    return App(controllers=[health, store], extensions=[hooks])


class _Counter:
    """The receiver's deliveries: how many, and when the first and the last came."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        body = b"{}"
        if method == "GET":
            if path == "/_count":
                with self.lock:
                    body = json.dumps(
                        {"count": self.count, "first": self.first, "last": self.last}
                    ).encode()
        elif path == "/_reset":
            with self.lock:
                self.count, self.first, self.last = 0, 0.0, 0.0
        else:
            length = environ.get("CONTENT_LENGTH") or "0"
            if length.isdigit() and int(length):  # read the copy, so the connection is reusable
                environ["wsgi.input"].read(int(length))
            now = time.monotonic()
            with self.lock:
                self.count += 1
                self.first = self.first or now
                self.last = now
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]


def __getattr__(name: str) -> WSGIApplication:
    if name not in TARGETS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = _built.get(name)
    if app is None:
        if name == "receiver":
            app = _Counter()
        elif name == "plain":
            app = make_app(None)
        else:
            deliver = not name.endswith("_nodelivery")
            app = make_app(os.environ[f"WFBENCH_{name.upper()}"], deliver=deliver)
        _built[name] = app
    return app
