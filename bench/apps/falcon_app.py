"""Falcon versions of the benchmarked apps: resource classes with ``on_get``/``on_post``."""

from __future__ import annotations

from dataclasses import asdict
from wsgiref.types import WSGIApplication

import falcon

from . import MANY_ROUTES_STATIC, Item, param_text, static_text


class HelloResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.text = "Hello, world!"


class UserResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response, id: int) -> None:
        resp.media = {"id": id, "name": f"user{id}"}


class SearchResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        q = req.get_param("q", required=True)
        limit = req.get_param_as_int("limit", default=10)
        resp.media = {"q": q, "limit": limit}


class ItemsResource:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        item = Item(**req.get_media())
        resp.media = asdict(item)
        resp.status = falcon.HTTP_201


class StaticResource:
    def __init__(self, index: int) -> None:
        self.text = static_text(index)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.text = self.text


class ParamResource:
    def __init__(self, index: int) -> None:
        self.index = index

    def on_get(self, req: falcon.Request, resp: falcon.Response, id: int) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.text = param_text(self.index, id)


def _main_app() -> WSGIApplication:
    app = falcon.App()
    app.add_route("/hello", HelloResource())
    app.add_route("/users/{id:int}", UserResource())
    app.add_route("/search", SearchResource())
    app.add_route("/items", ItemsResource())
    return app


def _many_routes_app(static_count: int) -> WSGIApplication:
    app = falcon.App()
    for i in range(static_count):
        app.add_route(f"/static/{i}", StaticResource(i))
    for i in range(static_count):
        app.add_route(f"/param{i}/{{id:int}}", ParamResource(i))
    return app


def make_app(kind: str) -> WSGIApplication:
    """Return the Falcon app of the given kind (see ``bench.apps.APP_KINDS``)."""
    if kind == "main":
        return _main_app()
    if kind == "many_routes":
        return _many_routes_app(MANY_ROUTES_STATIC)
    raise ValueError(f"unknown app kind {kind!r}")
