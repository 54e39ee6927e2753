"""An app with route hooks on the storage ``$HOOKS_STORAGE`` names, for the tests of several
servers sharing one registry (tests/test_hooks_machines.py).

``/data/{rest:path}`` is the app's own route; ``/target/{rest:path}`` is the local destination
the tests hook ``/data`` to. Both say which of them answered and which worker (its PID), and
hold the request ``?hold=`` milliseconds (so that two requests sent at once reach two
different sync workers).
"""

from __future__ import annotations

import os
import time
from typing import Any

from workflowhttp import App, http
from workflowhttp.hooks import Hooks


def _answer(who: str, rest: str, hold: int) -> dict[str, Any]:
    time.sleep(min(max(hold, 0), 1000) / 1000)
    return {"who": who, "rest": rest, "pid": os.getpid()}


@http.GET("/health")
def health() -> dict[str, int]:
    return {"pid": os.getpid()}


@http.ANY("/data/{rest:path}")
def data(rest: str, hold: int = 0) -> dict[str, Any]:
    return _answer("app", rest, hold)


@http.ANY("/target/{rest:path}")
def target(rest: str, hold: int = 0) -> dict[str, Any]:
    return _answer("hook", rest, hold)


app = App(
    controllers=[health, data, target],
    extensions=[Hooks(storage=os.environ["HOOKS_STORAGE"])],  # reloads every 5 s by default
)
