"""What ``import workflowhttp`` gives a user: one name per concept, each where it belongs."""

from __future__ import annotations

import workflowhttp
import workflowhttp.errors
import workflowhttp.middleware
import workflowhttp.workflow


def test_every_exported_name_exists():
    missing = [name for name in workflowhttp.__all__ if not hasattr(workflowhttp, name)]
    assert missing == []


def test_middleware_comes_from_the_package_too():
    assert workflowhttp.Middleware is workflowhttp.middleware.Middleware
    assert "Middleware" in workflowhttp.__all__


def test_one_name_for_403():
    assert not hasattr(workflowhttp, "Forbidden")
    assert not hasattr(workflowhttp.errors, "Forbidden")
    assert workflowhttp.AccessDenied.status == 403


def test_the_workflow_errors_live_together():
    loop = workflowhttp.WorkflowLoop
    assert loop is workflowhttp.errors.WorkflowLoop is workflowhttp.workflow.WorkflowLoop
    assert loop.__module__ == "workflowhttp.errors"
    assert issubclass(loop, workflowhttp.WorkflowError)
