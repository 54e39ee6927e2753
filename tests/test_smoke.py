from __future__ import annotations


def test_hello(client):
    response = client.get("/hello?name=you")
    assert response.status_code == 200
    assert response.text == "Hello you"
    assert response.content_type == "text/plain; charset=utf-8"
