"""The bookstore's middleware: security headers on every answer."""

from __future__ import annotations

from workflowhttp import HttpEvent

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",  # browsers must not guess a JSON body is HTML
    "X-Frame-Options": "DENY",  # no page of ours inside someone else's frame
    "Referrer-Policy": "no-referrer",
}


class SecurityHeaders:
    """Add :data:`SECURITY_HEADERS` to every response, errors and 404s included.

    A global middleware without filters: its outgoing step runs for every request that
    reached the middleware chain (all but the ones the kernel's request checks refuse).
    """

    def outgoing(self, event: HttpEvent) -> None:
        headers = event.response.headers
        for name, value in SECURITY_HEADERS.items():
            headers.setdefault(name, value)  # a controller's own choice wins
