"""The workflow tokens are typed: a type checker catches a misspelt state, as Python does."""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api as mypy_api

from workflowhttp import http_workflow
from workflowhttp.proxy import proxy_workflow

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = """\
from workflowhttp import App, HttpEvent, http_workflow
from workflowhttp.proxy import proxy_workflow

app = App()


def deny(event: HttpEvent) -> None:
    event.access_denied()


app.listen(http_workflow.on_auth, deny)
app.listen(proxy_workflow.on_filter_request, deny)
app.listen(http_workflow.on_auht, deny)
app.listen(proxy_workflow.on_forwrd, deny)
"""


def test_mypy_names_a_misspelt_state_and_accepts_the_right_ones(tmp_path, monkeypatch):
    (tmp_path / "snippet.py").write_text(SNIPPET)
    (tmp_path / "mypy.ini").write_text("[mypy]\nfollow_imports = silent\n")
    monkeypatch.setenv("MYPYPATH", str(ROOT))
    monkeypatch.chdir(tmp_path)
    out, err, status = mypy_api.run(["--no-incremental", "--config-file", "mypy.ini", "snippet.py"])
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1, (out, err)
    assert len(errors) == 2, out
    assert errors[0].startswith("snippet.py:13:") and '"on_auht"' in errors[0]
    assert 'maybe "on_auth"' in errors[0]
    assert errors[1].startswith("snippet.py:14:") and '"on_forwrd"' in errors[1]


def test_a_misspelt_state_fails_at_run_time_too_naming_the_states():
    with pytest.raises(AttributeError, match=r"http_workflow has no event 'on_auht'; states are"):
        http_workflow.on_auht  # noqa: B018
    with pytest.raises(AttributeError, match=r"proxy_workflow has no event 'on_forwrd'"):
        proxy_workflow.on_forwrd  # noqa: B018


def test_every_state_has_its_token():
    from workflowhttp.workflow import HTTP_WORKFLOW, PROXY_WORKFLOW

    for tokens, workflow in ((http_workflow, HTTP_WORKFLOW), (proxy_workflow, PROXY_WORKFLOW)):
        for state in workflow.states:
            assert getattr(tokens, f"on_{state}").state == state
