"""The bookstore app: ``python3 -m workflowhttp serve examples.bookstore.app:app``.

``app`` is built when this module is imported, from the environment:

* ``BOOKSTORE_DB``: the SQLite file (default: ``workflowhttp-bookstore.sqlite3`` in the system's
  temp directory, shared by every gunicorn worker); ``:memory:`` gives each process its own
  database.
* ``BOOKSTORE_ADMIN_TOKEN``: the bearer token of the ``admin`` routes (default:
  ``let-me-in``, for trying the example only).

Its OpenAPI document is at ``/openapi.json``, the interactive docs page at ``/docs`` (served
by the app itself; the ``openapi`` extra).

Every answer carries security headers (:mod:`.middleware`) and an ``X-Request-ID``; the
event stream logs one JSON line per request on the ``workflowhttp.access`` logger (attach a
handler to see them, see docs/events.md).

Tests and other programs call :func:`create_app` with their own settings.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile

from workflowhttp import App, Provider
from workflowhttp.openapi import OpenAPI
from workflowhttp.stream import Stream
from workflowhttp.stream.processors import LogProcessor

from .controllers import AuthorController, BookController, health, home
from .listeners import BearerTokenAuth, FriendlyAccessDenied, Settings
from .middleware import SecurityHeaders
from .storage import AuthorStore, BookStore, Database, open_connection

__all__ = ["app", "create_app"]

DEFAULT_DB = os.path.join(tempfile.gettempdir(), "workflowhttp-bookstore.sqlite3")
DEFAULT_ADMIN_TOKEN = "let-me-in"


def create_app(
    db_path: str | None = None, *, admin_token: str | None = None, debug: bool = False
) -> App:
    """Build the bookstore: open (and if need be create and seed) the database, wire the app.

    Args:
        db_path: The SQLite file, or ``":memory:"``. Default: ``$BOOKSTORE_DB``, else a file in
            the temp directory.
        admin_token: The token of the ``admin`` routes. Default: ``$BOOKSTORE_ADMIN_TOKEN``,
            else ``let-me-in``.
        debug: Show tracebacks in 500 responses.
    """
    settings = Settings(
        db_path=db_path or os.environ.get("BOOKSTORE_DB") or DEFAULT_DB,
        admin_token=admin_token or os.environ.get("BOOKSTORE_ADMIN_TOKEN") or DEFAULT_ADMIN_TOKEN,
    )
    database = Database(settings.db_path)
    database.initialize()
    return App(
        controllers=[home, health, BookController, AuthorController],
        listeners=[BearerTokenAuth, FriendlyAccessDenied],
        providers=[
            settings,  # instances provide their own class, as singletons
            database,
            # A generator: one connection per request, closed once the response is sent.
            Provider(sqlite3.Connection, open_connection, scope="request"),
            Provider(BookStore, scope="request"),  # they need the request's connection
            Provider(AuthorStore, scope="request"),
        ],
        middlewares=[SecurityHeaders],
        # The stream's threads start with the first request: in each gunicorn worker.
        stream=Stream(LogProcessor),
        # /openapi.json and /docs; the admin routes' operations list BearerTokenAuth's 403.
        openapi=OpenAPI(
            title="Bookstore",
            version="1.0",
            description="Books and authors; deleting needs the admin token.",
            guarded_groups=("admin",),
        ),
        debug=debug,
    )


# Built on import, so in each gunicorn worker after the fork: every worker opens its own
# connections (the CLI never preloads the app).
app = create_app()
