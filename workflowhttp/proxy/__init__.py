"""The reverse proxy (DESIGN.md §7): a controller whose transactions walk a second workflow.

::

    from workflowhttp import App, Response
    from workflowhttp.proxy import Proxy, ProxyEvent, proxy_workflow

    api = Proxy("/api", ["http://127.0.0.1:9001", "http://127.0.0.1:9002"], name="api")
    app = App(controllers=[api])

    @app.listen(proxy_workflow.on_filter_request)
    def teapot(event: ProxyEvent) -> None:
        if event.outgoing.path.endswith("/coffee"):
            event.send(Response("I'm a teapot", status=418))   # the upstream is never called

See ``docs/proxy.md``.
"""

from __future__ import annotations

from ..workflow import PROXY_WORKFLOW, proxy_workflow
from . import events
from .controller import Proxy
from .events import *  # noqa: F403 (the proxy's event types, as events.__all__ lists them)

__all__ = ["PROXY_WORKFLOW", "Proxy", "proxy_workflow", *events.__all__]
