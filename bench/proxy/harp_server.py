"""Run HARP's proxy in front of one upstream, bound to 127.0.0.1 only (run by HARP's venv).

Usage: ``bench/.venv-harp/bin/python bench/proxy/harp_server.py PORT UPSTREAM_URL``

It does what ``harp server`` does (the same configuration builder, the same hypercorn server,
the same loggers) with the least of HARP that still proxies::

    harp server --applications http_client,proxy --set http_client.cache.enabled false \\
        --endpoint bench=PORT:UPSTREAM_URL

that is: no dashboard, no storage, no rules, no telemetry or janitor, and no HTTP cache (a
cached answer would not be a proxied one). The one difference: ``harp server`` listens on
``[::]`` (every interface, no option changes it), this listens on ``127.0.0.1``. HARP serves
from one process (one asyncio loop; its HTTP client is an ``httpx.AsyncClient``). The bench sets
``LOGGING_*=warning``, so hypercorn's per-request access log is filtered out as with gunicorn.
This file runs under HARP's Python (3.12) and imports nothing from the bench.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any


async def _serve(builder: Any, port: int) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    system = await builder.abuild_system()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = logging.getLogger("hypercorn.access")
    config.errorlog = logging.getLogger("hypercorn.error")
    try:
        await serve(system.asgi_app, config, mode="asgi")
    finally:
        await system.dispose()


def main(argv: list[str]) -> None:
    if len(argv) != 2 or not argv[0].isdigit():
        raise SystemExit("usage: harp_server.py PORT UPSTREAM_URL")
    port, upstream = int(argv[0]), argv[1]
    from harp.commandline.options.server import CommonServerOptions
    from harp.config.utils import get_configuration_builder_type

    options = CommonServerOptions(
        applications=("http_client", "proxy"),
        options=[("http_client.cache.enabled", "false")],
        endpoints=[f"bench={port}:{upstream}"],
    )
    builder = get_configuration_builder_type().from_commandline_options(options)
    asyncio.run(_serve(builder, port))


if __name__ == "__main__":
    main(sys.argv[1:])
