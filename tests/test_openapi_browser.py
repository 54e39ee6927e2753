"""A real browser shows the docs page: headless Chromium loads the bookstore's ``/docs``.

The bookstore runs under gunicorn on 127.0.0.1; Chromium (Debian's ``chromium``) loads
``/docs`` with every other host unresolvable, so the page works only if the app serves all of
Swagger UI itself. The DOM Chromium renders (``--dump-dom``) must hold one operation block per
operation of the served document, with its deep-link id and its path; a screenshot is saved in
the test's temporary folder.

Without ``chromium`` the test is skipped, unless ``WORKFLOWHTTP_REQUIRE_CHROMIUM=1`` (set by
``.ci/run``): then it fails. Each Chromium run is bounded (:data:`BROWSER_TIMEOUT`) and killed
with its process group when it outlives it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from tests.servers import Server, serving, start

pytestmark = pytest.mark.gunicorn

BROWSER_TIMEOUT = 60.0  # seconds for one Chromium run
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # No network but the app: every other host name fails to resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--virtual-time-budget=10000",  # time for Swagger UI to fetch the document and render
)


@pytest.fixture(scope="module")
def browser() -> str:
    """The browser's path; skip (or fail, with WORKFLOWHTTP_REQUIRE_CHROMIUM=1) without it,
    before any server is started."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "chromium is not installed (Debian: apt-get install chromium)"
        if os.environ.get("WORKFLOWHTTP_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"{reason} (WORKFLOWHTTP_REQUIRE_CHROMIUM=1)")
        pytest.skip(reason)
    return found


def browse(browser: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess[bytes]:
    """Run Chromium with ``arguments``, in its own process group; kill the group and fail
    when it runs over :data:`BROWSER_TIMEOUT`."""
    process = subprocess.Popen(
        [browser, *FLAGS, f"--user-data-dir={profile}", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the browser and its helpers
    )
    try:
        stdout, stderr = process.communicate(timeout=BROWSER_TIMEOUT)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"chromium ran over {BROWSER_TIMEOUT}s:\n{stderr.decode()[-2000:]}")
    finally:
        with suppress(ProcessLookupError):  # a helper left behind by the browser
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, stderr.decode()[-2000:]
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def bookstore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("browser")
    server = start(
        "examples.bookstore.app:app",
        directory,
        workers=1,
        graceful_timeout=3,
        env={"BOOKSTORE_DB": str(directory / "bookstore.sqlite3")},
        wait_for_workers=False,
    )
    with serving(server) as running:
        yield running


@pytest.mark.timeout(2 * BROWSER_TIMEOUT + 30)
def test_the_docs_page_shows_every_operation(
    browser: str, bookstore: Server, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{bookstore.port}/docs"
    document = bookstore.get_json("/openapi.json")
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    assert len(operations) >= 10  # the bookstore's, not an empty document

    dom = browse(browser, tmp_path / "profile-dom", "--dump-dom", url).stdout.decode()
    (tmp_path / "docs.html").write_text(dom, encoding="utf-8")
    blocks = re.findall(r'class="opblock opblock-(get|post|put|patch|delete)\b', dom)
    assert sorted(blocks) == sorted(method for _, method, _ in operations), dom[-2000:]
    for path, method, operation in operations:
        # Swagger UI's deep links: operations-<tag>-<operationId>, CSS-escaped ("." → "\.").
        tag = operation.get("tags", ["default"])[0]
        anchor = f'id="operations-{tag}-{operation["operationId"].replace(".", chr(92) + ".")}"'
        assert anchor in dom, (method, path, anchor)
        assert f'class="opblock-summary-path" data-path="{path}"' in dom, (method, path)

    screenshot = tmp_path / "docs.png"
    browse(
        browser,
        tmp_path / "profile-screenshot",
        f"--screenshot={screenshot}",
        "--window-size=1280,2000",
        url,
    )
    image = screenshot.read_bytes()
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(image) > 10_000  # a rendered page, not a blank one
