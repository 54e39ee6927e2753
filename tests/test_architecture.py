"""The module map's rules (docs/architecture.md), checked on the source.

Each module's run-time imports of the package are read from its syntax tree (imports under
``if TYPE_CHECKING:`` are for annotations only and do not count). A rule broken here is a
dependency that would let a change in one concept reach into another.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "workflowhttp"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(path: Path) -> set[str]:
    """The modules ``path`` imports when it runs (absolute names)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                    found.add(target)
                    if node.module is None:  # from . import x: x may be a module
                        found.update(f"{target}.{alias.name}" for alias in node.names)
                else:
                    found.add(node.module or "")
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    visit([item for item in inner if isinstance(item, ast.AST)])  # type: ignore[misc]

    visit(ast.parse(path.read_text()).body)
    return found


GRAPH = {_module_name(path): _runtime_imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def _ours(imports: set[str]) -> set[str]:
    return {name for name in imports if name == "workflowhttp" or name.startswith("workflowhttp.")}


def _importers(target: str) -> set[str]:
    """The modules that import ``target`` or a module inside it."""
    return {
        module
        for module, imports in GRAPH.items()
        if any(name == target or name.startswith(target + ".") for name in imports)
        and module != target
        and not module.startswith(target + ".")
    }


def test_the_graph_is_read():
    assert len(GRAPH) > 40
    assert "workflowhttp.errors" in GRAPH["workflowhttp.kernel"]


def test_only_the_package_and_the_command_line_import_the_app():
    assert _importers("workflowhttp.app") <= {"workflowhttp"} | {
        module for module in GRAPH if module.startswith("workflowhttp.cli")
    }


def test_the_workflow_knows_nothing_of_http_and_is_the_only_user_of_transitions():
    assert _ours(GRAPH["workflowhttp.workflow"]) == {"workflowhttp.errors"}
    assert _importers("transitions") == {"workflowhttp.workflow"}


@pytest.mark.parametrize(
    "module",
    [
        "errors",
        "numbers",
        "extensions",
        "stream.events",
        "stream.ids",
        "stream.body",
        "proxy.headers",
    ],
)
def test_leaf_modules_import_nothing_of_ours(module):
    assert _ours(GRAPH[f"workflowhttp.{module}"]) == set()


CORE = [
    "app", "kernel", "events", "workflow", "routing", "middleware", "reading", "request",
    "responses", "wsgi", "error_responses", "params", "di", "limits", "settings", "numbers",
    "errors", "extensions",
]  # fmt: skip


@pytest.mark.parametrize("module", CORE)
def test_the_core_never_imports_an_extension_or_the_command_line(module):
    names = [name for name in GRAPH if name == f"workflowhttp.{module}" or
             name.startswith(f"workflowhttp.{module}.")]  # fmt: skip
    assert names
    for name in names:
        banned = ("hooks", "proxy", "cli", "trace", "testing")
        wrong = {
            imported
            for imported in _ours(GRAPH[name])
            if imported.removeprefix("workflowhttp.").partition(".")[0] in banned
        }
        assert wrong == set(), name


def test_the_streams_parts_never_import_its_facade():
    parts = [name for name in GRAPH if name.startswith("workflowhttp.stream.")]
    assert len(parts) >= 5
    for part in parts:
        assert "workflowhttp.stream" not in GRAPH[part], part


def test_responses_are_apart_from_the_wsgi_writer():
    assert not _ours(GRAPH["workflowhttp.responses"]) & {"workflowhttp.wsgi", "workflowhttp.app"}


def test_the_lean_readers_need_no_werkzeug_request():
    assert "workflowhttp.request" not in GRAPH["workflowhttp.reading"]


def test_the_kernel_and_the_router_never_reach_back_into_the_app():
    for module in ("workflowhttp.kernel", "workflowhttp.routing.router",
                   "workflowhttp.routing.controllers", "workflowhttp.error_responses"):  # fmt: skip
        assert "workflowhttp.app" not in GRAPH[module], module


def test_the_extensions_do_not_know_each_other_but_the_proxy_is_used_by_three():
    # hooks forward through the proxy; openapi describes proxied routes; the metrics
    # processor counts proxy transactions.
    assert not {m for m in _importers("workflowhttp.hooks") if not m.startswith("workflowhttp.cli")}
    assert _importers("workflowhttp.proxy") <= {
        module for module in GRAPH
        if module.startswith(("workflowhttp.hooks", "workflowhttp.openapi", "workflowhttp.stream"))
    }  # fmt: skip
    assert not {m for m in _importers("workflowhttp.openapi") if m != "workflowhttp.app"}
