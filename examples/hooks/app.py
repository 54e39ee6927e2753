"""Route hooks over a small catalogue: ``python3 -m workflowhttp serve examples.hooks.app:app``.

The catalogue serves ``/catalogue/{path}``; operators re-route parts of it at run time::

    curl -X PUT localhost:8000/catalogue/books/_hooks/route -H 'X-Operator-Key: let-me-in' \\
         -H 'Content-Type: application/json' -d '{"destination": "/maintenance"}'

and every request under ``/catalogue/books`` is answered by ``/maintenance`` until the hook
expires (an hour; ``X-Expire-After`` says otherwise) or is removed (``DELETE`` on the same
path). ``workflowhttp hooks examples.hooks.app:app`` lists the registered hooks.

* Registering needs ``X-Operator-Key`` equal to ``HOOKS_OPERATOR_KEY`` (default
  ``let-me-in``), checked in ``auth`` for the ``hooks`` group, in constant time.
* Hooks are kept in ``HOOKS_STORAGE`` (default ``sqlite:///hooks.sqlite3`` in the working
  directory; ``redis://127.0.0.1:6379/0`` to share them between machines).
* Only local destinations: no ``allowed_destinations``, so a client cannot point the app at
  another host.
"""

from __future__ import annotations

import hmac
import os

from workflowhttp import App, HttpEvent, http, http_workflow
from workflowhttp.hooks import Hooks

__all__ = ["app", "create_app"]


@http.GET("/catalogue/{path:path}")
def catalogue(path: str) -> dict[str, str]:
    """A catalogue page."""
    return {"page": path}


@http.ANY("/maintenance")
@http.ANY("/maintenance/{path:path}")
def maintenance(path: str = "") -> tuple[dict[str, str], int]:
    """Where operators send what is under maintenance."""
    return {"message": "under maintenance", "page": path}, 503


def create_app(storage: str | None = None, *, key: str | None = None) -> App:
    """Build the app with hooks in ``storage`` (default ``$HOOKS_STORAGE``)."""
    hooks = Hooks(storage=storage or os.environ.get("HOOKS_STORAGE", "sqlite:///hooks.sqlite3"))
    secret = (key or os.environ.get("HOOKS_OPERATOR_KEY") or "let-me-in").encode()
    app = App(controllers=[catalogue, maintenance], extensions=[hooks])

    @app.listen(http_workflow.on_auth)
    def operators_register_hooks(event: HttpEvent) -> None:
        route = event.route
        if route is None or "hooks" not in route.groups:
            return
        given = event.environ.get("HTTP_X_OPERATOR_KEY", "").encode()
        # SECURITY: a constant-time comparison does not leak how much of the key matched.
        if not hmac.compare_digest(given, secret):
            event.access_denied("Registering hooks needs X-Operator-Key.")

    return app


app = create_app()
