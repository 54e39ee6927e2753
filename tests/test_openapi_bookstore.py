"""The bookstore's OpenAPI document: valid, as reviewed, and what the app really answers.

``tests/data/openapi_bookstore.json`` holds a handful of the bookstore's operations and
components as reviewed by hand; a change to the document shows up here as a diff to review.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from workflowhttp import App
from workflowhttp.routing.paths import PARAM
from workflowhttp.testing import TestClient

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = Path(__file__).resolve().parent / "data" / "openapi_bookstore.json"
TOKEN = "test-admin-token"


@pytest.fixture(autouse=True)
def _stop_streams(stop_streams: None) -> None:
    """Each bookstore app logs through an event stream: shut down those a test started."""


@pytest.fixture
def bookstore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.syspath_prepend(str(ROOT))
    from examples.bookstore.app import create_app

    return create_app(str(tmp_path / "bookstore.sqlite3"), admin_token=TOKEN)


@pytest.fixture
def document(bookstore: App) -> dict[str, Any]:
    return bookstore.openapi()


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"] == "3.1.0"


def test_a_handful_of_operations_as_reviewed(document: dict[str, Any]) -> None:
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))
    assert document["info"] == expected["info"]
    assert document["tags"] == expected["tags"]
    for key, operation in expected["operations"].items():
        method, path = key.split(" ", 1)
        assert document["paths"][path][method.lower()] == operation, key
    schemas = document["components"]["schemas"]
    for name, schema in expected["schemas"].items():
        assert schemas[name] == schema, name
    responses = document["components"]["responses"]
    for name, response in expected["responses"].items():
        assert responses[name] == response, name


def test_every_route_is_an_operation(bookstore: App, document: dict[str, Any]) -> None:
    declared = {
        (method.lower(), PARAM.sub(lambda m: "{" + m.group(1) + "}", route.path))
        for route in bookstore.routes
        if "openapi" not in route.groups
        for method in route.methods
    }
    listed = {(method, path) for path, item in document["paths"].items() for method in item}
    assert listed == declared
    assert len(declared) == 10


def test_the_served_document_is_app_openapi(bookstore: App) -> None:
    response = TestClient(bookstore).get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json == bookstore.openapi()


def test_the_bookstore_serves_its_docs_page(bookstore: App) -> None:
    client = TestClient(bookstore)
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert 'data-url="/openapi.json"' in page.text
    assert client.get("/docs/swagger-ui-bundle.js").status_code == 200
    # The app's own security headers are added; the page's policy stays.
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


# -- the answers conform to the document ------------------------------------------------------


def documented(document: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    """Return the response the document gives for ``status`` (``$ref`` followed)."""
    responses = document["paths"][path][method]["responses"]
    key = str(status)
    found = responses.get(key) or responses.get(f"{key[0]}XX") or responses.get("default")
    assert found is not None, f"{method.upper()} {path}: {status} is not documented"
    if "$ref" in found:
        found = document["components"]["responses"][found["$ref"].rsplit("/", 1)[1]]
    result: dict[str, Any] = found
    return result


def assert_conforms(document: dict[str, Any], method: str, path: str, answer: Any) -> None:
    """The status is documented, and a JSON body matches the documented schema."""
    response = documented(document, method, path, answer.status_code)
    content = response.get("content", {})
    if answer.status_code == 204:
        assert not content and answer.data == b""
        return
    assert answer.mimetype in content, (answer.mimetype, list(content))
    schema = content[answer.mimetype].get("schema")
    if answer.mimetype == "application/json" and schema:
        # The document's components travel with the schema, so its $refs resolve.
        Draft202012Validator({**schema, "components": document["components"]}).validate(answer.json)


ADMIN = {"Authorization": f"Bearer {TOKEN}"}
EXCHANGES = [
    ("get", "/books", "/books?limit=2", {}, None, 200),
    ("get", "/books", "/books?limit=0", {}, None, 400),
    ("get", "/books", "/books?year_from=not-a-year", {}, None, 400),
    ("get", "/books/{id}", "/books/1", {}, None, 200),
    ("get", "/books/{id}", "/books/99999", {}, None, 404),
    ("get", "/books/{id}", "/books/0", {}, None, 400),
    ("post", "/books", "/books", {}, {"title": "T", "author_id": 1, "year": 2000}, 201),
    ("post", "/books", "/books", {}, {"title": "", "author_id": 1, "year": 1}, 400),
    ("post", "/books", "/books", {"Content-Type": "text/plain"}, b"title=T", 415),
    ("delete", "/books/{id}", "/books/2", {}, None, 403),
    ("delete", "/books/{id}", "/books/2", ADMIN, None, 204),
    ("get", "/authors/{id}", "/authors/1", {}, None, 200),
    ("get", "/authors", "/authors", {}, None, 200),
    ("get", "/health", "/health", {}, None, 200),
    ("get", "/", "/", {}, None, 200),
]


@pytest.mark.parametrize(
    ("method", "template", "url", "headers", "body", "status"),
    EXCHANGES,
    ids=[
        "list",
        "list-limit-too-small",
        "list-bad-year",
        "show",
        "show-missing",
        "show-id-zero",
        "create",
        "create-invalid",
        "create-not-json",
        "delete-without-token",
        "delete",
        "author",
        "authors",
        "health",
        "home",
    ],
)
def test_answers_conform_to_the_document(
    bookstore: App,
    document: dict[str, Any],
    method: str,
    template: str,
    url: str,
    headers: dict[str, str],
    body: Any,
    status: int,
) -> None:
    client = TestClient(bookstore)
    options: dict[str, Any] = {"headers": {"Accept": "application/json", **headers}}
    if isinstance(body, dict):
        options["json"] = body
    elif body is not None:
        options["data"] = body
    answer = client.open(url, method=method.upper(), **options)
    assert answer.status_code == status, answer.text
    assert_conforms(document, method, template, answer)
