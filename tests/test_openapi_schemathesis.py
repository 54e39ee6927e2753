"""A client nobody here wrote: schemathesis, against the bookstore under real gunicorn.

The bookstore runs on 127.0.0.1 (one worker, its own SQLite file); schemathesis loads the
document the app serves at ``/openapi.json`` and sends every operation generated requests,
valid and invalid. Each answer must be no 5xx, and must conform to the document: a documented
status code, its content type, its headers and its schema.

Bounded and deterministic: few examples per operation, derandomized (the same requests on
every run), no example database, a timeout per request and per test; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from schemathesis import checks  # noqa: E402

from tests.servers import Server, serving, start  # noqa: E402

pytestmark = pytest.mark.gunicorn

TOKEN = "schemathesis-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
MAX_EXAMPLES = 12  # per operation
REQUEST_TIMEOUT = 10.0  # seconds, per request
# Every answer: no server error, and what the document says (status, content type, headers,
# schema). Not the checks on whether the server accepts/rejects data: the document does not
# claim which generated values the store takes (an author's name that exists already is a 409).
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def bookstore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("schemathesis")
    server = start(
        "examples.bookstore.app:app",
        directory,
        workers=1,  # one worker: the requests, hence the store's state, in one order
        graceful_timeout=3,
        env={"BOOKSTORE_DB": str(directory / "bookstore.sqlite3"), "BOOKSTORE_ADMIN_TOKEN": TOKEN},
        wait_for_workers=False,
    )
    with serving(server) as running:
        yield running


@pytest.fixture(scope="module")
def api_schema(bookstore: Server) -> Any:
    """The bookstore's own served document, its requests sent to that server only."""
    base = f"http://127.0.0.1:{bookstore.port}"
    loaded = schemathesis.openapi.from_url(f"{base}/openapi.json", timeout=REQUEST_TIMEOUT)
    # Pinned, whatever the document's servers say: nothing leaves 127.0.0.1.
    loaded.config.base_url = base
    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.timeout(90)
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_conforms_to_the_document(case: Any) -> None:
    # With the admin token: the guarded routes run too (their 204, 404 and 409).
    case.call_and_validate(checks=CHECKS, headers=ADMIN, timeout=REQUEST_TIMEOUT)
