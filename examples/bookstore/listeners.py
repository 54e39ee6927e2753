"""The bookstore's listeners: an admin token check and a friendly 403."""

from __future__ import annotations

import dataclasses
import hmac
import html

from workflowhttp import (
    AccessDenied,
    HTMLResponse,
    HttpEvent,
    JSONResponse,
    http_workflow,
    listener,
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The bookstore's configuration (see ``create_app``)."""

    db_path: str
    admin_token: str


class BearerTokenAuth:
    """Routes in the group ``admin`` need ``Authorization: Bearer <admin token>``.

    A listener class: built once when the app is built, its constructor injected.
    """

    def __init__(self, settings: Settings) -> None:
        self.token = settings.admin_token.encode()

    @listener(http_workflow.on_auth)
    def check(self, event: HttpEvent) -> None:
        route = event.route
        if route is None or "admin" not in route.groups:
            return  # the kernel (priority 100) moves on to resolve_parameters
        # PERF: read the header from the environ; event.request would build a werkzeug Request.
        scheme, _, token = event.environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            event.access_denied("This needs an admin token: send 'Authorization: Bearer <token>'.")
        # SECURITY: a constant-time comparison does not leak how much of the token matched.
        elif not hmac.compare_digest(token.strip().encode(), self.token):
            event.access_denied("That admin token is not valid.")


class FriendlyAccessDenied:
    """Answer 403 with a hint: an HTML page for browsers, JSON for everybody else."""

    @listener(http_workflow.on_access_denied)
    def explain(self, event: HttpEvent) -> None:
        error = event.error
        message = error.message if isinstance(error, AccessDenied) else AccessDenied.message
        hint = "Admin routes need the header 'Authorization: Bearer <token>'."
        accept = event.request.accept_mimetypes
        if accept.best_match(["application/json", "text/html"]) == "text/html":
            event.send(
                HTMLResponse(
                    f"<!doctype html>\n<title>No entry</title>\n<h1>No entry</h1>\n"
                    f"<p>{html.escape(message)}</p>\n<p>{html.escape(hint)}</p>\n",
                    status=403,
                )
            )
        else:
            event.send(JSONResponse({"message": message, "hint": hint}, status=403))
