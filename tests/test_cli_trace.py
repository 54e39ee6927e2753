"""``workflowhttp trace`` (the table and the answer) and ``workflowhttp graph --listeners``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from workflowhttp.cli import main
from workflowhttp.workflow import draw

APP = '''
from workflowhttp import App, HttpEvent, Request, http, http_workflow


@http.GET("/items/{id}").group("admin")
def item(id: int) -> dict[str, int]:
    return {"id": id}


@http.POST("/echo")
def echo(request: Request) -> bytes:
    return request.get_data()


def guard(event: HttpEvent) -> None:
    if "admin" in event.route.groups and event.request.headers.get("X-Token") != "t":
        event.access_denied("a token is needed")


def stamp(event: HttpEvent) -> None:
    pass


app = App(controllers=[item, echo])
app.listen(http_workflow.on_auth, guard, priority=10)
app.listen(http_workflow.on_auth, stamp, priority=-3)
app.listen(http_workflow.on_request, stamp)
'''


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "traced_cli_app.py").write_text(APP, "utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "traced_cli_app", raising=False)
    return "traced_cli_app:app"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def table(out: str) -> list[list[str]]:
    """The table's rows (up to the blank line), split on runs of 2+ spaces, µs dropped."""
    head = out.split("\n\n", 1)[0].splitlines()
    return [[cell for cell in line.split("  ") if cell][:-1] for line in head[1:]]


def test_trace_prints_the_table_and_the_answer(target, capsys):
    status, out, err = run(capsys, "trace", target, "GET", "/items/7", "-H", "X-Token: t")
    assert (status, err) == (0, "")
    assert out.splitlines()[0].split() == ["STATE", "LISTENER", "PRIORITY", "ACTION", "µs"]
    assert [[cell.strip() for cell in row] for row in table(out)] == [
        ["request", "traced_cli_app.stamp", "0", "-"],
        ["workflowhttp.kernel.schedule_route", "100", "next(route)"],
        ["route", "workflowhttp.kernel.match_route", "100", "next(auth)"],
        ["workflowhttp.kernel.route_fallback", "1000", "-"],
        ["auth", "traced_cli_app.stamp", "-3", "-"],
        ["traced_cli_app.guard", "10", "-"],
        ["workflowhttp.kernel.schedule_resolve_parameters", "100", "next(resolve_parameters)"],
        ["resolve_parameters", "workflowhttp.kernel.resolve_parameters", "100", "next(controller)"],
        ["controller", "workflowhttp.kernel.call_controller", "100", "send"],
        ["response", "workflowhttp.kernel.render_result", "-100", "response"],
    ]
    answer = out.split("\n\n", 1)[1]
    assert answer.startswith("GET /items/7 → 200\nContent-Type: application/json\n")
    assert answer.endswith('\n\n{"id":7}\n')


def test_trace_shows_a_refusal_and_its_error(target, capsys):
    status, out, _ = run(capsys, "trace", target, "GET", "/items/7")
    assert status == 0
    assert "traced_cli_app.guard" in out and "next(access_denied)" in out
    assert "GET /items/7 → 403" in out
    assert out.rstrip().endswith("error: AccessDenied: a token is needed")


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ("plain", "plain"),
        ("\x1b[31mred\x07", "\\x1b[31mred\\x07"),
        ("line\nnext", "line\\nnext"),
        ("é", "\\xe9"),
    ],
    ids=["plain", "terminal-escape", "newline", "non-ascii"],
)
def test_trace_sends_the_body_and_escapes_the_answer(target, capsys, body, shown):
    # SECURITY: a body cannot write control sequences to the terminal
    status, out, _ = run(capsys, "trace", target, "POST", "/echo", "-d", body)
    assert status == 0
    assert "POST /echo → 200" in out
    assert out.rstrip("\n").endswith("\n" + shown)
    assert "\x1b" not in out and "\x07" not in out


def test_trace_of_a_long_body_shows_its_head(target, capsys):
    _, out, _ = run(capsys, "trace", target, "POST", "/echo", "-d", "x" * 1000)
    assert out.rstrip("\n").endswith("x" * 512 + " … (488 more bytes)")


def test_a_bad_header_is_one_line(target, capsys):
    with pytest.raises(SystemExit, match="a header is 'Name: value', not 'X-Token'"):
        main(["trace", target, "GET", "/items/7", "-H", "X-Token"])


def test_trace_of_a_missing_app_is_one_line(capsys):
    status, _, err = run(capsys, "trace", "no_such_module_here:app", "GET", "/")
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("workflowhttp: error:")


def test_graph_listeners_notes_each_states_own_listeners(target, capsys):
    status, out, _ = run(capsys, "graph", target, "--listeners")
    assert status == 0
    assert out.startswith(str(draw("mermaid")).rstrip("\n"))
    notes = out[len(str(draw("mermaid")).rstrip("\n")) :]
    assert notes == (
        "\n  note right of request\n"
        "    0 traced_cli_app.stamp\n"
        "  end note\n"
        "  note right of auth\n"
        "    -3 traced_cli_app.stamp\n"
        "    10 traced_cli_app.guard\n"
        "  end note\n"
    )
    assert "kernel" not in notes  # the app's own listeners only


def test_graph_without_listeners_is_unchanged(target, capsys):
    _, plain, _ = run(capsys, "graph")
    _, with_app, _ = run(capsys, "graph", target)
    assert plain == with_app == str(draw("mermaid")) + "\n"


def test_graph_listeners_needs_the_app(capsys):
    with pytest.raises(SystemExit, match="needs the app"):
        main(["graph", "--listeners"])


def test_the_command_runs(tmp_path):
    (tmp_path / "traced_cli_app.py").write_text(APP, "utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "workflowhttp", "trace", "traced_cli_app:app", "GET", "/nowhere"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "route_not_found" in result.stdout
    assert "GET /nowhere → 404" in result.stdout
