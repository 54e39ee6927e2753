"""The bookstore example (examples/bookstore/), driven through the validating TestClient."""

from __future__ import annotations

import importlib
import json
import logging
import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from workflowhttp import App
from workflowhttp.testing import TestClient

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
HINT = "Admin routes need the header 'Authorization: Bearer <token>'."


@pytest.fixture(autouse=True)
def _stop_streams(stop_streams: None) -> None:
    """Each bookstore app logs through an event stream: shut down those a test started."""


@pytest.fixture
def db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private database file, named through the environment like in production."""
    path = tmp_path / "bookstore.sqlite3"
    monkeypatch.setenv("BOOKSTORE_DB", str(path))
    monkeypatch.setenv("BOOKSTORE_ADMIN_TOKEN", TOKEN)
    monkeypatch.syspath_prepend(str(ROOT))
    return path


@pytest.fixture
def bookstore(db_path: Path) -> App:
    from examples.bookstore.app import create_app

    return create_app()  # reads BOOKSTORE_DB and BOOKSTORE_ADMIN_TOKEN


@pytest.fixture
def client(bookstore: App) -> TestClient:
    return TestClient(bookstore)


def titles(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [book["title"] for book in response.json["items"]]


def error_paths(response: Any) -> list[str]:
    assert response.status_code == 400, response.text
    assert response.json["message"] == "Bad Request"
    return [error["path"] for error in response.json["errors"]]


# -- the environment ---------------------------------------------------------------------------


def test_create_app_uses_the_database_named_by_the_environment(
    client: TestClient, db_path: Path
) -> None:
    created = client.post("/books", json={"title": "Dawn", "author_id": 3, "year": 1987})
    assert created.status_code == 201
    with sqlite3.connect(db_path) as connection:
        rows = connection.execute("SELECT title FROM books WHERE id = ?", (created.json["id"],))
        assert rows.fetchall() == [("Dawn",)]
    connection.close()


def test_the_module_level_app_respects_bookstore_db(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "examples.bookstore.app", raising=False)
    module = importlib.import_module("examples.bookstore.app")
    assert isinstance(module.app, App)
    assert db_path.is_file()  # created and seeded on import
    response = TestClient(module.app).delete("/books/1", headers=ADMIN)
    assert response.status_code == 204
    connection = sqlite3.connect(db_path)
    try:
        assert connection.execute("SELECT count(*) FROM books").fetchone() == (6,)
    finally:
        connection.close()


def test_data_outlives_the_app_and_is_seeded_once(db_path: Path) -> None:
    from examples.bookstore.app import create_app

    first = TestClient(create_app())
    assert first.post("/books", json={"title": "Dawn", "author_id": 3, "year": 1987}).status_code
    again = TestClient(create_app())  # a second worker or a restart: no second seed
    assert again.get("/health").json == {"status": "ok", "books": 8}


def test_memory_databases_are_private(db_path: Path) -> None:
    from examples.bookstore.app import create_app

    one, two = TestClient(create_app(":memory:")), TestClient(create_app(":memory:"))
    assert one.delete("/books/1", headers={"Authorization": "Bearer let-me-in"}).status_code == 403
    assert one.delete("/books/1", headers=ADMIN).status_code == 204
    assert one.get("/health").json["books"] == 6
    assert two.get("/health").json["books"] == 7


def test_every_request_closes_its_connection(
    bookstore: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.bookstore.storage import Database

    opened: list[sqlite3.Connection] = []
    connect = Database.connect

    def remember(self: Database) -> sqlite3.Connection:
        connection = connect(self)
        opened.append(connection)
        return connection

    monkeypatch.setattr(Database, "connect", remember)
    client = TestClient(bookstore)
    assert client.get("/books/1").status_code == 200
    assert client.get("/books/99").status_code == 404  # an error path closes it too
    assert client.get("/").status_code == 200  # a route without storage opens none
    assert len(opened) == 2
    for connection in opened:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            connection.execute("SELECT 1")


# -- reading -----------------------------------------------------------------------------------


def test_home_page_lists_the_routes(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.content_type == "text/html; charset=utf-8"
    assert "<code>DELETE /books/{id}</code>" in response.text


def test_health(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.json == {"status": "ok", "books": 7}


def test_list_first_page(client: TestClient) -> None:
    page = client.get("/books").json
    assert (page["total"], page["limit"], page["offset"], page["next"]) == (7, 10, 0, None)
    assert [book["id"] for book in page["items"]] == [1, 2, 3, 4, 5, 6, 7]
    assert page["items"][0] == {
        "id": 1,
        "title": "A Wizard of Earthsea",
        "author": {"id": 1, "name": "Ursula K. Le Guin"},
        "year": 1968,
        "tags": ["classic", "fantasy"],
    }


def test_pagination_follows_next_links(client: TestClient) -> None:
    seen: list[int] = []
    url: str | None = "/books?limit=3"
    pages = 0
    while url is not None and pages < 10:
        page = client.get(url).json
        assert len(page["items"]) <= 3
        seen.extend(book["id"] for book in page["items"])
        url = page["next"]
        pages += 1
    assert pages == 3
    assert seen == [1, 2, 3, 4, 5, 6, 7]


def test_pagination_keeps_the_filters(client: TestClient) -> None:
    page = client.get("/books?tag=science-fiction&limit=2").json
    assert page["total"] == 4
    assert page["next"] == "/books?tag=science-fiction&limit=2&offset=2"
    assert titles(client.get(page["next"])) == ["Kindred", "Parable of the Sower"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("author=2", ["Invisible Cities", "If on a winter's night a traveler"]),
        (
            "tag=classic",
            ["A Wizard of Earthsea", "The Left Hand of Darkness", "Invisible Cities", "Kindred"],
        ),
        ("q=THE", ["The Left Hand of Darkness", "The Dispossessed", "Parable of the Sower"]),
        (
            "year_from=1970&year_to=1979",
            [
                "The Dispossessed",
                "Invisible Cities",
                "If on a winter's night a traveler",
                "Kindred",
            ],
        ),
        ("author=1&tag=science-fiction&year_to=1970", ["The Left Hand of Darkness"]),
        ("q=%25", []),  # a LIKE wildcard is searched for literally
        ("q=_", []),
        ("author=99", []),
        ("offset=6", ["Parable of the Sower"]),
        ("offset=100", []),
    ],
    ids=[
        "author",
        "tag",
        "text",
        "years",
        "combined",
        "percent",
        "underscore",
        "nobody",
        "offset",
        "past-the-end",
    ],
)
def test_filters(client: TestClient, query: str, expected: list[str]) -> None:
    assert titles(client.get(f"/books?{query}")) == expected


@pytest.mark.parametrize(
    ("query", "path"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=many", "limit"),
        ("offset=-1", "offset"),
        ("author=ursula", "author"),
        ("year_from=late", "year_from"),
    ],
    ids=[
        "limit-zero",
        "limit-too-big",
        "limit-not-int",
        "negative-offset",
        "author-not-int",
        "year-not-int",
    ],
)
def test_bad_filters_are_400_at_their_parameter(client: TestClient, query: str, path: str) -> None:
    assert error_paths(client.get(f"/books?{query}")) == [path]


def test_get_one_book(client: TestClient) -> None:
    response = client.get("/books/6")
    assert response.status_code == 200
    assert response.json == {
        "id": 6,
        "title": "Kindred",
        "author": {"id": 3, "name": "Octavia E. Butler"},
        "year": 1979,
        "tags": ["classic", "science-fiction"],
    }
    assert client.get("/books/6/").json["id"] == 6  # the trailing slash is insignificant


def test_unknown_book_is_404_json(client: TestClient) -> None:
    response = client.get("/books/99")
    assert response.status_code == 404
    assert response.content_type == "application/json"
    assert response.json == {"message": "No book with id 99"}


def test_non_integer_id_is_400(client: TestClient) -> None:
    assert error_paths(client.get("/books/abc")) == ["id"]


def test_unknown_path_is_404(client: TestClient) -> None:
    response = client.get("/bookz")
    assert (response.status_code, response.json) == (404, {"message": "Not Found"})


def test_wrong_method_is_405_with_allow(client: TestClient) -> None:
    response = client.put("/books", json={})
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD, POST, OPTIONS"
    assert response.json == {"message": "Method Not Allowed"}


def test_head_and_options(client: TestClient) -> None:
    head = client.head("/books/1")
    assert (head.status_code, head.data) == (200, b"")
    options = client.options("/books/1")
    assert (options.status_code, options.headers["Allow"]) == (204, "GET, HEAD, DELETE, OPTIONS")


# -- creating ----------------------------------------------------------------------------------


def test_create_book_is_201_with_location(client: TestClient) -> None:
    body = {"title": "Lilith's Brood", "author_id": 3, "year": 2000, "tags": ["science-fiction"]}
    response = client.post("/books", json=body)
    assert response.status_code == 201
    assert response.json == {
        "id": 8,
        "title": "Lilith's Brood",
        "author": {"id": 3, "name": "Octavia E. Butler"},
        "year": 2000,
        "tags": ["science-fiction"],
    }
    assert response.headers["Location"] == "/books/8"
    assert client.get("/books/8").json == response.json
    assert client.get("/books?author=3").json["total"] == 3


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ({"author_id": 1, "year": 2000}, ["title"]),
        ({"title": "", "author_id": 1, "year": 2000}, ["title"]),
        ({"title": "X", "year": 2000}, ["author_id"]),
        ({"title": "X", "author_id": "one", "year": 2000}, ["author_id"]),
        ({"title": "X", "author_id": 1, "year": 1200}, ["year"]),
        ({"title": "X", "author_id": 1, "year": 2000, "tags": ["ok", "Not OK"]}, ["tags.1"]),
        ({"title": "X", "author_id": 1, "year": 2000, "isbn": "1"}, ["isbn"]),
        ({"title": "X", "author_id": 99, "year": 2000}, ["author_id"]),
        ([], ["book"]),
    ],
    ids=[
        "missing-title",
        "empty-title",
        "missing-author",
        "author-not-int",
        "year-too-early",
        "bad-tag",
        "unknown-field",
        "unknown-author",
        "not-an-object",
    ],
)
def test_invalid_book_is_400_with_error_paths(
    client: TestClient, body: Any, paths: list[str]
) -> None:
    response = client.post("/books", json=body)
    assert error_paths(response) == paths
    assert all(error["message"] for error in response.json["errors"])
    assert client.get("/health").json["books"] == 7  # nothing was stored


def test_unknown_author_message(client: TestClient) -> None:
    response = client.post("/books", json={"title": "X", "author_id": 99, "year": 2000})
    assert response.json["errors"] == [{"path": "author_id", "message": "No author with id 99"}]


def test_missing_required_field_is_reported_at_its_path(client: TestClient) -> None:
    response = client.post("/books", json={"title": "X", "year": 2000})
    assert response.json["errors"] == [
        {"path": "author_id", "message": "Object missing required field `author_id`"}
    ]


def test_body_problems(client: TestClient) -> None:
    assert error_paths(client.post("/books")) == ["book"]
    invalid = client.post("/books", data="{", content_type="application/json")
    assert invalid.status_code == 400
    assert invalid.json["message"].startswith("Invalid JSON")
    xml = client.post("/books", data="<book/>", content_type="application/xml")
    assert xml.status_code == 415


# -- the admin token and the friendly 403 ------------------------------------------------------


def test_delete_without_token_is_the_friendly_403(client: TestClient) -> None:
    response = client.delete("/books/1")
    assert response.status_code == 403
    assert response.content_type == "application/json"
    assert response.json == {
        "message": "This needs an admin token: send 'Authorization: Bearer <token>'.",
        "hint": HINT,
    }
    assert client.get("/books/1").status_code == 200  # still there


@pytest.mark.parametrize(
    "authorization",
    ["Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "],
    ids=["wrong-token", "wrong-scheme", "longer-token", "empty-token"],
)
def test_bad_credentials_are_403(client: TestClient, authorization: str) -> None:
    response = client.delete("/books/1", headers={"Authorization": authorization})
    assert response.status_code == 403
    assert response.json["hint"] == HINT
    assert client.get("/books/1").status_code == 200


def test_browsers_get_an_html_403(client: TestClient) -> None:
    response = client.delete("/books/1", headers={"Accept": "text/html,*/*;q=0.8"})
    assert response.status_code == 403
    assert response.content_type == "text/html; charset=utf-8"
    assert "<h1>No entry</h1>" in response.text
    assert "Bearer &lt;token&gt;" in response.text  # escaped


def test_delete_with_token_is_204(client: TestClient) -> None:
    response = client.delete("/books/1", headers=ADMIN)
    assert (response.status_code, response.data) == (204, b"")
    assert client.get("/books/1").status_code == 404
    again = client.delete("/books/1", headers=ADMIN)
    assert (again.status_code, again.json) == (404, {"message": "No book with id 1"})
    assert client.get("/health").json["books"] == 6


def test_scheme_is_case_insensitive(client: TestClient) -> None:
    response = client.delete("/books/2", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 204


def test_only_admin_routes_need_the_token(client: TestClient) -> None:
    for path in ("/", "/health", "/books", "/books/1", "/authors", "/authors/1"):
        assert client.get(path).status_code == 200, path
    body = {"title": "X", "author_id": 1, "year": 2000}
    assert client.post("/books", json=body).status_code == 201


# -- authors -----------------------------------------------------------------------------------


def test_authors(client: TestClient) -> None:
    names = [author["name"] for author in client.get("/authors").json]
    assert names == ["Italo Calvino", "Octavia E. Butler", "Ursula K. Le Guin"]
    calvino = client.get("/authors/2").json
    assert calvino["name"] == "Italo Calvino"
    assert [book["year"] for book in calvino["books"]] == [1972, 1979]
    assert client.get("/authors/9").json == {"message": "No author with id 9"}


def test_create_author_from_json_or_form(client: TestClient) -> None:
    created = client.post("/authors", json={"name": "Jorge Luis Borges"})
    assert (created.status_code, created.headers["Location"]) == (201, "/authors/4")
    form = client.post("/authors", data={"name": "Stanisław Lem"})
    assert (form.status_code, form.json) == (201, {"id": 5, "name": "Stanisław Lem"})
    duplicate = client.post("/authors", json={"name": "Jorge Luis Borges"})
    assert duplicate.status_code == 409
    assert error_paths(client.post("/authors", json={"name": ""})) == ["name"]


def test_delete_authors(client: TestClient) -> None:
    assert client.delete("/authors/1").status_code == 403
    busy = client.delete("/authors/1", headers=ADMIN)
    assert (busy.status_code, busy.json) == (409, {"message": "Delete the author's books first"})
    new = client.post("/authors", json={"name": "Nobody Yet"}).json
    assert client.delete(f"/authors/{new['id']}", headers=ADMIN).status_code == 204
    assert client.delete(f"/authors/{new['id']}", headers=ADMIN).status_code == 404


# -- the app's shape ---------------------------------------------------------------------------


def test_routes_and_groups(bookstore: App) -> None:
    table = {(",".join(route.methods), route.path): route for route in bookstore.routes}
    assert set(table) == {
        ("GET", "/"),
        ("GET", "/health"),
        ("GET", "/books"),
        ("GET", "/books/{id}"),
        ("POST", "/books"),
        ("DELETE", "/books/{id}"),
        ("GET", "/authors"),
        ("GET", "/authors/{id}"),
        ("POST", "/authors"),
        ("DELETE", "/authors/{id}"),
        ("GET", "/openapi.json"),  # the OpenAPI document and its docs page
        ("GET", "/docs"),
        ("GET", "/docs/{asset}"),
    }
    admin = {key for key, route in table.items() if "admin" in route.groups}
    assert admin == {("DELETE", "/books/{id}"), ("DELETE", "/authors/{id}")}
    assert bookstore.url_for("books.show", id=3) == "/books/3"


def test_listeners_are_registered_before_the_kernel(bookstore: App) -> None:
    from workflowhttp import http_workflow

    auth = [getattr(f, "__name__", "") for f in bookstore.listeners(http_workflow.on_auth)]
    assert auth == ["check", "run_route_middlewares", "schedule_resolve_parameters"]
    denied = bookstore.listeners(http_workflow.on_access_denied)
    assert [getattr(f, "__name__", "") for f in denied] == ["explain", "send_access_denied"]


# -- middleware and the event stream -----------------------------------------------------------

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def test_every_answer_has_security_headers_and_a_request_id(client: TestClient) -> None:
    answers = [
        client.get("/"),
        client.get("/books/1"),
        client.post("/books", json={"title": "X", "author_id": 1, "year": 2000}),
        client.get("/books/99"),  # 404 raised by the controller
        client.get("/bookz"),  # 404: no route
        client.put("/books", json={}),  # 405
        client.get("/books?limit=0"),  # 400
        client.delete("/books/1"),  # 403
        client.head("/books/1"),
    ]
    ids = []
    for response in answers:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value, (response.request.path, name)
        request_id = response.headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]+", request_id), request_id
        ids.append(request_id)
    assert len(set(ids)) == len(ids)
    # The bookstore does not trust ids sent by clients.
    sent = client.get("/health", headers={"X-Request-ID": "client-chosen"})
    assert sent.headers["X-Request-ID"] != "client-chosen"


def test_each_request_is_logged_as_one_json_line(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workflowhttp.access")
    shown = client.get("/books/6")
    missing = client.get("/books/99")
    wanted = {shown.headers["X-Request-ID"], missing.headers["X-Request-ID"]}
    deadline = time.monotonic() + 10
    lines: dict[str, Any] = {}
    while set(lines) != wanted:  # the stream logs from its own threads
        assert time.monotonic() < deadline, lines
        time.sleep(0.01)
        for record in list(caplog.records):
            if record.name == "workflowhttp.access":
                line = json.loads(record.getMessage())
                lines[line["request_id"]] = line
    line = lines[shown.headers["X-Request-ID"]]
    assert (line["method"], line["path"], line["route"], line["status"]) == (
        "GET",
        "/books/6",
        "books.show",
        200,
    )
    assert line["bytes_out"] == len(shown.data)
    line = lines[missing.headers["X-Request-ID"]]
    assert (line["status"], line["error"]) == (404, "NotFound: No book with id 99")


BEYOND_64_BITS = str(2**63)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", f"/books/{BEYOND_64_BITS}", None),
        ("DELETE", f"/books/{BEYOND_64_BITS}", None),
        ("GET", f"/authors/{BEYOND_64_BITS}", None),
        ("DELETE", f"/authors/{BEYOND_64_BITS}", None),
        ("GET", f"/books?author={BEYOND_64_BITS}", None),
        ("GET", f"/books?year_from={BEYOND_64_BITS}", None),
        ("GET", f"/books?year_to={BEYOND_64_BITS}", None),
        ("GET", f"/books?offset={BEYOND_64_BITS}", None),
        ("POST", "/books", {"title": "T", "author_id": 2**63, "year": 2000}),
    ],
    ids=[
        "show-book",
        "delete-book",
        "show-author",
        "delete-author",
        "author-filter",
        "year-from",
        "year-to",
        "offset",
        "new-book-author",
    ],
)
def test_integers_beyond_sqlite_are_a_400_not_a_500(client, method, path, body):
    # Fails on the old code: sqlite3 raised OverflowError, a 500.
    response = client.open(path, method=method, json=body, headers=ADMIN)
    assert response.status_code == 400, response.text
    assert response.json["message"] == "Bad Request"
    assert client.get("/books/1").status_code == 200
