"""Route hooks over a small catalogue: ``python3 -m workflowhttp serve examples.hooks.app:app``.

The catalogue serves ``/catalogue/{path}``; operators re-route parts of it at run time::

    curl -X PUT localhost:8000/catalogue/books/_hooks/route -H 'X-Operator-Key: let-me-in' \\
         -H 'Content-Type: application/json' -d '{"destination": "/maintenance"}'

and every request under ``/catalogue/books`` is answered by ``/maintenance`` until the hook
expires (an hour; ``X-Expire-After`` says otherwise) or is removed (``DELETE`` on the same
path). Systems subscribe to changes with a listener hook::

    curl -X PUT localhost:8000/catalogue/_hooks/listeners/http/audit \
         -H 'X-Operator-Key: let-me-in' -H 'Content-Type: application/json' \
         -d '{"destination": "/audit", "methods": ["PUT"], "type": "after"}'

and a copy of every successful ``PUT /catalogue/...`` is queued and delivered to ``/audit``
(here a path of the app itself; an external URL must be under ``allowed_destinations``),
which keeps the last 100 (``GET /audit``). ``workflowhttp hooks examples.hooks.app:app`` lists
the registered hooks and each listener's queue.

* Registering needs ``X-Operator-Key`` equal to ``HOOKS_OPERATOR_KEY`` (default
  ``let-me-in``), checked in ``auth`` for the ``hooks`` group, in constant time.
* Hooks are kept in ``HOOKS_STORAGE`` (default ``sqlite:///hooks.sqlite3`` in the working
  directory; ``redis://127.0.0.1:6379/0`` to share them between machines).
* Only local destinations: no ``allowed_destinations``, so a client cannot point the app at
  another host.
"""

from __future__ import annotations

import collections
import hmac
import os
from typing import Annotated

from workflowhttp import App, Body, HttpEvent, http, http_workflow
from workflowhttp.hooks import DELIVERY, Hooks

__all__ = ["app", "create_app"]

#: The most bytes of a catalogue page (and of an audited copy) kept.
MAX_PAGE = 4096


@http.GET("/catalogue/{path:path}")
def catalogue(path: str) -> dict[str, str]:
    """A catalogue page."""
    return {"page": path}


@http.PUT("/catalogue/{path:path}")
def update(path: str, text: Annotated[str, Body()]) -> dict[str, str]:
    """Change a catalogue page (a stand-in: nothing is stored)."""
    return {"page": path, "updated": text[:MAX_PAGE]}


@http.ANY("/maintenance")
@http.ANY("/maintenance/{path:path}")
def maintenance(path: str = "") -> tuple[dict[str, str], int]:
    """Where operators send what is under maintenance."""
    return {"message": "under maintenance", "page": path}, 503


def create_app(storage: str | None = None, *, key: str | None = None) -> App:
    """Build the app with hooks in ``storage`` (default ``$HOOKS_STORAGE``)."""
    hooks = Hooks(storage=storage or os.environ.get("HOOKS_STORAGE", "sqlite:///hooks.sqlite3"))
    secret = (key or os.environ.get("HOOKS_OPERATOR_KEY") or "let-me-in").encode()
    # The audit log: the last 100 changes delivered by a listener hook (bounded: a client
    # sending many changes cannot grow it).
    audited: collections.deque[dict[str, str]] = collections.deque(maxlen=100)

    @http.PUT("/audit/{path:path}").group("audit")
    def audit(path: str, text: Annotated[str, Body()]) -> dict[str, str]:
        """Receive a listener hook's copy of a change."""
        audited.append({"page": path, "text": text[:MAX_PAGE]})
        return {"audited": path}

    @http.GET("/audit")
    def audit_log() -> dict[str, list[dict[str, str]]]:
        """The changes delivered so far (the last 100)."""
        return {"changes": list(audited)}

    app = App(controllers=[catalogue, update, maintenance, audit, audit_log], extensions=[hooks])

    @app.listen(http_workflow.on_auth)
    def operators_register_hooks(event: HttpEvent) -> None:
        route = event.route
        if route is not None and "audit" in route.groups:
            # Only the hooks deliver to /audit (a copy delivered in process carries the
            # environ key below, which no HTTP request can set): a client's PUT is refused.
            if DELIVERY not in event.environ:
                event.access_denied("Only listener hooks deliver to /audit.")
            return
        if route is None or "hooks" not in route.groups:
            return
        given = event.environ.get("HTTP_X_OPERATOR_KEY", "").encode()
        # SECURITY: a constant-time comparison does not leak how much of the key matched.
        if not hmac.compare_digest(given, secret):
            event.access_denied("Registering hooks needs X-Operator-Key.")

    return app


app = create_app()
