"""Invalid route hook registrations over HTTP: each answers 400 (or 415) with every reason, and
nothing is hooked. Gateleen logs a bad regex and silently drops the hook instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hooks_apps import make_app, register
from workflowhttp.testing import TestClient


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(tmp_path)) as started:
        yield started


ALLOWED = "http://127.0.0.1:9001/api"
INVALID = [
    ("unknown-property", {"destination": "/local", "bogus": 1}, "bogus"),
    (
        "unknown-rule-property",
        {"destination": "/local", "headers": [{"header": "a", "x": 1}]},
        "headers.0.x",
    ),
    ("missing-destination", {"methods": ["GET"]}, "destination"),
    ("destination-not-a-string", {"destination": 5}, "destination"),
    ("methods-not-a-list", {"destination": "/local", "methods": "GET"}, "methods"),
    ("method-not-a-string", {"destination": "/local", "methods": [1]}, "methods.0"),
    ("headers-not-a-list", {"destination": "/local", "headers": {"a": "b"}}, "headers"),
    (
        "rule-without-header",
        {"destination": "/local", "headers": [{"value": "v"}]},
        "headers.0.header",
    ),
    (
        "rule-unknown-mode",
        {"destination": "/local", "headers": [{"header": "a", "value": "b", "mode": "replace"}]},
        "headers.0.mode",
    ),
    ("filter-not-a-string", {"destination": "/local", "headersFilter": 5}, "headersFilter"),
    (
        "translate-not-an-object",
        {"destination": "/local", "translateStatus": [200]},
        "translateStatus",
    ),
    (
        "translate-status-a-string",
        {"destination": "/local", "translateStatus": {"4..": "200"}},
        "translateStatus",
    ),
    ("timeout-a-string", {"destination": "/local", "timeout": "5"}, "timeout"),
    ("timeout-zero", {"destination": "/local", "timeout": 0}, "timeout"),
    ("timeout-huge", {"destination": "/local", "timeout": 1e9}, "timeout"),
    ("full-url-a-string", {"destination": "/local", "fullUrl": "yes"}, "fullUrl"),
    ("method-unknown", {"destination": "/local", "methods": ["GET", "TRACE"]}, "methods.1"),
    ("method-lower-case", {"destination": "/local", "methods": ["get"]}, "methods.0"),
    ("method-connect", {"destination": "/local", "methods": ["CONNECT"]}, "methods.0"),
    ("filter-unbalanced", {"destination": "/local", "headersFilter": "x-a: (a"}, "headersFilter"),
    ("filter-backreference", {"destination": "/local", "headersFilter": "(a)\\1"}, "headersFilter"),
    ("filter-lookahead", {"destination": "/local", "headersFilter": "(?=x)x"}, "headersFilter"),
    ("filter-lookbehind", {"destination": "/local", "headersFilter": "(?<!y)x"}, "headersFilter"),
    ("filter-too-long", {"destination": "/local", "headersFilter": "a" * 5000}, "headersFilter"),
    (
        "translate-bad-regex",
        {"destination": "/local", "translateStatus": {"4(": 200}},
        "translateStatus.4(",
    ),
    (
        "translate-lookahead",
        {"destination": "/local", "translateStatus": {"(?=4)...": 200}},
        "translateStatus.(?=4)...",
    ),
    (
        "translate-status-999",
        {"destination": "/local", "translateStatus": {"4..": 999}},
        "translateStatus.4..",
    ),
    (
        "translate-status-99",
        {"destination": "/local", "translateStatus": {"4..": 99}},
        "translateStatus.4..",
    ),
    (
        "translate-status-600",
        {"destination": "/local", "translateStatus": {"4..": 600}},
        "translateStatus.4..",
    ),
    (
        "rule-name-crlf",
        {"destination": "/local", "headers": [{"header": "x-a\r\nx-b", "value": "1"}]},
        "headers.0.header",
    ),
    (
        "rule-name-colon",
        {"destination": "/local", "headers": [{"header": "x-a: 1"}]},
        "headers.0.header",
    ),
    ("rule-name-empty", {"destination": "/local", "headers": [{"header": ""}]}, "headers.0.header"),
    (
        "rule-value-crlf",
        {"destination": "/local", "headers": [{"header": "x-a", "value": "1\r\nx-b: 2"}]},
        "headers.0.value",
    ),
    (
        "rule-value-lf",
        {"destination": "/local", "headers": [{"header": "x-a", "value": "1\nb"}]},
        "headers.0.value",
    ),
    (
        "rule-value-nul",
        {"destination": "/local", "headers": [{"header": "x-a", "value": "1\0"}]},
        "headers.0.value",
    ),
    (
        "rule-reference-not-a-name",
        {"destination": "/local", "headers": [{"header": "x-a", "value": "{x b}"}]},
        "headers.0.value",
    ),
    ("external-none-allowed", {"destination": "http://127.0.0.1:9002/x"}, "destination"),
    ("external-other-port", {"destination": "http://127.0.0.1:9002/api/x"}, "destination"),
    ("external-other-host", {"destination": "http://localhost:9001/api/x"}, "destination"),
    ("external-other-scheme", {"destination": "https://127.0.0.1:9001/api/x"}, "destination"),
    ("external-path-prefix-only", {"destination": "http://127.0.0.1:9001/apix"}, "destination"),
    ("external-dot-segments", {"destination": "http://127.0.0.1:9001/api/../admin"}, "destination"),
    ("external-credentials", {"destination": "http://127.0.0.1:9001@evil/"}, "destination"),
    (
        "external-credentials-allowed-path",
        {"destination": "http://user:pw@127.0.0.1:9001/api/x"},
        "destination",
    ),
    ("external-query", {"destination": "http://127.0.0.1:9001/api/x?a=1"}, "destination"),
    ("external-fragment", {"destination": "http://127.0.0.1:9001/api/x#f"}, "destination"),
    ("scheme-relative", {"destination": "//127.0.0.1:9001/api/x"}, "destination"),
    ("other-scheme", {"destination": "ftp://127.0.0.1:9001/api/x"}, "destination"),
    ("empty-destination", {"destination": ""}, "destination"),
    ("relative-destination", {"destination": "local"}, "destination"),
    ("local-with-query", {"destination": "/local?a=1"}, "destination"),
    ("local-with-space", {"destination": "/local/a b"}, "destination"),
    ("local-dot-segments", {"destination": "/local/../data/a"}, "destination"),
    ("local-hooks-path", {"destination": "/local/_hooks/route"}, "destination"),
    ("local-loop-itself", {"destination": "/data/a"}, "destination"),
    ("local-loop-below", {"destination": "/data/a/b"}, "destination"),
    ("local-loop-trailing-slash", {"destination": "/data/a/"}, "destination"),
]


@pytest.mark.parametrize(
    ("spec", "where"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_an_invalid_registration_is_a_400_with_the_reason(tmp_path, spec, where):
    with TestClient(make_app(tmp_path, allowed_destinations=[ALLOWED])) as client:
        answer = client.put("/data/a/_hooks/route", json=spec)
        assert answer.status_code == 400, answer.text
        assert answer.json["message"]
        paths = [error["path"] for error in answer.json["errors"]]
        assert paths == [where], answer.json
        assert answer.json["errors"][0]["message"]
        assert client.get("/_hooks/routes").json == {"routes": []}
        assert client.get("/data/a/b").json["served"] == "a/b"  # nothing was hooked


FRAMING = [
    ("content-length", "{x-len}"),
    ("Content-Length", "5"),
    ("transfer-encoding", "chunked"),
    ("Transfer-Encoding", "{x-te}"),
    ("connection", "close"),
    ("keep-alive", "timeout=1"),
    ("proxy-connection", "keep-alive"),
    ("te", "trailers"),
    ("trailer", "x-a"),
    ("upgrade", "h2c"),
]


@pytest.mark.parametrize(("name", "value"), FRAMING, ids=[f"{n}-{v}" for n, v in FRAMING])
def test_a_header_rule_on_the_message_framing_or_a_hop_by_hop_header_is_refused(
    tmp_path, name, value
):
    # A rule "content-length: {x-len}" would let any client set the upstream's Content-Length
    # for the body the proxy sends: the rest of the body is then the upstream's next request
    # on the pooled connection (request smuggling). Framing is the proxy's, never a rule's.
    with TestClient(make_app(tmp_path, allowed_destinations=[ALLOWED])) as client:
        for destination in ("/local", ALLOWED + "/x"):
            spec = {"destination": destination, "headers": [{"header": name, "value": value}]}
            answer = client.put("/data/a/_hooks/route", json=spec)
            assert answer.status_code == 400, answer.text
            assert [error["path"] for error in answer.json["errors"]] == ["headers.0.header"]
        removal = {"destination": "/local", "headers": [{"header": name}]}
        assert client.put("/data/a/_hooks/route", json=removal).status_code == 400


@pytest.mark.parametrize(
    "destination",
    [f"{ALLOWED}", f"{ALLOWED}/", f"{ALLOWED}/x", f"{ALLOWED}/x/y", "http://127.0.0.1:9001/api"],
    ids=["the-path", "the-path-slash", "below", "deeper", "same"],
)
def test_an_allowed_destination_allows_the_paths_below_it(tmp_path, destination):
    with TestClient(make_app(tmp_path, allowed_destinations=[ALLOWED])) as client:
        assert register(client, "/data/a", {"destination": destination})["destination"]


def test_the_credentials_trick_is_refused_even_when_its_user_part_is_allowed(tmp_path):
    options = {"allowed_destinations": ["http://127.0.0.1:9001/"]}
    with TestClient(make_app(tmp_path, **options)) as client:
        trick = client.put(
            "/data/a/_hooks/route", json={"destination": "http://127.0.0.1:9001@evil/"}
        )
        assert trick.status_code == 400
        assert register(client, "/data/a", {"destination": "http://127.0.0.1:9001/x"})


@pytest.mark.parametrize(
    "value",
    ["0", "1e3", "abc", "", "1.5", "-2", "99999999999", "315360001", "1" * 40, "0x10"],
    ids=[
        "zero",
        "exponent",
        "word",
        "empty",
        "fraction",
        "minus-two",
        "eleven-digits",
        "over-ten-years",
        "forty-digits",
        "hex",
    ],
)
def test_a_bad_expire_after_is_a_400(client, value):
    answer = client.put(
        "/data/a/_hooks/route", json={"destination": "/local"}, headers={"X-Expire-After": value}
    )
    assert answer.status_code == 400, answer.text
    assert [error["path"] for error in answer.json["errors"]] == ["X-Expire-After"]
    assert client.get("/data/a").json["served"] == "a"


def test_every_reason_is_listed_at_once(tmp_path):
    spec = {
        "destination": "http://127.0.0.1:9001@evil/",
        "methods": ["GET", "FETCH"],
        "bogus": True,
        "timeout": "soon",
        "headersFilter": "(a)\\1",
        "translateStatus": {"4..": 999, "(?=5)": 200},
        "headers": [{"header": "x-a\r\n", "value": "a\nb"}],
    }
    with TestClient(make_app(tmp_path)) as client:
        answer = client.put("/data/a/_hooks/route", json=spec, headers={"X-Expire-After": "0"})
        assert answer.status_code == 400
        paths = sorted(error["path"] for error in answer.json["errors"])
        assert paths == sorted(
            [
                "bogus",
                "timeout",
                "destination",
                "methods.1",
                "headers.0.header",
                "headers.0.value",
                "headersFilter",
                "translateStatus.4..",
                "translateStatus.(?=5)",
                "X-Expire-After",
            ]
        )


def test_type_errors_and_a_missing_destination_are_listed_with_the_rest(client):
    spec = {"methods": ["NOPE"], "fullUrl": 1, "headersFilter": "("}
    answer = client.put("/data/a/_hooks/route", json=spec)
    assert answer.status_code == 400
    paths = sorted(error["path"] for error in answer.json["errors"])
    assert paths == ["destination", "fullUrl", "headersFilter", "methods.0"]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{", "application/json", 400),
        (b"not json", "application/json", 400),
        (b"", "application/json", 400),
        (b"[]", "application/json", 400),
        (b'"/local"', "application/json", 400),
        (b"[" * 200 + b"]" * 200, "application/json", 400),
        (b'{"destination": "/local"}', None, 415),
        (b'{"destination": "/local"}', "text/plain", 415),
        (b"destination=/local", "application/x-www-form-urlencoded", 415),
    ],
    ids=[
        "truncated",
        "not-json",
        "empty",
        "array",
        "string",
        "too-deep",
        "no-content-type",
        "text-plain",
        "form",
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(client, body, content_type, status):
    answer = client.put("/data/a/_hooks/route", data=body, content_type=content_type)
    assert answer.status_code == status, answer.text
    assert answer.json["message"]
    assert client.get("/data/a").json["served"] == "a"


def test_a_json_suffix_media_type_is_json(client):
    answer = client.put(
        "/data/a/_hooks/route",
        data=b'{"destination": "/local"}',
        content_type="application/vnd.hooks+json; charset=utf-8",
    )
    assert answer.status_code == 200, answer.text
