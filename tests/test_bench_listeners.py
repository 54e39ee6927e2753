"""``python -m bench.listeners`` in its smallest mode: every row, every copy, no timing.

The bench is a report: this test checks that it measures what it says (the plain, SQLite and
Redis servers under wrk, the diagnostic rows, the in-process enqueue, the delivery into one and
16 queues with every queued copy delivered), never how fast anything was. Skipped without wrk
(the bench needs it); the Redis rows are expected whenever redis-server and the redis package
are installed (and required under ``WORKFLOWHTTP_REQUIRE_REDIS=1``, as in CI).
"""

from __future__ import annotations

import os

import pytest

from bench import listeners
from bench.server import find_wrk

pytestmark = pytest.mark.gunicorn


@pytest.mark.timeout(240)
def test_smallest_run_has_every_row_and_delivers_every_copy() -> None:
    if find_wrk() is None:
        if os.environ.get("WORKFLOWHTTP_REQUIRE_WRK") == "1":  # CI installs it (.ci/run)
            pytest.fail("wrk is not installed (WORKFLOWHTTP_REQUIRE_WRK=1)")
        pytest.skip("wrk is not installed (apt-get install wrk)")
    no_redis = listeners.find_redis()
    if no_redis is not None and os.environ.get("WORKFLOWHTTP_REQUIRE_REDIS") == "1":
        pytest.fail(f"{no_redis} (WORKFLOWHTTP_REQUIRE_REDIS=1)")
    config = listeners.Config.smallest()

    results = listeners.run(config, lambda message: None)

    assert results.skipped is None
    storages = ["sqlite"] if no_redis else ["sqlite", "redis"]
    expected = ["plain", *storages, *(f"{name}_nodelivery" for name in storages)]
    assert sorted(results.load) == sorted(expected), results.notes
    for name, row in results.load.items():
        assert len(row.rates) == config.rounds and None not in row.rates, (name, results.notes)
        assert all(count > 0 for count in row.requests), name
        assert row.errors == [0] * config.rounds, (name, results.notes)
    for name in storages:  # the delivering servers' queues were read, and drained, every round
        row = results.load[name]
        assert len(row.left) == len(row.drain) == config.rounds
        assert len(results.enqueue_us[name]) == config.samples
    assert not [note for note in results.notes if "not delivered" in note], results.notes

    delivered = {(row.storage, row.queues): row for row in results.delivery}
    assert sorted(delivered) == sorted((s, q) for s in storages for q in (1, 16))
    for row in delivered.values():
        assert row.delivered == row.copies == config.copies, (row, results.notes)
        assert row.rate is not None

    report = listeners.markdown(results)
    for name in expected:
        assert f"| `{name}` |" in report
    for storage, queues in delivered:
        assert f"| `{storage}` | {queues} | {config.copies}/{config.copies} |" in report
