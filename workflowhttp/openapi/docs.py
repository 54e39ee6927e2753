"""The docs page: Swagger UI, its files served by the app itself (no CDN, no internet).

The files come from the ``openapi-ui-bundles`` package (the ``openapi`` extra), whose Swagger UI
5 renders OpenAPI 3.1 (``swagger-ui-bundle``'s Swagger UI 4 refuses 3.1 documents). The page is
our own HTML: the stylesheet and scripts at ``<docs>/<file>``, and a small script of ours that
starts Swagger UI on the document's URL, read from a ``data-`` attribute of the page.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import ConfigurationError, NotFound
from ..responses import HTMLResponse, Response

__all__ = ["ASSETS_PACKAGE", "DocsPage"]

#: The package that ships Swagger UI's files (``swagger_ui.static_path``).
ASSETS_PACKAGE = "openapi_ui_bundles"

_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
_INIT = "workflowhttp-init.js"
_INIT_SCRIPT = b"""\
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.url,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""
_PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="icon" type="image/png" href="{assets}/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui" data-url="{document}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{assets}/{init}"></script>
</body>
</html>
"""
# SECURITY: the page runs scripts from the app only (the start-up script is a file, not
# inline), so no injected markup can run script; Swagger UI sets styles inline, and its icons
# are data: URIs. No frame may hold the page (clickjacking the "Try it out" buttons).
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_ASSET_HEADERS = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}


class DocsPage:
    """Swagger UI at ``root``, showing the document at ``document_path``.

    Raises:
        ConfigurationError: the package with Swagger UI's files is not installed.
    """

    def __init__(self, root: str, document_path: str, title: str) -> None:
        if importlib.util.find_spec(ASSETS_PACKAGE) is None:
            raise ConfigurationError(
                f"the OpenAPI docs page needs {ASSETS_PACKAGE!r}: "
                f"pip install 'workflowhttp[openapi]' (or OpenAPI(docs=None))"
            )
        self.root = root
        self.document_path = document_path
        self.title = f"{title} - API docs"
        self._assets: dict[str, tuple[bytes, str]] | None = None
        self._lock = threading.Lock()

    def html(self, environ: dict[str, Any]) -> Response:
        """Return the page, its URLs under the app's mount point (``SCRIPT_NAME``)."""
        prefix = quote(environ.get("SCRIPT_NAME", "").rstrip("/"))
        page = _PAGE.format(
            title=html.escape(self.title),
            assets=html.escape(prefix + self.root.rstrip("/")),
            document=html.escape(prefix + self.document_path),
            init=_INIT,
        )
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    def asset(self, name: str) -> Response:
        """Return the file ``name`` of the page.

        SECURITY: ``name`` is only ever a key of the table of the package's files, listed
        once: nothing the client sends is joined to a path, so no ``..``, absolute path,
        backslash or encoded separator can reach another file.

        Raises:
            NotFound: no such file.
        """
        found = self.assets().get(name)
        if found is None:
            raise NotFound()
        body, content_type = found
        return Response(body, headers=_ASSET_HEADERS, content_type=content_type)

    def assets(self) -> dict[str, tuple[bytes, str]]:
        """Return the page's files by name: content and type (read on first use, kept)."""
        assets = self._assets
        if assets is None:
            with self._lock:
                assets = self._assets
                if assets is None:
                    assets = self._assets = _read_assets(_static_path())
        return assets


def _static_path() -> Path:
    module = importlib.import_module(f"{ASSETS_PACKAGE}.swagger_ui")
    return Path(module.static_path)


def _read_assets(directory: Path) -> dict[str, tuple[bytes, str]]:
    """Read the scripts, stylesheets and icons directly in ``directory`` (not its index.html,
    which loads a demo document from the internet), plus our start-up script."""
    assets = {
        entry.name: (entry.read_bytes(), _CONTENT_TYPES[entry.suffix])
        for entry in sorted(directory.iterdir())
        if entry.suffix in _CONTENT_TYPES and entry.is_file() and not entry.is_symlink()
    }
    assets[_INIT] = (_INIT_SCRIPT, _CONTENT_TYPES[".js"])
    return assets
