"""Describe the app: its OpenAPI 3.1 document, served with an interactive page (DESIGN.md §9).

::

    from workflowhttp import App
    from workflowhttp.openapi import OpenAPI

    app = App(
        controllers=[...],
        openapi=OpenAPI(title="Bookstore", version="1.0", guarded_groups=("admin",)),
    )
    app.openapi()   # the document, a dict

``OpenAPI(path="/openapi.json", docs="/docs")`` adds two ordinary routes (group ``openapi``):
the document as JSON, and Swagger UI, whose files come from the ``openapi-ui-bundles``
package (``pip install workflowhttp[openapi]``) and are served by the app itself: the page
works with no internet. ``workflowhttp openapi module:app`` prints the document.

Nothing happens per request until someone asks: the document is built on the first request
for it (or the first ``app.openapi()``) and kept, then built again only if routes were added
since. What the document says, and where it comes from, is in :mod:`.document`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import ConfigurationError
from ..events import HttpEvent
from ..extensions import Extension
from ..responses import Response
from ..routing import http, normalize_path
from .docs import DocsPage
from .document import OPENAPI_VERSION, build_document

if TYPE_CHECKING:
    from ..app import App

__all__ = ["OPENAPI_VERSION", "OpenAPI", "build_document", "describe"]


class OpenAPI(Extension):
    """The app's OpenAPI document and its docs page: ``App(openapi=OpenAPI(...))``.

    Args:
        title: The API's name (``info.title``).
        version: The API's version (``info.version``), not the framework's.
        description: ``info.description`` (Markdown).
        path: Where the JSON document is served; ``None`` serves none.
        docs: Where the Swagger UI page is served (its files below it); ``None`` serves none.
            Needs ``path``, and the ``openapi`` extra.
        guarded_groups: Route groups an auth listener guards: their operations list the 403.
        servers: The base URLs the API is served at (``servers``), when it is not the root
            of the host that serves the document.

    Raises:
        ConfigurationError: a path that does not start with ``/``, ``docs`` without ``path``,
            or ``docs`` without the package that ships Swagger UI.
    """

    def __init__(
        self,
        title: str = "API",
        version: str = "0.1.0",
        *,
        description: str = "",
        path: str | None = "/openapi.json",
        docs: str | None = "/docs",
        guarded_groups: Iterable[str] = (),
        servers: Iterable[str] = (),
    ) -> None:
        for label, value in (("path", path), ("docs", docs)):
            if value is not None and (not isinstance(value, str) or not value.startswith("/")):
                raise ConfigurationError(f"OpenAPI {label} must start with '/': {value!r}")
        if isinstance(guarded_groups, str) or isinstance(servers, str):
            raise ConfigurationError("OpenAPI guarded_groups and servers are lists, not a str")
        if docs is not None and path is None:
            raise ConfigurationError("the OpenAPI docs page needs the document: give a path")
        self.title = title
        self.version = version
        self.description = description
        self.path = normalize_path(path) if path is not None else None
        self.docs = normalize_path(docs) if docs is not None else None
        if self.docs is not None and self.docs == self.path:
            raise ConfigurationError(f"OpenAPI path and docs are both {self.path!r}")
        self.guarded_groups = tuple(guarded_groups)
        self.servers = tuple(servers)
        self.page = (
            DocsPage(self.docs, self.path, title)
            if self.docs is not None and self.path is not None
            else None
        )
        # PERF: the document of each app, as JSON, with the number of routes it describes;
        # built on first use, not when the app is built.
        self._documents: weakref.WeakKeyDictionary[App, tuple[int, bytes]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self.controllers = self._routes()

    def document(self, app: App) -> bytes:
        """Return ``app``'s document as JSON, built on first use and kept."""
        count = len(app.router.routes)
        known = self._documents.get(app)
        if known is not None and known[0] == count:
            return known[1]
        with self._lock:
            known = self._documents.get(app)
            if known is None or known[0] != count:
                text = msgspec.json.encode(build_document(app.routes, self))
                known = self._documents[app] = (count, text)
        return known[1]

    def _routes(self) -> tuple[Any, ...]:
        openapi = self
        declared: list[tuple[Any, Any]] = []
        if self.path is not None:

            def openapi_document(event: HttpEvent) -> Response:
                """The OpenAPI document."""
                return Response(openapi.document(event.app), content_type="application/json")

            declared.append((http.GET(self.path).name("openapi.document"), openapi_document))
        if self.page is not None:
            page = self.page

            def openapi_docs(event: HttpEvent) -> Response:
                """The interactive docs page (Swagger UI)."""
                return page.html(event.environ)

            def openapi_asset(asset: str) -> Response:
                """A file of the docs page."""
                return page.asset(asset)

            declared.append((http.GET(page.root).name("openapi.docs"), openapi_docs))
            declared.append(
                (http.GET(f"{page.root}/{{asset}}").name("openapi.asset"), openapi_asset)
            )
        for spec, function in declared:
            function.__qualname__ = f"OpenAPI.{function.__name__}"
            spec.group("openapi").data("openapi", self).description(function.__doc__ or "")(
                function
            )
        return tuple(function for _, function in declared)

    def __repr__(self) -> str:
        return f"<OpenAPI {self.title!r} {self.version!r} at {self.path} and {self.docs}>"


_DEFAULT = OpenAPI(path=None, docs=None)
"""What describes an app that has no ``OpenAPI`` of its own (``app.openapi()``)."""


def describe(app: App) -> dict[str, Any]:
    """Return ``app``'s OpenAPI document (a new dict each call): ``app.openapi()``."""
    config = next((ext for ext in app.extensions if isinstance(ext, OpenAPI)), _DEFAULT)
    document: dict[str, Any] = msgspec.json.decode(config.document(app))
    return document
