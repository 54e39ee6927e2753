"""Flask versions of the benchmarked apps, written the way the Flask docs write them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any
from wsgiref.types import WSGIApplication

from flask import Flask, request

from . import MANY_ROUTES_STATIC, Item, param_text, static_text


def _new_flask() -> Flask:
    # No static folder: Flask would otherwise add a `/static/<path:filename>` rule that the
    # other frameworks do not have (and that overlaps the many-routes app's `/static/{i}`).
    return Flask(__name__, static_folder=None)


def _main_app() -> Flask:
    app = _new_flask()

    @app.get("/hello")
    def hello() -> str:
        return "Hello, world!"

    @app.get("/users/<int:id>")
    def show_user(id: int) -> dict[str, Any]:
        return {"id": id, "name": f"user{id}"}

    @app.get("/search")
    def search() -> dict[str, Any]:
        q = request.args["q"]
        limit = request.args.get("limit", 10, type=int)
        return {"q": q, "limit": limit}

    @app.post("/items")
    def create_item() -> tuple[dict[str, Any], int]:
        item = Item(**request.get_json())
        return asdict(item), 201

    return app


def _static_view(index: int) -> Callable[[], str]:
    def view() -> str:
        return static_text(index)

    return view


def _param_view(index: int) -> Callable[[int], str]:
    def view(id: int) -> str:
        return param_text(index, id)

    return view


def _many_routes_app(static_count: int) -> Flask:
    app = _new_flask()
    for i in range(static_count):
        app.get(f"/static/{i}", endpoint=f"static_{i}")(_static_view(i))
    for i in range(static_count):
        app.get(f"/param{i}/<int:id>", endpoint=f"param_{i}")(_param_view(i))
    return app


def make_app(kind: str) -> WSGIApplication:
    """Return the Flask app of the given kind (see ``bench.apps.APP_KINDS``)."""
    if kind == "main":
        return _main_app()
    if kind == "many_routes":
        return _many_routes_app(MANY_ROUTES_STATIC)
    raise ValueError(f"unknown app kind {kind!r}")
