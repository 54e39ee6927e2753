"""Logging under a real ``workflowhttp serve``: one access line per request, from one side.

Each server runs ``python -m workflowhttp serve <module>:app`` (see :mod:`tests.servers`) with
a module written to a temporary directory. Every request goes to a path of its own; once the
server is stopped (so that nothing is left to be written), the lines naming each path are
counted in its output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.servers import Server, start, stop

pytestmark = pytest.mark.gunicorn

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 3

APP = """
{prelude}
from workflowhttp import App, http
from workflowhttp.stream import Stream
from workflowhttp.stream.processors import LogProcessor


@http.GET("/health")
def health() -> dict:
    return {{"status": "ok"}}


@http.GET("/hello/{{name}}")
def hello(name: str) -> str:
    return f"Hello {{name}}"


app = App(controllers=[health, hello]{stream})
"""
STREAM = ", stream=Stream(LogProcessor, shards=1)"
MODULES = {
    "streamed": APP.format(prelude="", stream=STREAM),
    "plain": APP.format(prelude="", stream=""),
    # The app configures logging itself, as many do: its handler and format are kept.
    "configured": APP.format(
        prelude='import logging\nlogging.basicConfig(level=logging.INFO, format="MINE %(name)s '
        '%(message)s")',
        stream=STREAM,
    ),
}


def serve(tmp_path: Path, module: str, *options: str) -> tuple[Server, list[str]]:
    """Serve ``module``, send it a request on each of ``REQUESTS`` paths, stop it; return the
    server and the paths."""
    (tmp_path / "apps").mkdir(exist_ok=True)
    (tmp_path / "apps" / f"logging_{module}.py").write_text(MODULES[module], "utf-8")
    server = start(
        f"logging_{module}:app",
        tmp_path / "server",
        *options,
        workers=1,
        graceful_timeout=3,
        env={"PYTHONPATH": os.pathsep.join([str(tmp_path / "apps"), str(ROOT)])},
    )
    try:
        paths = [f"/hello/visitor-{number}" for number in range(REQUESTS)]
        for path in paths:
            assert server.request("GET", path).status == 200
    finally:
        assert stop(server) == 0, server.output()
    return server, paths


def lines_naming(server: Server, path: str) -> list[str]:
    # The stream logs the path alone; gunicorn logs the request line: both end in the name.
    return [
        line for line in server.output().splitlines() if f'{path}"' in line or f"{path} " in line
    ]


def test_an_app_with_a_log_processor_logs_each_request_once(tmp_path: Path) -> None:
    """The stream's line, on stderr without any configuration, and not gunicorn's too."""
    server, paths = serve(tmp_path, "streamed")
    for path in paths:
        (line,) = lines_naming(server, path)
        assert "[INFO] workflowhttp.access: {" in line, line
        record = json.loads(line.split("workflowhttp.access: ", 1)[1])
        assert (record["path"], record["route"], record["status"]) == (path, "hello", 200)


def test_an_app_without_one_gets_gunicorns_line(tmp_path: Path) -> None:
    server, paths = serve(tmp_path, "plain")
    for path in paths:
        (line,) = lines_naming(server, path)
        assert f'"GET {path} HTTP/1.1" 200' in line, line


def test_an_app_that_configured_logging_keeps_its_handler_and_one_line(tmp_path: Path) -> None:
    """It used to get two lines per request: its own handler's and gunicorn's."""
    server, paths = serve(tmp_path, "configured")
    for path in paths:
        (line,) = lines_naming(server, path)
        assert line.startswith("MINE workflowhttp.access {"), line


def test_access_log_gunicorn_with_json(tmp_path: Path) -> None:
    server, paths = serve(tmp_path, "streamed", "--access-log", "gunicorn", "--log-format", "json")
    records = [json.loads(line) for line in server.output().splitlines()]  # every line is JSON
    assert {"Starting gunicorn", "Shutting down: Master"} <= {
        record.get("message", "").split(" 2")[0] for record in records
    }
    for path in paths:
        (line,) = lines_naming(server, path)
        record = json.loads(line)
        assert record["logger"] == "gunicorn.access"
        assert (record["method"], record["path"], record["status"]) == ("GET", path, 200)


def test_the_streams_lines_in_json(tmp_path: Path) -> None:
    server, paths = serve(tmp_path, "streamed", "--log-format", "json")
    for path in paths:
        (line,) = lines_naming(server, path)
        record = json.loads(line)
        assert record["logger"] == "workflowhttp.access"
        assert record["level"] == "INFO"
        assert (record["path"], record["status"]) == (path, 200)  # flat, not a string in one


@pytest.mark.parametrize("module", ["streamed", "plain"])
def test_access_log_off(tmp_path: Path, module: str) -> None:
    server, paths = serve(tmp_path, module, "--access-log", "off")
    assert "Booting worker" in server.output()
    for path in paths:
        assert lines_naming(server, path) == []


def test_no_log_config_leaves_the_apps_logging_alone(tmp_path: Path) -> None:
    """Nothing configured by the command: the app's own handler shows the stream's line."""
    server, paths = serve(tmp_path, "configured", "--no-log-config")
    for path in paths:
        (line,) = lines_naming(server, path)
        assert line.startswith("MINE workflowhttp.access {"), line
