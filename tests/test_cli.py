"""The ``workflowhttp`` command, run as users run it: ``python -m workflowhttp ...``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workflowhttp.workflow import ALLOWED, STATES

ROOT = Path(__file__).resolve().parent.parent
BOOKSTORE = "examples.bookstore.app:app"


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``python -m workflowhttp *args`` from the project root, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "workflowhttp", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environment = dict(os.environ)
    environment["BOOKSTORE_DB"] = str(tmp_path / "bookstore.sqlite3")
    return environment


def test_help(env: dict[str, str]) -> None:
    result = run("--help", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: workflowhttp")
    for command in ("serve", "dev", "routes", "graph"):
        assert command in result.stdout


def test_serve_help_shows_the_options(env: dict[str, str]) -> None:
    result = run("serve", "--help", env=env)
    assert result.returncode == 0, result.stderr
    for option in (
        "--bind",
        "--workers",
        "--threads",
        "--timeout",
        "--graceful-timeout",
        "--keepalive",
        "--max-requests",
        "--access-log {auto,gunicorn,stream,off}",
        "--log-level {debug,info,warning,error,critical}",
        "--log-format {text,json}",
        "--no-log-config",
        "--pid",
    ):
        assert option in result.stdout


def test_a_command_is_required(env: dict[str, str]) -> None:
    result = run(env=env)
    assert result.returncode == 2
    assert "usage: workflowhttp" in result.stderr


def test_routes_lists_the_bookstore(env: dict[str, str]) -> None:
    result = run("routes", BOOKSTORE, env=env)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["METHODS", "PATH", "NAME", "GROUPS", "DESCRIPTION"]
    rows = {tuple(line.split()[:3]) for line in lines}
    assert rows == {
        ("GET", "/", "home"),
        ("GET", "/health", "health"),
        ("GET", "/books", "books.list"),
        ("GET", "/books/{id}", "books.show"),
        ("POST", "/books", "books.create"),
        ("DELETE", "/books/{id}", "books.delete"),
        ("GET", "/authors", "authors.list"),
        ("GET", "/authors/{id}", "authors.show"),
        ("POST", "/authors", "authors.create"),
        ("DELETE", "/authors/{id}", "authors.delete"),
        ("GET", "/openapi.json", "openapi.document"),
        ("GET", "/docs", "openapi.docs"),
        ("GET", "/docs/{asset}", "openapi.asset"),
    }
    admin = [line.split()[:4] for line in lines if " admin " in line]
    assert admin == [
        ["DELETE", "/books/{id}", "books.delete", "admin"],
        ["DELETE", "/authors/{id}", "authors.delete", "admin"],
    ]
    assert Path(env["BOOKSTORE_DB"]).is_file()  # the app was built with the env's database


def test_routes_with_a_factory(env: dict[str, str]) -> None:
    result = run("routes", "examples.bookstore.app:create_app()", env=env)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 14  # a header, 10 routes, the 3 of OpenAPI


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("examples.bookstore.app:nothing", "has no attribute 'nothing'"),
        ("no_such_module_here:app", "No module named 'no_such_module_here'"),
        (":app", "expected module:app"),
    ],
    ids=["missing-attribute", "missing-module", "no-module"],
)
def test_routes_with_a_bad_target(env: dict[str, str], target: str, message: str) -> None:
    result = run("routes", target, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("workflowhttp: error: ")
    assert result.stderr.count("\n") == 1  # one line, no traceback
    assert message in result.stderr


def test_graph_prints_mermaid_with_every_state_and_edge(env: dict[str, str]) -> None:
    result = run("graph", env=env)
    assert result.returncode == 0, result.stderr
    diagram = result.stdout
    assert "stateDiagram-v2" in diagram
    for state in STATES:
        assert f'state "{state}" as {state}' in diagram
    edges = {
        (line.split(" --> ")[0].strip(), line.split(" --> ")[1].split(":")[0].strip())
        for line in diagram.splitlines()
        if " --> " in line and "next" in line.split(":")[-1]
    }
    assert edges == {(source, target) for source, targets in ALLOWED.items() for target in targets}
    assert "[*] --> request" in diagram


def test_graph_to_a_file(env: dict[str, str], tmp_path: Path) -> None:
    output = tmp_path / "workflow.mmd"
    result = run("graph", "--output", str(output), env=env)
    assert (result.returncode, result.stdout) == (0, "")
    assert 'state "resolve_parameters" as resolve_parameters' in output.read_text("utf-8")


def test_graph_draws_the_proxy_workflow() -> None:
    import contextlib
    import io

    from workflowhttp.cli import main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["graph", "--workflow", "proxy"]) == 0
    text = printed.getvalue()
    assert "workflowhttp proxy workflow" in text
    assert "filter_request --> forward: next" in text
