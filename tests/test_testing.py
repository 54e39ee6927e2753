"""The test client: what a test sends is what the app receives."""

from __future__ import annotations

from typing import Annotated

import pytest

from workflowhttp import App, Cookie, Response, http
from workflowhttp.testing import TestClient


@http.GET("/cookies")
def cookies(
    session: Annotated[str, Cookie("sid")] = "-", theme: Annotated[str, Cookie()] = "-"
) -> dict:
    return {"sid": session, "theme": theme}


@http.GET("/login")
def login() -> Response:
    response = Response("ok")
    response.set_cookie("theme", "dark")
    return response


@pytest.fixture
def client() -> TestClient:
    return TestClient(App(controllers=[cookies, login]))


def test_an_explicit_cookie_header_reaches_the_app(client):
    # Fails on the old code: werkzeug's cookie jar replaced the header with its own (empty).
    answer = client.get("/cookies", headers={"Cookie": "sid=abc"})
    assert answer.json == {"sid": "abc", "theme": "-"}


def test_an_explicit_cookie_header_is_merged_with_the_jar(client):
    assert client.get("/login").status_code == 200
    assert client.get("/cookies").json == {"sid": "-", "theme": "dark"}
    answer = client.get("/cookies", headers={"Cookie": "sid=abc"})
    assert answer.json == {"sid": "abc", "theme": "dark"}
    # A cookie named explicitly wins over the jar's.
    answer = client.get("/cookies", headers={"Cookie": "theme=light"})
    assert answer.json == {"sid": "-", "theme": "light"}


def test_without_a_jar_the_explicit_header_is_sent_as_is():
    client = TestClient(App(controllers=[cookies]), use_cookies=False)
    assert client.get("/cookies", headers={"Cookie": "sid=x"}).json == {"sid": "x", "theme": "-"}
