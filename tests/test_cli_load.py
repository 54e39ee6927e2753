"""What a target names, and how a bad one is reported: :func:`workflowhttp.cli.load_app`.

An App is served as it is, a factory without arguments is called (with or without ``()``), any
other WSGI callable is served as it is. Every command that loads an app (``serve``, ``dev``,
``routes``) reports a bad target the same way: one line on stderr, exit status 2, no
traceback.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from tests.servers import serving, start
from workflowhttp import App
from workflowhttp.cli import LoadError, load_app
from workflowhttp.testing import TestClient

ROOT = Path(__file__).resolve().parent.parent

TARGETS = '''
from workflowhttp import App, http


@http.GET("/health")
def health() -> dict:
    return {"status": "ok"}


def create_app(name: str = "default") -> App:
    return App(controllers=[health])


def wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"plain wsgi"]


class Wrapper:
    """A WSGI middleware instance: its __call__ takes (environ, start_response)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


def passthrough(*args, **kwargs):
    return wsgi(*args, **kwargs)


def needs_arguments(db_path):
    return App()


def raises():
    raise RuntimeError("the database is down")


def returns_nothing():
    return None


def returns_a_factory():
    return create_app


app = create_app()
wrapped = Wrapper(app)
number = 42
'''


@pytest.fixture
def targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module of targets, importable under a name of its own; forgotten afterwards."""
    name = f"cli_targets_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(TARGETS, "utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


# -- what a target names -----------------------------------------------------------------------


def test_an_app_is_served_as_it_is(targets: str) -> None:
    module = __import__(targets)
    assert load_app(f"{targets}:app") is module.app
    assert load_app(targets) is module.app  # the attribute defaults to "app"


@pytest.mark.parametrize("target", ["create_app", "create_app()"], ids=["bare", "parentheses"])
def test_a_factory_is_called_with_or_without_parentheses(targets: str, target: str) -> None:
    app = load_app(f"{targets}:{target}")
    assert isinstance(app, App)
    assert TestClient(app).get("/health").json == {"status": "ok"}


@pytest.mark.parametrize("name", ["wsgi", "wrapped", "passthrough"])
def test_a_wsgi_callable_is_served_as_it_is(targets: str, name: str) -> None:
    module = __import__(targets)
    assert load_app(f"{targets}:{name}") is getattr(module, name)


def test_a_load_error_names_the_file_with_a_syntax_error(tmp_path: Path) -> None:
    broken = tmp_path / "cli_broken_module.py"
    broken.write_text("x = 1\ndef f(:\n    pass\n", "utf-8")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(LoadError) as raised:
            load_app("cli_broken_module:app")
    finally:
        sys.path.remove(str(tmp_path))
    assert f"{broken}:2: syntax error" in str(raised.value)
    assert str(broken) in raised.value.files  # what `dev` watches until it is fixed


# -- what a bad target says --------------------------------------------------------------------

RAISES = TARGETS.splitlines().index('    raise RuntimeError("the database is down")') + 1

BAD_TARGETS = [
    ("{m}:nothing", "module '{m}' has no attribute 'nothing' (its apps: app)"),
    ("no_such_module_here:app", "No module named 'no_such_module_here'"),
    ("cli_broken:app", "cli_broken.py:3: syntax error: "),
    ("cli_failing:app", "importing cli_failing raised KeyError: 'DATABASE_URL' (cli_failing.py:5)"),
    ("{m}:raises", f"{{m}}:raises() raised RuntimeError: the database is down ({{m}}.py:{RAISES})"),
    ("{m}:returns_nothing", "{m}:returns_nothing() returned NoneType, not an App"),
    ("{m}:returns_a_factory", "{m}:returns_a_factory() returned function, not an App"),
    ("{m}:needs_arguments", "{m}:needs_arguments(db_path) is neither a WSGI callable"),
    ("{m}:number", "{m}:number is an object of type int"),
    ("{m}:app()", "{m}:app is an App, not a factory: drop the parentheses"),
    ("{m}.py", "give a module, not a file: {m}:app"),
    (":app", "expected module:app"),
]
BAD_IDS = [
    "missing-attribute",
    "missing-module",
    "syntax-error",
    "import-raises",
    "factory-raises",
    "factory-returns-none",
    "factory-returns-a-factory",
    "needs-arguments",
    "not-callable",
    "app-called",
    "a-file",
    "no-module",
]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory to run the command from: the targets, a broken module, a failing one."""
    (tmp_path / "cli_targets.py").write_text(TARGETS, "utf-8")
    (tmp_path / "cli_broken.py").write_text("import os\n\ndef create_app(:\n    pass\n", "utf-8")
    (tmp_path / "cli_failing.py").write_text(
        'import os\n\nfrom workflowhttp import App\n\nURL = os.environ["DATABASE_URL"]\n', "utf-8"
    )
    return tmp_path


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m workflowhttp *args`` from ``project``, in a process group of its own.

    A command that starts a server instead of failing (the old code did, with a factory) has
    its whole group stopped by its PID after 30 seconds, the reloader's child included.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    env.pop("DATABASE_URL", None)
    command = [sys.executable, "-m", "workflowhttp", *args]
    with subprocess.Popen(
        command,
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate(timeout=10)
            pytest.fail(f"{' '.join(args)} was still running after 30s:\n{stderr}")
        finally:
            with suppress(ProcessLookupError):  # whatever the group left behind
                os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def assert_one_line_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("workflowhttp: error: "), result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(("target", "message"), BAD_TARGETS, ids=BAD_IDS)
def test_a_bad_target_is_one_line_and_status_2(project: Path, target: str, message: str) -> None:
    target, message = (text.replace("{m}", "cli_targets") for text in (target, message))
    assert_one_line_error(run(project, "routes", target), message)


@pytest.mark.parametrize(
    "command",
    [("serve", "--bind", "127.0.0.1:0", "--workers", "1"), ("dev", "--port", "0")],
    ids=["serve", "dev"],
)
@pytest.mark.parametrize(
    ("target", "message"), [BAD_TARGETS[2], BAD_TARGETS[4]], ids=["syntax-error", "raises"]
)
def test_serve_and_dev_say_the_same_line(
    project: Path, command: tuple[str, ...], target: str, message: str
) -> None:
    """Both load the target before any server starts: no worker traceback, no boot loop."""
    target, message = (text.replace("{m}", "cli_targets") for text in (target, message))
    assert_one_line_error(run(project, command[0], target, *command[1:]), message)


def test_routes_of_a_plain_wsgi_callable(project: Path) -> None:
    assert_one_line_error(
        run(project, "routes", "cli_targets:wsgi"),
        "cli_targets:wsgi is a WSGI callable, not a workflowhttp App: it has no routes",
    )


def test_routes_of_a_factory_without_parentheses(project: Path) -> None:
    result = run(project, "routes", "cli_targets:create_app")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["METHODS", "PATH", "NAME", "GROUPS", "DESCRIPTION"]
    assert row.split() == ["GET", "/health", "health"]


@pytest.mark.gunicorn
def test_serve_a_factory_without_parentheses(project: Path, tmp_path: Path) -> None:
    """``serve module:create_app`` used to serve the function itself: 500 to everything."""
    running = start(
        "cli_targets:create_app",
        tmp_path / "server",
        workers=1,
        graceful_timeout=2,
        env={"PYTHONPATH": os.pathsep.join([str(project), str(ROOT)])},
    )
    with serving(running) as server:
        assert server.get_json("/health") == {"status": "ok"}


def test_load_error_is_one_line() -> None:
    error = LoadError("first\n  second\r\n\nthird", files=["a.py", "a.py", "b.py"])
    assert str(error) == "first second third"
    assert error.files == ("a.py", "b.py")


def test_a_partial_factory_is_called(targets: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module: Any = __import__(targets)
    monkeypatch.setattr(module, "partial", functools.partial(module.create_app, "x"), raising=False)
    assert isinstance(load_app(f"{targets}:partial"), App)
