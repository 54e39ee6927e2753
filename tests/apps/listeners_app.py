"""An app with listener hooks on the storage ``$LISTENERS_STORAGE`` names, for the tests that
kill a worker mid-delivery and run two servers on one Redis (tests/test_hooks_delivery_machines.py).

``/data/{rest:path}`` is the hooked resource (the tests register listeners on its
collections); it answers which worker (its PID) served the request. The environment:

* ``LISTENERS_STORAGE``: the hooks' storage URL (``sqlite:///…`` or ``redis://…``);
* ``LISTENERS_ALLOWED``: the one external destination listeners may deliver to (the tests'
  receiver, ``http://127.0.0.1:<port>/``);
* ``LISTENERS_LEASE``: seconds a queue's lease lasts without a renewal (default 2): how long
  a killed worker's queue waits before another worker takes it over.

Retries and polls are fast (0.1 s, 0.05 s) so that the tests are.
"""

from __future__ import annotations

import os
from typing import Any

from workflowhttp import App, http
from workflowhttp.hooks import Hooks


@http.GET("/health")
def health() -> dict[str, int]:
    return {"pid": os.getpid()}


@http.ANY("/data/{rest:path}")
def data(rest: str) -> dict[str, Any]:
    return {"rest": rest, "pid": os.getpid()}


app = App(
    controllers=[health, data],
    extensions=[
        Hooks(
            storage=os.environ["LISTENERS_STORAGE"],
            allowed_destinations=[os.environ["LISTENERS_ALLOWED"]],
            lease=float(os.environ.get("LISTENERS_LEASE", "2.0")),
            poll_interval=0.05,
            retry_delay=0.1,
            max_retry_delay=0.5,
        )
    ],
)
