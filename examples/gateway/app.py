"""A gateway in front of the bookstore: ``python3 -m workflowhttp serve examples.gateway.app:app``.

Everything under ``/shop`` is forwarded to the upstream named by ``GATEWAY_UPSTREAM`` (default
``http://127.0.0.1:8000``, where the README's command serves the bookstore), with three
listeners of the proxy workflow around it:

* ``GET /shop/health`` is answered by the gateway itself (a forged answer: the upstream is
  never called), so a load balancer's probes do not reach the shop;
* writes (anything but ``GET``/``HEAD``/``OPTIONS``) need ``X-Gateway-Key`` equal to
  ``GATEWAY_KEY`` (default ``let-me-in``): checked in ``auth``, before anything is read or sent;
  the key itself is never forwarded;
* every answer says which upstream served it in ``X-Served-By``, and how long it took.

Run the bookstore on port 8000 and this gateway on another one (``--bind 127.0.0.1:8080``).
"""

from __future__ import annotations

import hmac
import os

from workflowhttp import App, HttpEvent, http_workflow
from workflowhttp.proxy import Proxy, ProxyEvent, proxy_workflow

__all__ = ["app", "create_app"]

READS = frozenset({"GET", "HEAD", "OPTIONS"})


def create_app(upstream: str | None = None, *, key: str | None = None) -> App:
    """Build the gateway for ``upstream`` (default ``$GATEWAY_UPSTREAM``)."""
    shop = Proxy(
        "/shop",
        upstream or os.environ.get("GATEWAY_UPSTREAM", "http://127.0.0.1:8000"),
        name="shop",
        timeout=10.0,
        connect_timeout=2.0,
    )
    secret = (key or os.environ.get("GATEWAY_KEY") or "let-me-in").encode()
    app = App(controllers=[shop])

    @app.listen(http_workflow.on_auth)
    def writes_need_a_key(event: HttpEvent) -> None:
        route = event.route
        if route is None or "proxy" not in route.groups or event.method in READS:
            return
        given = event.environ.get("HTTP_X_GATEWAY_KEY", "").encode()
        # SECURITY: a constant-time comparison does not leak how much of the key matched.
        if not hmac.compare_digest(given, secret):
            event.access_denied("Writes through the gateway need X-Gateway-Key.")

    @app.listen(proxy_workflow.on_filter_request)
    def answer_health(event: ProxyEvent) -> None:
        # SECURITY: the gateway's key is the gateway's business: never sent upstream.
        event.outgoing.headers.pop("X-Gateway-Key", None)
        if event.outgoing.path == "/health" and event.outgoing.method in ("GET", "HEAD"):
            event.send({"status": "ok", "gateway": True})

    @app.listen(proxy_workflow.on_filter_response)
    def served_by(event: ProxyEvent) -> None:
        headers = event.response.headers
        headers["X-Served-By"] = "gateway" if event.forged else "shop"
        headers["Server-Timing"] = f"gateway;dur={event.transaction.elapsed * 1000:.1f}"

    return app


app = create_app()
