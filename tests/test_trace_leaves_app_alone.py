"""A trace leaves the traced app's own requests as fast as before: its ``__dict__`` unread.

On CPython 3.11 an instance keeps its attributes as inline values, which attribute reads are
specialised for, until someone reads its ``__dict__``: then they move into a real dict for
good, and every later attribute read of the app (dozens a request) takes the slower path:
about 5 % of a ``GET /hello``. ``copy.copy(app)`` reads it. What an object references shows
which it has (``gc.get_referents``): its attributes' values, or the dict holding them.
"""

from __future__ import annotations

import gc

import pytest

from workflowhttp import App, http
from workflowhttp.testing import TestClient


@http.GET("/hello")
def hello() -> str:
    return "Hello, world!"


def _dict_materialized(app: App) -> bool:
    return any(isinstance(ref, dict) and "_listeners" in ref for ref in gc.get_referents(app))


def test_the_detector_sees_a_materialized_dict() -> None:
    app = App(controllers=[hello])
    if _dict_materialized(app):  # this Python keeps instance attributes in a dict anyway
        pytest.skip("no inline instance values on this Python")
    app.__dict__  # noqa: B018 - the read is the point
    assert _dict_materialized(app)


def test_a_trace_does_not_read_the_apps_dict() -> None:
    app = App(controllers=[hello])
    client = TestClient(app)
    assert client.get("/hello").status_code == 200
    if _dict_materialized(app):
        pytest.skip("no inline instance values on this Python")

    trace = client.trace("GET", "/hello")

    assert trace.answer.status == 200 and trace.answer.body == b"Hello, world!"
    assert "controller" in trace.states
    assert not _dict_materialized(app)
    assert client.get("/hello").data == b"Hello, world!"  # and the app still answers
