"""Route hooks over time and at scale: expiry, loops, the auth of the ``hooks`` group, stored
rows that are corrupt or foreign, matching in linear time, and workers sharing one SQLite file.

Forwarding and the registration API: tests/test_hooks.py.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.hardening import assert_linear, call
from tests.hooks_apps import make_app, register
from workflowhttp import App, HttpEvent, http_workflow
from workflowhttp.testing import TestClient


def hooked(client: TestClient, path: str) -> bool:
    answer = client.get(path)
    assert answer.status_code == 200, answer.text
    return "local" in answer.json


def listed(client: TestClient) -> list[str]:
    return [route["resource"] for route in client.get("/_hooks/routes").json["routes"]]


# -- expiry ---------------------------------------------------------------------------------


def test_a_hook_stops_applying_when_it_expires(tmp_path):
    with TestClient(make_app(tmp_path)) as client:
        start = time.time()
        described = register(client, "/data/a", {"destination": "/local"}, expire="1")
        register(client, "/data/b", {"destination": "/local"})
        assert described["expires"] is not None
        assert hooked(client, "/data/a/x")
        assert listed(client) == ["/data/a", "/data/b"]
        time.sleep(max(0.0, start + 1.2 - time.time()))
        # Expired: never applies, whether or not the sweep has removed it yet.
        assert not hooked(client, "/data/a/x")
        assert listed(client) == ["/data/b"]
        assert client.get("/data/a/_hooks/route").status_code == 404
        assert client.delete("/data/a/_hooks/route").status_code == 404
        assert hooked(client, "/data/b/x")


def test_minus_one_never_expires(tmp_path):
    with TestClient(make_app(tmp_path)) as client:
        described = register(client, "/data/a", {"destination": "/local"}, expire="-1")
        assert described["expires"] is None
        assert client.get("/data/a/_hooks/route").json["expires"] is None
        assert client.get("/_hooks/routes").json["routes"][0]["expires"] is None
        assert hooked(client, "/data/a")


def test_re_registering_sets_a_new_expiry(tmp_path):
    with TestClient(make_app(tmp_path)) as client:
        start = time.time()
        register(client, "/data/a", {"destination": "/local"}, expire="1")
        register(client, "/data/a", {"destination": "/local"}, expire="-1")
        time.sleep(max(0.0, start + 1.2 - time.time()))
        assert hooked(client, "/data/a")


# -- loops ----------------------------------------------------------------------------------


def test_a_local_destination_hooked_back_to_the_first_resource_is_a_508(tmp_path):
    with TestClient(make_app(tmp_path)) as client:
        register(client, "/data/a", {"destination": "/local/b"})
        register(client, "/local/b", {"destination": "/data/a"})
        started = time.monotonic()
        answer = client.get("/data/a/x")
        assert answer.status_code == 508
        assert "/data/a" in answer.json["message"]
        assert time.monotonic() - started < 5  # answered, never a hang
        assert client.get("/data/c").json["served"] == "c"  # the next request is served


def test_a_longer_chain_of_local_hooks_ending_in_a_loop_is_a_508(tmp_path):
    with TestClient(make_app(tmp_path)) as client:
        register(client, "/data/a", {"destination": "/data/b"})
        register(client, "/data/b", {"destination": "/data/c"})
        register(client, "/data/c", {"destination": "/data/a"})
        assert client.get("/data/a").status_code == 508
        assert client.get("/data/b/x").status_code == 508


def test_a_chain_of_local_hooks_without_a_loop_is_followed(tmp_path):
    with TestClient(make_app(tmp_path)) as client:
        register(client, "/data/a", {"destination": "/data/b"})
        register(client, "/data/b", {"destination": "/local/end"})
        assert client.get("/data/a/x").json["path"] == "/local/end/x"


# -- auth -----------------------------------------------------------------------------------


def test_an_auth_listener_on_the_hooks_group_guards_registration(tmp_path):
    denying: list[bool] = [False]
    groups: list[tuple[str, ...]] = []

    def guard(app: App) -> None:
        @app.listen(http_workflow.on_auth)
        def deny_hooks(event: HttpEvent) -> None:
            route = event.route
            if route is None:
                return
            groups.append(tuple(route.groups))
            if denying[0] and "hooks" in route.groups:
                event.access_denied("no hooks for you")

    with TestClient(make_app(tmp_path, setup=guard)) as client:
        register(client, "/data/a", {"destination": "/local"})
        assert ("hooks",) in groups
        denying[0] = True
        for answer in (
            client.put("/data/b/_hooks/route", json={"destination": "/local"}),
            client.get("/data/a/_hooks/route"),
            client.delete("/data/a/_hooks/route"),
            client.get("/_hooks/routes"),
        ):
            assert answer.status_code == 403, answer.text
        assert client.get("/data/b/x").json["served"] == "b/x"  # nothing registered
        assert hooked(client, "/data/a/x")  # still registered, still forwarding
        assert client.get("/local/y").status_code == 200
        denying[0] = False
        assert listed(client) == ["/data/a"]


# -- corrupt and foreign rows in the storage ------------------------------------------------

CORRUPT_ROWS = [
    ("route", "/data/not-json", "", b"not json", None),
    ("route", "/data/not-an-object", "", b"[1, 2]", None),
    ("route", "/data/no-destination", "", b'{"methods": ["GET"]}', None),
    (
        "route",
        "/data/bad-regex",
        "",
        b'{"destination": "/local", "headersFilter": "(a)\\\\1"}',
        None,
    ),
    ("route", "/data/not-allowed", "", b'{"destination": "http://evil.example/"}', None),
    ("route", "/data/loop", "", b'{"destination": "/data/loop/x"}', None),
    (
        "route",
        "/data/framing",
        "",
        b'{"destination": "/local", "headers": [{"header": "Content-Length", "value": "{x-len}"}]}',
        None,
    ),
    ("route", "relative/path", "", b'{"destination": "/local"}', None),
    ("route", "/data/text-spec", "", '{"destination": "/local", "bogus": 1}', None),
    ("weird", "/data/foreign-kind", "", b'{"destination": "/local"}', None),
    ("route", "/data/text-expiry", "", b'{"destination": "/local"}', "tomorrow"),
]


def _write_rows(path: Path, rows: list[tuple[Any, ...]]) -> None:
    connection = sqlite3.connect(path)
    try:
        connection.executemany("INSERT INTO workflowhttp_hooks VALUES (?, ?, ?, ?, ?)", rows)
        connection.commit()
    finally:
        connection.close()


def test_corrupt_and_foreign_rows_are_skipped_and_logged(tmp_path, caplog):
    with TestClient(make_app(tmp_path)) as client:  # makes the table
        register(client, "/data/good", {"destination": "/local/good"}, expire="-1")
    _write_rows(tmp_path / "hooks.sqlite3", CORRUPT_ROWS)

    with (
        caplog.at_level(logging.WARNING, logger="workflowhttp.hooks"),
        TestClient(make_app(tmp_path)) as client,
    ):
        assert client.get("/data/good/x").json["path"] == "/local/good/x"
        for _, resource, *_ in CORRUPT_ROWS:
            if resource.startswith("/data/"):
                answer = client.get(resource + "/x")
                assert answer.status_code == 200, (resource, answer.text)
                assert answer.json["served"] == resource[len("/data/") :] + "/x"
        assert client.get("/local/z").status_code == 200
        routes = client.get("/_hooks/routes")
        assert routes.status_code == 200
        assert "/data/good" in [route["resource"] for route in routes.json["routes"]]
        assert client.get("/data/not-json/_hooks/route").status_code == 404
        # A good registration beside the bad rows still works, and so does removing one.
        register(client, "/data/new", {"destination": "/local/new"})
        assert client.get("/data/new").json["path"] == "/local/new"
        assert client.delete("/data/not-json/_hooks/route").status_code == 200

    logged = "\n".join(record.getMessage() for record in caplog.records)
    for resource in (
        "/data/not-json",
        "/data/not-an-object",
        "/data/no-destination",
        "/data/bad-regex",
        "/data/not-allowed",
        "/data/loop",
        "/data/framing",
        "relative/path",
        "/data/text-spec",
    ):
        assert f"skipped the stored route hook on {resource!r}" in logged, resource
    assert "unknown kind 'weird'" in logged
    # Logged once per row, not on every reload.
    assert logged.count("'/data/not-json'") == 1


UNREADABLE = [
    ("spec-negative-integer", "'/data/odd'", "-1"),
    ("spec-huge-integer", "'/data/odd'", str(2**62)),
    ("spec-real", "'/data/odd'", "1.5"),
    ("spec-text-not-utf8", "'/data/odd'", "CAST(x'7bff80' AS TEXT)"),
    ("resource-not-utf8", "CAST(x'2f64617461ff' AS TEXT)", '\'{"destination": "/local"}\''),
]


@pytest.mark.parametrize(
    ("resource", "spec"), [case[1:] for case in UNREADABLE], ids=[case[0] for case in UNREADABLE]
)
def test_a_row_sqlite_hands_back_as_another_type_is_skipped(tmp_path, resource, spec):
    with TestClient(make_app(tmp_path)) as client:
        register(client, "/data/good", {"destination": "/local/good"}, expire="-1")
    connection = sqlite3.connect(tmp_path / "hooks.sqlite3")
    try:
        connection.execute(
            f"INSERT INTO workflowhttp_hooks VALUES ('route', {resource}, '', {spec}, NULL)"
        )
        connection.commit()
    finally:
        connection.close()
    with TestClient(make_app(tmp_path)) as client:
        assert client.get("/data/good").json["path"] == "/local/good"
        assert client.get("/data/odd").json["served"] == "odd"
        routes = client.get("/_hooks/routes")
        assert routes.status_code == 200, routes.text
        assert "/data/good" in [route["resource"] for route in routes.json["routes"]]
        register(client, "/data/new", {"destination": "/local/new"})
        assert client.get("/data/new").json["path"] == "/local/new"


def test_a_row_written_while_serving_is_picked_up_or_skipped(tmp_path, caplog):
    with (
        caplog.at_level(logging.WARNING, logger="workflowhttp.hooks"),
        TestClient(make_app(tmp_path)) as client,
    ):
        register(client, "/data/a", {"destination": "/local/a"})
        _write_rows(
            tmp_path / "hooks.sqlite3",
            [
                ("route", "/data/bad", "", b"{", None),
                ("route", "/data/hand", "", b'{"destination": "/local/hand"}', None),
            ],
        )
        deadline = time.monotonic() + 1.0
        while not hooked(client, "/data/hand") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.get("/data/hand").json["path"] == "/local/hand"
        assert client.get("/data/bad").json["served"] == "bad"
        assert client.get("/data/a").json["path"] == "/local/a"
    assert any("'/data/bad'" in record.getMessage() for record in caplog.records)


# -- linear matching ------------------------------------------------------------------------


def _linear_app(tmp_path: Path) -> App:
    app = make_app(tmp_path)
    with TestClient(app) as client:
        # Hooks at many depths: the index looks up one prefix per registered depth.
        for depth in range(1, 41):
            resource = "/data/" + "/".join(f"d{level}" for level in range(depth))
            register(client, resource + "/hooked", {"destination": "/local"}, expire="-1")
        register(client, "/data/long", {"destination": "/local"}, expire="-1")
    return app


def test_matching_a_path_of_many_segments_is_linear(tmp_path):
    app = _linear_app(tmp_path)
    prefix = "/data/" + "/".join(f"d{level}" for level in range(39))
    with TestClient(app):
        assert call(app, prefix + "/hooked/x")[0] == 200
        assert b'"local"' in call(app, prefix + "/hooked/x")[1]

        def send(segment: str, expect: bytes) -> Callable[[int], None]:
            def run(size: int) -> None:
                status, body = call(app, prefix + segment * (size // len(segment)))
                assert status == 200
                assert expect in body[:20]

            return run

        # ~10 000 segments at 20 KB; no hook claims them (served by the catch-all).
        assert_linear(send("/x", b'"served"'), send("x", b'"served"'), probe=20 * 1024)
    hooked_app = app
    with TestClient(hooked_app):

        def forwarded(filler: str) -> Callable[[int], None]:
            def run(size: int) -> None:
                status, body = call(hooked_app, "/data/long/" + filler * (size // len(filler)))
                assert status == 200
                assert body.startswith(b'{"local"')

            return run

        assert_linear(forwarded("y/"), forwarded("y"), probe=20 * 1024)


def test_a_headers_filter_against_a_long_header_is_linear(tmp_path):
    # (a+)+b backtracks exponentially in a backtracking engine on "aaaa...a"; RE2 does not.
    app = make_app(tmp_path)
    with TestClient(app) as client:
        register(client, "/data/f", {"destination": "/local", "headersFilter": "x-h: (a+)+b"})
        assert hooked(client, "/data/f") is False
        assert "local" in client.get("/data/f", headers={"X-H": "a" * 100 + "b"}).json

        def send(filler: str) -> Callable[[int], None]:
            def run(size: int) -> None:
                status, body = call(app, "/data/f", HTTP_X_H=filler * size)
                assert status == 200
                assert body.startswith(b'{"served"')

            return run

        # The probe is short: a backtracking engine's work doubles with each "a".
        assert_linear(send("a"), send("z"), probe=24)


# -- several workers on one SQLite file -----------------------------------------------------


def _within_a_second(check: Callable[[], bool]) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < 1.0, "not seen within 1 s"
        time.sleep(0.02)
    return time.monotonic() - started


def test_two_workers_on_one_file_see_each_other_s_changes_within_a_second(tmp_path):
    # The default poll interval (0.2 s), as a worker runs it.
    one = make_app(tmp_path, poll_interval=0.2)
    two = make_app(tmp_path, poll_interval=0.2)
    with TestClient(one) as first, TestClient(two) as second:
        assert not hooked(second, "/data/a/x")
        register(first, "/data/a", {"destination": "/local/one"})
        _within_a_second(lambda: hooked(second, "/data/a/x"))
        assert second.get("/data/a/x").json["path"] == "/local/one/x"
        assert listed(second) == ["/data/a"]

        # A replacement made through the other worker.
        register(second, "/data/a", {"destination": "/local/two"})
        _within_a_second(lambda: first.get("/data/a/x").json.get("path") == "/local/two/x")

        assert second.delete("/data/a/_hooks/route").status_code == 200
        _within_a_second(lambda: not hooked(first, "/data/a/x"))
        assert first.delete("/data/a/_hooks/route").status_code == 404
        assert listed(first) == []


def test_a_worker_started_later_loads_what_is_registered(tmp_path):
    with TestClient(make_app(tmp_path)) as first:
        register(first, "/data/a", {"destination": "/local"})
        with TestClient(make_app(tmp_path)) as second:
            assert hooked(second, "/data/a")  # at start, without waiting


def test_registrations_survive_a_restart(tmp_path):
    with TestClient(make_app(tmp_path)) as client:
        register(client, "/data/a", {"destination": "/local/kept"})
    with TestClient(make_app(tmp_path)) as client:
        assert client.get("/data/a").json["path"] == "/local/kept"
        assert json.loads(client.get("/data/a/_hooks/route").data)["destination"] == "/local/kept"
