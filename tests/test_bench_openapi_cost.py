"""``python -m bench.openapi_cost`` in its smallest mode: its answers and its table, no timing.

The bench is a report: these tests check that it measures what it says (every endpoint, both
apps answering alike), never how fast anything was.
"""

from __future__ import annotations

import time

import pytest

from bench import openapi_cost
from bench.endpoints import ENDPOINTS

SMALLEST = ["--rounds", "2", "--seconds-per-round", "0.05"]


def _table(output: str) -> dict[str, list[str]]:
    """Return endpoint title → the other cells of its row in the printed table."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_table_has_every_endpoint_and_both_apps_answered_the_same_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert openapi_cost.main(SMALLEST) == 0
    output = capsys.readouterr().out
    rows = _table(output)
    assert sorted(rows) == sorted(endpoint.title for endpoint in ENDPOINTS)
    for endpoint in ENDPOINTS:
        status, plain, described, ratio, noise, calls = rows[endpoint.title]
        assert status == str(endpoint.status)  # one status: both apps gave it
        assert "n/a" not in (plain, described, ratio, noise)
        assert calls.endswith("(same)")
    assert "lowest median ratio" in output
    assert "untouched" in output and "CHANGED" not in output
    assert "Discrepancies" not in output


def test_both_apps_answer_every_endpoint_as_expected_and_are_both_timed() -> None:
    measured = openapi_cost.measure(2, 0.05, time.thread_time_ns)
    assert measured.discrepancies == []
    for row in measured.rows:
        expected = row.endpoint.status
        assert list(row.statuses.values()) == [expected] * 3  # plain, openapi, plain again
        assert [len(c.samples) for c in row.group.contenders] == [2, 2, 2]
        assert len(row.ratios()) == len(row.ratios(openapi_cost.AGAIN)) == 2
        assert row.calls[openapi_cost.PLAIN] == row.calls[openapi_cost.DESCRIBED]
    for note in measured.notes:  # the document, the docs page and a trace were served
        assert "GET /openapi.json 200" in note and "GET /docs 200" in note
        assert "trace(" in note and ") 200 through" in note
