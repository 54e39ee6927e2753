"""Reading the request under a real gunicorn: what gunicorn passes on, the app refuses.

gunicorn 27 de-chunks ``Transfer-Encoding: gzip, chunked`` and hands the app the still
compressed bytes, and it answers an HTTP/1.1 request without ``Host``; the app must refuse
both (501, 400). The server runs ``python -m workflowhttp serve tests.apps.hostile_app:app``
on 127.0.0.1 (see ``tests/servers.py``); requests are written on plain sockets, so the bytes on
the wire are exactly the ones below.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator

import pytest

from tests.servers import Server, exchange, serving, start

pytestmark = pytest.mark.gunicorn

APP = "tests.apps.hostile_app:app"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("request")
    with serving(start(APP, directory, workers=1, graceful_timeout=5)) as running:
        yield running


def status_and_body(received: bytes) -> tuple[int, bytes]:
    head, _, body = received.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1."), received[:300]
    return int(status_line.split(b" ")[1]), body


def chunked(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n"


GZIP_HELLO = gzip.compress(b"hello", mtime=0)


def post(*headers: bytes, body: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    return (
        b"POST /body?token=raw "
        + version
        + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + b"".join(headers)
        + b"\r\n"
        + body
    )


def get(version: bytes, *headers: bytes) -> bytes:
    return (
        b"GET /echo?token=raw "
        + version
        + b"\r\n"
        + b"".join(headers)
        + b"Connection: close\r\n\r\n"
    )


# (id, request, status, who refuses it: the app answers JSON, gunicorn HTML)
CASES: list[tuple[str, bytes, int, str]] = [
    (
        "gzip-then-chunked",
        post(b"Transfer-Encoding: gzip, chunked\r\n", body=chunked(GZIP_HELLO)),
        501,
        "app",
    ),
    (
        "deflate-then-chunked",
        post(
            b"Transfer-Encoding: deflate,chunked\r\n",
            body=chunked(zlib.compress(b"hello")),
        ),
        501,
        "app",
    ),
    (
        "gzip-and-chunked-on-two-lines",
        post(
            b"Transfer-Encoding: gzip\r\n",
            b"Transfer-Encoding: chunked\r\n",
            body=chunked(GZIP_HELLO),
        ),
        501,
        "app",
    ),
    ("http-1.1-without-host", get(b"HTTP/1.1"), 400, "app"),
    # Refused by gunicorn itself, before the app: kept so that it stays true.
    (
        "content-length-superscript-two",
        post(b"Content-Length: \xb2\r\n", body=b"ab"),
        400,
        "gunicorn",
    ),
    (
        "content-length-thousands-of-digits",
        post(b"Content-Length: " + b"9" * 5000 + b"\r\n"),
        400,
        "gunicorn",
    ),
]


@pytest.mark.parametrize(
    ("request_bytes", "status", "refused_by"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_malformed_request_is_refused(server, request_bytes, status, refused_by):
    answer, body = status_and_body(exchange(server.port, request_bytes))
    assert answer == status, body[:300]
    if refused_by == "app":
        assert isinstance(json.loads(body)["message"], str), body[:300]
    else:
        assert body.lstrip().startswith(b"<"), body[:300]
    assert server.get_json("/echo?token=next")["token"] == "next"


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (get(b"HTTP/1.0"), {"token": "raw"}),
        (get(b"HTTP/1.1", b"Host: 127.0.0.1\r\n"), {"token": "raw"}),
        (post(b"Transfer-Encoding: chunked\r\n", body=chunked(b"hello")), {"length": 5}),
    ],
    ids=["http-1.0-without-host", "http-1.1-with-host", "chunked-alone"],
)
def test_a_well_formed_request_is_served(server, request_bytes, expected):
    answer, body = status_and_body(exchange(server.port, request_bytes))
    assert answer == 200, body[:300]
    data = json.loads(body)
    assert {key: data[key] for key in expected} == expected
