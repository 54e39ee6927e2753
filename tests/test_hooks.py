"""Route hooks over HTTP (after Gateleen's RouteHook integration tests): forwarding, matching,
header rules, translateStatus and the registration API.

Invalid registrations: tests/test_hooks_validation.py. Expiry, loops, auth, storage faults,
linearity and several workers: tests/test_hooks_registry.py.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from tests.hooks_apps import make_app, register
from tests.upstreams import Upstream, refused_url, upstream
from workflowhttp.testing import TestClient


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """Hooks with local destinations only (the default)."""
    with TestClient(make_app(tmp_path)) as started:
        yield started


@pytest.fixture
def origin() -> Iterator[Upstream]:
    with upstream() as server:
        yield server


@pytest.fixture
def external(tmp_path: Path, origin: Upstream) -> Iterator[TestClient]:
    """Hooks that may forward to ``origin`` (allowed_destinations)."""
    with TestClient(make_app(tmp_path, allowed_destinations=[origin.url])) as started:
        yield started


# -- forwarding to a local destination ------------------------------------------------------


def test_a_local_destination_gets_the_suffix_and_the_query(client):
    assert client.get("/data/a/b").json["served"] == "a/b"
    register(client, "/data/a", {"destination": "/local/x"})
    answer = client.get("/data/a/b/c?q=1&r=%C3%A9")
    assert answer.status_code == 200, answer.text
    assert answer.json["local"] == "x/b/c"
    assert answer.json["path"] == "/local/x/b/c"
    assert answer.json["query"] == "q=1&r=%C3%A9"


@pytest.mark.parametrize("path", ["/data/a", "/data/a/"], ids=["exact", "trailing-slash"])
def test_the_request_exactly_on_the_resource_goes_to_the_destination(client, path):
    register(client, "/data/a", {"destination": "/local/x"})
    assert client.get(path).json["path"] == "/local/x"


@pytest.mark.parametrize("path", ["/data/ab", "/data/ab/c", "/data", "/data/", "/dat/a"], ids=str)
def test_only_the_resource_and_below_it_are_hooked(client, path):
    register(client, "/data/a", {"destination": "/local"})
    answer = client.get(path)  # the app's own route (or its 404), not the hook's
    assert "local" not in answer.json
    assert answer.status_code == (200 if path.startswith("/data/a") else 404)



@pytest.mark.parametrize("count", [3, 40], ids=["few-collections", "many-collections"])
def test_every_hooked_collection_is_found_and_a_lookalike_is_not(client, count):
    """Requests pass a gate before the full match: a few hooked collections are told apart by
    their prefixes, many by the request's first segment. Either way each hooked collection
    is found (a non-ASCII one too, from its percent-encoded request), and a collection whose
    name only starts like a hooked one is left to the app."""
    names = ["caf%C3%A9", *(f"c{n}" for n in range(count - 1))]
    for name in names:
        register(client, f"/{name}/x", {"destination": f"/local/{name}"})
    for name in names:
        answer = client.get(f"/{name}/x/1")
        assert answer.status_code == 200, answer.text
        # PATH_INFO as WSGI gives it: the UTF-8 bytes as latin-1 characters
        assert answer.json["path"] == f"/local/{unquote(name)}/1".encode().decode("latin-1")
    for lookalike in ("/caf%C3%A9s/x/1", "/cafe/x/1", "/c1x/x/1", "/c1/y", "/c"):
        assert client.get(lookalike).status_code == 404, lookalike

def test_full_url_forwards_to_the_exact_destination(client):
    register(client, "/data/a", {"destination": "/local/exact", "fullUrl": True})
    answer = client.get("/data/a/b/c?q=1")
    assert answer.json["path"] == "/local/exact"
    assert answer.json["query"] == "q=1"


def test_methods_and_the_body_reach_a_local_destination(client):
    register(client, "/data/a", {"destination": "/local"})
    answer = client.post("/data/a/new", json={"n": 1})
    assert answer.json["method"] == "POST"
    assert json.loads(answer.json["body"]) == {"n": 1}
    assert answer.json["headers"]["content-type"] == "application/json"


def test_the_local_destination_s_status_comes_back(client):
    register(client, "/data/a", {"destination": "/teapot"})
    answer = client.get("/data/a/cup")
    assert answer.status_code == 418
    assert answer.json == {"teapot": "cup"}


def test_the_longest_registered_prefix_wins(client):
    register(client, "/data/a", {"destination": "/local/short"})
    register(client, "/data/a/b", {"destination": "/local/long"})
    assert client.get("/data/a/b/c").json["path"] == "/local/long/c"
    assert client.get("/data/a/b").json["path"] == "/local/long"
    assert client.get("/data/a/bc").json["path"] == "/local/short/bc"
    assert client.get("/data/a/c").json["path"] == "/local/short/c"


def test_a_longer_hook_that_does_not_claim_leaves_the_request_to_a_shorter_one(client):
    register(client, "/data/a", {"destination": "/local/short"})
    register(client, "/data/a/b", {"destination": "/local/long", "methods": ["POST"]})
    assert client.post("/data/a/b/c").json["path"] == "/local/long/c"
    assert client.get("/data/a/b/c").json["path"] == "/local/short/b/c"


# -- forwarding to an external destination --------------------------------------------------


def test_an_external_destination_gets_the_suffix_as_received_and_the_query(external, origin):
    register(external, "/data/a", {"destination": origin.url + "/echo/base"})
    answer = external.get("/data/a/x%20y/z?b=2&a=%C3%A9")
    assert answer.status_code == 200, answer.text
    assert answer.json["path"] == "/echo/base/x%20y/z"
    assert answer.json["query"] == "b=2&a=%C3%A9"
    assert external.get("/data/a").json["path"] == "/echo/base"
    assert external.get("/data/ab").json["served"] == "ab"


def test_an_external_full_url_gets_no_suffix(external, origin):
    register(external, "/data/a", {"destination": origin.url + "/echo/exact", "fullUrl": True})
    answer = external.get("/data/a/more/below?q=1")
    assert (answer.json["path"], answer.json["query"]) == ("/echo/exact", "q=1")


def test_an_external_destination_gets_the_method_and_body(external, origin):
    register(external, "/data/a", {"destination": origin.url + "/echo"})
    answer = external.put("/data/a/item", data=b'{"v": 2}', content_type="application/json")
    echo = answer.json
    assert (echo["method"], echo["path"], echo["body"]) == ("PUT", "/echo/item", '{"v": 2}')
    assert echo["headers"]["content-type"] == "application/json"


def test_an_external_hook_s_timeout_is_a_504(external, origin):
    register(external, "/data/a", {"destination": origin.url + "/slow", "timeout": 0.2})
    assert external.get("/data/a?seconds=2").status_code == 504


def test_an_unreachable_external_destination_is_a_gateway_error(tmp_path):
    url = refused_url()
    with TestClient(make_app(tmp_path, allowed_destinations=[url])) as client:
        register(client, "/data/a", {"destination": url + "/x"})
        assert client.get("/data/a").status_code in (502, 503)
        assert client.get("/data/b").status_code == 200  # the next request is served


# -- methods and headersFilter --------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers", "hooked"),
    [
        ("POST", {"X-Tenant": "a"}, True),
        ("PUT", {"X-Tenant": "b"}, True),
        ("GET", {"X-Tenant": "a"}, False),
        ("POST", {"X-Tenant": "c"}, False),
        ("POST", {"X-Tenant": "ab"}, False),  # fullmatch, not search
        ("POST", {"X-Other": "a"}, False),
        ("POST", {}, False),
    ],
    ids=[
        "post-a",
        "put-b",
        "get-not-a-method",
        "other-tenant",
        "not-fullmatch",
        "other-header",
        "no-header",
    ],
)
def test_methods_and_headers_filter_decide_which_requests_are_hooked(
    client, method, headers, hooked
):
    spec = {"destination": "/local", "methods": ["POST", "PUT"], "headersFilter": "x-tenant: (a|b)"}
    register(client, "/data/a", spec)
    answer = client.open("/data/a/1", method=method, headers=headers)
    assert answer.status_code == 200
    assert ("local" in answer.json) is hooked, answer.json


def test_headers_filter_sees_names_in_lower_case_and_any_line(client):
    register(client, "/data/up", {"destination": "/local", "headersFilter": "X-Tenant: a"})
    register(client, "/data/ct", {"destination": "/local", "headersFilter": "content-type: .*json"})
    assert "served" in client.get("/data/up", headers={"X-Tenant": "a"}).json
    many = {"Accept": "text/plain", "X-Tenant": "a"}
    assert "served" in client.get("/data/up", headers=many).json
    assert "local" in client.post("/data/ct", json={}).json
    assert "served" in client.post("/data/ct", data="x", content_type="text/plain").json


# -- header rules ---------------------------------------------------------------------------

RULES = [
    {"header": "x-set", "value": "s"},
    {"header": "x-complete-absent", "value": "c", "mode": "complete"},
    {"header": "x-complete-present", "value": "c", "mode": "complete"},
    {"header": "x-override-absent", "value": "o", "mode": "override"},
    {"header": "x-override-present", "value": "o", "mode": "override"},
    {"header": "x-set-mode", "value": "m", "mode": "set"},
    {"header": "x-remove-empty", "value": ""},
    {"header": "x-remove-null", "value": None},
    {"header": "x-remove-omitted"},
    {"header": "x-ref", "value": "user={x-user}, tenant={x-tenant}"},
]
SENT = {
    "X-Set": "old",
    "X-Complete-Present": "kept",
    "X-Override-Present": "was",
    "X-Remove-Empty": "1",
    "X-Remove-Null": "2",
    "X-Remove-Omitted": "3",
    "X-User": "bob",
    "X-Tenant": "t1",
}
EXPECTED = {
    "x-set": "s",
    "x-complete-absent": "c",
    "x-complete-present": "kept",
    "x-override-present": "o",
    "x-set-mode": "m",
    "x-ref": "user=bob, tenant=t1",
    "x-user": "bob",
    "x-tenant": "t1",
}
GONE = ["x-override-absent", "x-remove-empty", "x-remove-null", "x-remove-omitted"]


def test_header_rules_on_a_local_destination(client):
    register(client, "/data/a", {"destination": "/local", "headers": RULES})
    seen = client.get("/data/a", headers=SENT).json["headers"]
    assert {name: seen.get(name) for name in EXPECTED} == EXPECTED
    assert [name for name in GONE if name in seen] == []


def test_header_rules_on_an_external_destination(external, origin):
    register(external, "/data/a", {"destination": origin.url + "/echo", "headers": RULES})
    seen = external.get("/data/a", headers=SENT).json["headers"]
    assert {name: seen.get(name) for name in EXPECTED} == EXPECTED
    assert [name for name in GONE if name in seen] == []


def test_a_reference_to_a_missing_header_is_a_400(client):
    register(client, "/data/a", {"destination": "/local", "headers": [RULES[-1]]})
    answer = client.get("/data/a", headers={"X-User": "bob"})
    assert answer.status_code == 400
    assert "x-tenant" in answer.json["message"]
    assert client.get("/data/a", headers={"X-User": "b", "X-Tenant": "t"}).status_code == 200


def test_a_header_rule_applies_to_one_hook_only(client):
    register(client, "/data/a", {"destination": "/local", "headers": [RULES[0]]})
    register(client, "/data/b", {"destination": "/local"})
    assert client.get("/data/a").json["headers"]["x-set"] == "s"
    assert "x-set" not in client.get("/data/b").json["headers"]


# -- translateStatus ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream_status", "answered"),
    [(404, 200), (418, 200), (503, 502), (500, 500), (201, 201), (200, 200)],
    ids=str,
)
def test_translate_status_maps_the_upstream_s_statuses(external, origin, upstream_status, answered):
    spec = {"destination": origin.url + "/status", "translateStatus": {"4.*": 200, "503": 502}}
    register(external, "/data/t", spec)
    answer = external.get(f"/data/t/{upstream_status}")
    assert answer.status_code == answered
    assert answer.data == f"status {upstream_status}".encode()


def test_translate_status_on_a_local_destination(client):
    register(client, "/data/a", {"destination": "/teapot", "translateStatus": {"418": 203}})
    answer = client.get("/data/a/cup")
    assert (answer.status_code, answer.json) == (203, {"teapot": "cup"})


# -- the registration API -------------------------------------------------------------------


def _expires_in(described: dict[str, Any]) -> float:
    moment = datetime.datetime.fromisoformat(described["expires"].replace("Z", "+00:00"))
    return moment.timestamp() - datetime.datetime.now(datetime.UTC).timestamp()


def test_a_registration_answers_what_was_registered(client):
    spec = {"destination": "/local", "methods": ["GET"], "headersFilter": "x-a: 1", "fullUrl": True}
    described = register(client, "/data/a", spec)
    assert {key: described[key] for key in spec} == spec
    assert described["resource"] == "/data/a"
    assert 3590 < _expires_in(described) <= 3600  # the default: an hour


def test_show_list_and_search(client):
    register(client, "/data/a", {"destination": "/local/alpha"})
    register(client, "/data/b/c", {"destination": "/local/beta", "methods": ["PUT"]})
    shown = client.get("/data/b/c/_hooks/route")
    assert shown.status_code == 200
    assert (shown.json["resource"], shown.json["destination"]) == ("/data/b/c", "/local/beta")
    assert shown.json["methods"] == ["PUT"]
    assert client.get("/data/b/_hooks/route").status_code == 404

    listed = client.get("/_hooks/routes").json["routes"]
    assert [(r["resource"], r["destination"]) for r in listed] == [
        ("/data/a", "/local/alpha"),
        ("/data/b/c", "/local/beta"),
    ]
    search = client.get("/_hooks/routes", query_string={"q": "bet"}).json["routes"]
    assert [r["resource"] for r in search] == ["/data/b/c"]
    assert client.get("/_hooks/routes?q=local").json["routes"] == listed
    assert client.get("/_hooks/routes?q=nowhere").json == {"routes": []}


def test_re_registering_replaces(client):
    register(client, "/data/a", {"destination": "/local/one", "methods": ["POST"]})
    register(client, "/data/a", {"destination": "/local/two"})
    assert client.get("/data/a/x").json["path"] == "/local/two/x"  # methods went too
    listed = client.get("/_hooks/routes").json["routes"]
    assert [(r["resource"], r["destination"]) for r in listed] == [("/data/a", "/local/two")]


def test_unregistering(client):
    register(client, "/data/a", {"destination": "/local"})
    gone = client.delete("/data/a/_hooks/route")
    assert gone.status_code == 200
    assert gone.json["resource"] == "/data/a"
    assert client.get("/data/a/x").json["served"] == "a/x"
    assert client.get("/data/a/_hooks/route").status_code == 404
    assert client.get("/_hooks/routes").json == {"routes": []}
    again = client.delete("/data/a/_hooks/route")
    assert again.status_code == 404
    assert "message" in again.json
    assert client.delete("/data/never/_hooks/route").status_code == 404


def test_registration_paths_under_a_resource_the_catch_all_serves(client):
    # The app's /data/{rest:path} would match every one of these paths.
    assert client.get("/data/a/_hooks/route").status_code == 404
    register(client, "/data/a", {"destination": "/local"})
    assert client.get("/data/a/_hooks/route").json["destination"] == "/local"
    assert client.delete("/data/a/_hooks/route").status_code == 200


def test_registration_requests_are_never_hooked(client):
    register(client, "/data", {"destination": "/local"})
    assert "local" in client.get("/data/x").json
    # Under a hooked resource, and on it: still registrations, not forwarded.
    register(client, "/data/x", {"destination": "/local/x"})
    assert client.get("/data/_hooks/route").json["destination"] == "/local"
    assert client.get("/data/x/_hooks/route").json["destination"] == "/local/x"
    assert client.delete("/data/x/_hooks/route").status_code == 200
    assert client.get("/data/x/y").json["path"] == "/local/x/y"  # /data's hook again


def test_a_root_puts_the_routes_and_the_hooks_below_it(tmp_path):
    with TestClient(make_app(tmp_path, root="/data")) as client:
        register(client, "/data/a", {"destination": "/local"})
        assert client.get("/data/_hooks/routes").json["routes"][0]["resource"] == "/data/a"
        assert client.get("/_hooks/routes").status_code == 404
        # Outside the root, a _hooks path is no registration (the app's own route answers).
        outside = client.put("/local/x/_hooks/route", json={"destination": "/data"})
        assert outside.json["local"] == "x/_hooks/route"
        assert [r["resource"] for r in client.get("/data/_hooks/routes").json["routes"]] == [
            "/data/a"
        ]
        assert "local" in client.get("/data/a/b").json


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/data/a/_hooks/other", 404),
        ("GET", "/data/a/_hooks", 404),
        ("POST", "/data/a/_hooks/route", 405),
        ("PUT", "/_hooks/routes", 405),
    ],
    ids=["unknown-hooks-path", "bare-hooks-segment", "wrong-method", "wrong-method-on-listing"],
)
def test_the_hooks_namespace_is_reserved_under_a_hooked_resource(client, method, path, status):
    # The app's catch-all would serve these, and a hook would forward them: _hooks is the
    # registration's namespace, so a path there that is no registration route is refused.
    register(client, "/data/a", {"destination": "/local"})
    answer = client.open(path, method=method)
    assert answer.status_code == status, answer.text
    assert "message" in answer.json
    if status == 405:
        assert answer.headers["Allow"]


def test_the_listing_shows_only_hooks_that_apply(tmp_path):
    import sqlite3

    with TestClient(make_app(tmp_path)) as client:
        register(client, "/data/good", {"destination": "/local/good"})
    database = sqlite3.connect(tmp_path / "hooks.sqlite3")
    with database:
        database.executemany(
            "INSERT INTO workflowhttp_hooks VALUES (?, ?, ?, ?, ?)",
            [
                ("route", "/data/far", "", b'{"destination": "http://10.0.0.1/"}', None),
                ("route", "relative", "", b'{"destination": "/local"}', None),
                ("route", "/data/text-expiry", "", b'{"destination": "/local"}', "soon"),
            ],
        )
    database.close()
    with TestClient(make_app(tmp_path)) as client:
        listed = client.get("/_hooks/routes").json["routes"]
        assert [route["resource"] for route in listed] == ["/data/good"]
        assert client.get("/data/far/_hooks/route").status_code == 404


def test_stopping_does_not_wait_for_a_poll(tmp_path):
    import time

    app = make_app(tmp_path, poll_interval=5.0)
    with TestClient(app):
        pass  # started and stopped once, to warm up
    with TestClient(app):
        started = time.perf_counter()
        app.stop()
        stopped = time.perf_counter() - started
    assert stopped < 2.5, f"stop waited {stopped:.2f} s for the 5 s poll"
