"""Serving the OpenAPI document and the docs page (Swagger UI from a package, no CDN), and
``workflowhttp openapi``."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import workflowhttp.openapi as openapi_module
from workflowhttp import App, ConfigurationError, http
from workflowhttp.openapi import OpenAPI
from workflowhttp.testing import TestClient

ROOT = Path(__file__).resolve().parent.parent


@http.GET("/hello").name("hello")
def hello(name: str = "world") -> str:
    return f"Hello {name}"


@pytest.fixture
def app() -> App:
    return App(controllers=[hello], openapi=OpenAPI(title="Hello <API>", version="1"))


@pytest.fixture
def client(app: App) -> TestClient:
    return TestClient(app)


def test_the_document_route(app: App, client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json == app.openapi()
    assert set(response.json["paths"]) == {"/hello"}  # not the document's own routes
    assert client.head("/openapi.json").status_code == 200


def test_the_routes_are_ordinary_routes_in_the_openapi_group(app: App) -> None:
    mine = {route.name: route.path for route in app.routes if "openapi" in route.groups}
    assert mine == {
        "openapi.document": "/openapi.json",
        "openapi.docs": "/docs",
        "openapi.asset": "/docs/{asset}",
    }


def test_other_paths(client: TestClient) -> None:
    app = App(controllers=[hello], openapi=OpenAPI(path="/api/spec.json", docs="/api/ui/"))
    client = TestClient(app)
    assert client.get("/api/spec.json").status_code == 200
    page = client.get("/api/ui")
    assert 'data-url="/api/spec.json"' in page.text
    assert '<script src="/api/ui/swagger-ui-bundle.js">' in page.text
    assert client.get("/openapi.json").status_code == 404


def test_no_routes_without_paths() -> None:
    app = App(controllers=[hello], openapi=OpenAPI(path=None, docs=None))
    assert [route.name for route in app.routes] == ["hello"]
    assert "/hello" in app.openapi()["paths"]


# -- the docs page ----------------------------------------------------------------------------

_REFERENCE = re.compile(r'(?:src|href|data-url)="([^"]+)"')
_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
    ".json": "application/json",
}


def test_the_page_references_local_assets_that_are_served(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    references = _REFERENCE.findall(page.text)
    assert set(references) == {
        "/docs/swagger-ui.css",
        "/docs/favicon-32x32.png",
        "/docs/swagger-ui-bundle.js",
        "/docs/workflowhttp-init.js",
        "/openapi.json",
    }
    for reference in references:  # local paths only: the page works offline
        assert reference.startswith("/") and not reference.startswith("//")
        asset = client.get(reference)
        assert asset.status_code == 200, reference
        assert asset.headers["Content-Type"] == _TYPES[Path(reference).suffix], reference
        assert asset.data
    bundle = client.get("/docs/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle.data
    assert bundle.headers["X-Content-Type-Options"] == "nosniff"
    assert b"root.dataset.url" in client.get("/docs/workflowhttp-init.js").data


def test_the_bundled_swagger_ui_renders_openapi_3_1(client: TestClient) -> None:
    # Swagger UI 4 (the swagger-ui-bundle package) refuses any document but 2.0 and 3.0.n;
    # version 5 knows 3.1.
    bundle = client.get("/docs/swagger-ui-bundle.js").data
    assert b"isOAS31" in bundle


def test_the_page_is_escaped_and_locked_down(client: TestClient) -> None:
    page = client.get("/docs")
    assert "<title>Hello &lt;API&gt; - API docs</title>" in page.text
    assert "<script>" not in page.text  # no inline script: the policy forbids it
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"


def test_the_page_under_a_mount_point(app: App) -> None:
    page = TestClient(app).get("/docs", base_url="http://localhost/my%20app/")
    assert 'data-url="/my%20app/openapi.json"' in page.text
    assert 'src="/my%20app/docs/swagger-ui-bundle.js"' in page.text


@pytest.mark.parametrize(
    "path",
    [
        "/docs/index.html",
        "/docs/..",
        "/docs/%2e%2e",
        "/docs/..%2f__init__.py",
        "/docs/..%2F..%2Fswagger_ui%2F__init__.py",
        "/docs/%2fetc%2fpasswd",
        "/docs/..%5c__init__.py",
        "/docs/swagger-ui.css%00.png",
        "/docs/swagger-ui.css/",
        "/docs/swagger-ui.css/x",
        "/docs/../openapi.json/x",
        "/docs/SWAGGER-UI.CSS",
        "/docs/__init__.py",
    ],
    ids=[
        "vendor-index",
        "dot-dot",
        "encoded-dot-dot",
        "encoded-slash",
        "encoded-climb",
        "absolute",
        "backslash",
        "nul",
        "trailing-slash-is-the-file",
        "below-a-file",
        "climb-then-descend",
        "other-case",
        "python-source",
    ],
)
def test_no_path_reaches_another_file(client: TestClient, path: str) -> None:
    response = client.get(path)
    if path == "/docs/swagger-ui.css/":  # the trailing slash is insignificant
        assert response.status_code == 200
        return
    assert response.status_code in (400, 404), path
    assert response.json["message"]
    assert client.get("/hello").status_code == 200  # and the next request is served


def test_the_docs_need_the_assets_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "openapi_ui_bundles" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigurationError, match=r"pip install 'workflowhttp\[openapi\]'"):
        OpenAPI()
    OpenAPI(docs=None)  # the document alone needs nothing


# -- nothing on the hot path ------------------------------------------------------------------


def test_the_document_is_built_on_its_first_request_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = openapi_module.build_document

    def counting(routes: Any, config: OpenAPI) -> dict[str, Any]:
        calls.append(1)
        return real(routes, config)

    monkeypatch.setattr(openapi_module, "build_document", counting)
    config = OpenAPI()
    client = TestClient(App(controllers=[hello], openapi=config))
    for _ in range(3):
        assert client.get("/hello").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/docs/swagger-ui.css").status_code == 200
    assert calls == []
    first = client.get("/openapi.json").data
    assert client.get("/openapi.json").data == first
    assert calls == [1]


def test_one_openapi_for_two_apps() -> None:
    @http.GET("/other")
    def other() -> str:
        return ""

    config = OpenAPI(docs=None)
    first = App(controllers=[hello], openapi=config)
    second = App(controllers=[other], openapi=config)
    assert set(TestClient(first).get("/openapi.json").json["paths"]) == {"/hello"}
    assert set(TestClient(second).get("/openapi.json").json["paths"]) == {"/other"}


# -- workflowhttp openapi ---------------------------------------------------------------------


def run(*args: str, tmp_path: Path, path: str = str(ROOT)) -> subprocess.CompletedProcess[str]:
    """Run ``python -m workflowhttp openapi *args`` from the project root, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "workflowhttp", "openapi", *args],
        cwd=ROOT,
        env={
            **os.environ,
            "BOOKSTORE_DB": str(tmp_path / "bookstore.sqlite3"),
            "PYTHONPATH": path,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_prints_the_document(tmp_path: Path) -> None:
    result = run("examples.bookstore.app:app", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["info"]["title"] == "Bookstore"
    assert "/books/{id}" in document["paths"]


def test_the_command_prints_yaml(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    result = run("examples.bookstore.app:app", "--yaml", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("openapi: 3.1.0\n")
    assert yaml.safe_load(result.stdout) == json.loads(
        run("examples.bookstore.app:app", tmp_path=tmp_path).stdout
    )


def test_yaml_without_pyyaml_is_one_line(tmp_path: Path) -> None:
    # A directory shadowing PyYAML with a module that fails to import, as if it were absent.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "yaml.py").write_text("raise ImportError('no yaml here')\n", encoding="utf-8")
    result = run("examples.bookstore.app:app", "--yaml", tmp_path=tmp_path, path=f"{shadow}:{ROOT}")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "workflowhttp: error: --yaml needs PyYAML (pip install pyyaml)\n"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("examples.bookstore.app:nothing", "has no attribute 'nothing'"),
        ("no_such_module_here:app", "No module named"),
    ],
    ids=["no-attribute", "no-module"],
)
def test_a_bad_target_is_one_line(tmp_path: Path, target: str, message: str) -> None:
    result = run(target, tmp_path=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
