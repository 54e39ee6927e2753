"""Deployment: the README's serve command, a real gunicorn on 127.0.0.1, spoken to over HTTP.

Each server runs ``python -m workflowhttp serve examples.bookstore.app:app`` in its own process
group with a private database and control-socket directory. It is always stopped by its PID:
SIGTERM, then SIGKILL to its group when it does not exit in time.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.servers import Server, serving, start, stop, wait_for_exit

pytestmark = pytest.mark.gunicorn

TOKEN = "gunicorn-test-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
START_DEADLINE = 20.0  # seconds for the server to answer /health
GRACEFUL_TIMEOUT = 3  # seconds, given to `serve --graceful-timeout`


def start_bookstore(directory: Path) -> Server:
    """Start the README's serve command on a free port; return once /health answers."""
    return start(
        "examples.bookstore.app:app",
        directory,
        workers=2,
        graceful_timeout=GRACEFUL_TIMEOUT,
        env={
            "BOOKSTORE_DB": str(directory / "bookstore.sqlite3"),
            "BOOKSTORE_ADMIN_TOKEN": TOKEN,
        },
        deadline=START_DEADLINE,
        wait_for_workers=False,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(start_bookstore(tmp_path_factory.mktemp("gunicorn"))) as running:
        yield running


# -- single exchanges --------------------------------------------------------------------------


def test_home_and_health(server: Server) -> None:
    home = server.request("GET", "/")
    assert home.status == 200
    assert home.headers["content-type"] == "text/html; charset=utf-8"
    assert b"<h1>Bookstore</h1>" in home.body
    health = server.request("GET", "/health")
    assert health.status == 200
    assert health.json["status"] == "ok"
    assert isinstance(health.json["books"], int)
    assert health.headers["server"].startswith("gunicorn")


def test_json_get(server: Server) -> None:
    answer = server.request("GET", "/books/6")
    assert answer.status == 200
    assert answer.headers["content-length"] == str(len(answer.body))
    assert answer.json == {
        "id": 6,
        "title": "Kindred",
        "author": {"id": 3, "name": "Octavia E. Butler"},
        "year": 1979,
        "tags": ["classic", "science-fiction"],
    }
    listing = server.request("GET", "/books?tag=classic&limit=2")
    assert [book["id"] for book in listing.json["items"]] == [1, 2]
    assert listing.json["next"] == "/books?tag=classic&limit=2&offset=2"


def test_head(server: Server) -> None:
    answer = server.request("HEAD", "/books/6")
    assert (answer.status, answer.body) == (200, b"")
    assert int(answer.headers["content-length"]) > 0


def test_post_is_201_and_every_worker_sees_it(server: Server) -> None:
    created = server.request("POST", "/books", {"title": "Dawn", "author_id": 3, "year": 1987})
    assert created.status == 201, created
    location = created.headers["location"]
    assert location == f"/books/{created.json['id']}"
    # Sync workers close each connection: several requests spread over both workers.
    for _ in range(10):
        again = server.request("GET", location)
        assert again.status == 200, again
        assert again.json["title"] == "Dawn"


def test_not_found_is_json(server: Server) -> None:
    missing = server.request("GET", "/books/999999")
    assert (missing.status, missing.json) == (404, {"message": "No book with id 999999"})
    nowhere = server.request("GET", "/no/such/page")
    assert (nowhere.status, nowhere.json) == (404, {"message": "Not Found"})


def test_method_not_allowed_has_allow(server: Server) -> None:
    answer = server.request("PUT", "/books", {"title": "X"})
    assert answer.status == 405
    assert answer.headers["allow"] == "GET, HEAD, POST, OPTIONS"
    assert answer.json == {"message": "Method Not Allowed"}
    options = server.request("OPTIONS", "/books/1")
    assert (options.status, options.headers["allow"]) == (204, "GET, HEAD, DELETE, OPTIONS")


def test_bad_request_has_errors(server: Server) -> None:
    invalid = server.request(
        "POST", "/books", {"title": "X", "author_id": 1, "year": 1200, "tags": ["fine", "Not Fine"]}
    )
    assert invalid.status == 400
    assert invalid.json["message"] == "Bad Request"
    assert [error["path"] for error in invalid.json["errors"]] == ["year", "tags.1"]
    tags = server.request(
        "POST", "/books", {"title": "X", "author_id": 1, "year": 2000, "tags": ["fine", "Not Fine"]}
    )
    assert [error["path"] for error in tags.json["errors"]] == ["tags.1"]
    garbage = server.request("POST", "/books", "{not json", {"Content-Type": "application/json"})
    assert garbage.status == 400
    assert garbage.json["message"].startswith("Invalid JSON")
    assert server.request("GET", "/books/abc").json["errors"][0]["path"] == "id"
    assert server.request("GET", "/books?limit=0").status == 400


def test_forbidden_without_the_token(server: Server) -> None:
    created = server.request("POST", "/books", {"title": "Doomed", "author_id": 1, "year": 2001})
    location = created.headers["location"]
    anonymous = server.request("DELETE", location)
    assert anonymous.status == 403
    assert anonymous.json["message"].startswith("This needs an admin token")
    assert "hint" in anonymous.json
    wrong = server.request("DELETE", location, headers={"Authorization": "Bearer guess"})
    assert (wrong.status, wrong.json["message"]) == (403, "That admin token is not valid.")
    html = server.request("DELETE", location, headers={"Accept": "text/html"})
    assert html.status == 403
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert server.request("GET", location).status == 200
    deleted = server.request("DELETE", location, headers=ADMIN)
    assert (deleted.status, deleted.body) == (204, b"")
    assert server.request("GET", location).status == 404


def test_the_access_log_has_one_line_per_request(server: Server) -> None:
    # The bookstore has a LogProcessor: its stream writes the access lines, gunicorn does not.
    request_id = server.request("GET", "/health?from=access-log-test").headers["x-request-id"]
    deadline = time.monotonic() + 5
    while request_id not in server.output():
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)
    assert server.output().count(request_id) == 1
    assert "/health?from=access-log-test" not in server.output()  # no line from gunicorn
    assert server.output().count("Booting worker with pid") >= 2


# -- load --------------------------------------------------------------------------------------


def test_burst_of_requests_from_threads(server: Server) -> None:
    """200 requests from 4 threads, reads and writes mixed: no wrong answer."""
    before = server.request("GET", "/health").json["books"]
    created: list[int] = []
    lock = threading.Lock()

    def one(number: int) -> str | None:
        kind = number % 5
        try:
            if kind == 0:
                answer = server.request("GET", "/books/6")
                ok = answer.status == 200 and answer.json["title"] == "Kindred"
            elif kind == 1:
                answer = server.request("GET", "/health")
                ok = answer.status == 200 and answer.json["status"] == "ok"
            elif kind == 2:
                answer = server.request("GET", "/books?author=2&limit=1")
                ok = answer.status == 200 and answer.json["items"][0]["id"] == 4
            elif kind == 3:
                answer = server.request("GET", f"/books/{10_000 + number}")
                ok = answer.status == 404
            else:
                answer = server.request(
                    "POST", "/books", {"title": f"Burst {number}", "author_id": 2, "year": 1990}
                )
                ok = answer.status == 201 and answer.json["title"] == f"Burst {number}"
                if ok:
                    with lock:
                        created.append(answer.json["id"])
        except Exception as ex:  # a refused or reset connection is a wrong answer too
            return f"request {number}: {type(ex).__name__}: {ex}"
        return None if ok else f"request {number}: {answer!r}"

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(one, range(200), timeout=45))
    wrong = [outcome for outcome in outcomes if outcome is not None]
    assert wrong == [], wrong[:5]
    assert time.monotonic() - started < 45
    assert len(created) == len(set(created)) == 40
    assert server.request("GET", "/health").json["books"] == before + 40


# -- shutdown ----------------------------------------------------------------------------------


def test_sigterm_stops_the_master_within_the_graceful_timeout(tmp_path: Path) -> None:
    running = start_bookstore(tmp_path / "graceful")
    try:
        assert running.request("GET", "/health").status == 200
        running.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = wait_for_exit(running, GRACEFUL_TIMEOUT + 5)
        elapsed = time.monotonic() - started
        assert code == 0, running.output()
        assert elapsed < GRACEFUL_TIMEOUT + 2, elapsed
        assert "Handling signal: term" in running.output()
        with pytest.raises(OSError):
            running.request("GET", "/health", timeout=2)
    finally:
        stop(running)  # a no-op when it exited; SIGKILLs the group otherwise
