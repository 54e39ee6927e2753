"""``workflowhttp dev``: werkzeug's development server and reloader, which a broken file
does not stop."""

from __future__ import annotations

import atexit
import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import Any

from ..app import App
from .loading import LoadError, WSGIApplication, load_app
from .logs import LogOptions, configure_logging, has_log_processor, warn

__all__ = ["dev", "error_app"]

logger = logging.getLogger(__name__)


def dev(
    target: str,
    host: str,
    port: int,
    *,
    debug: bool = False,
    log_options: LogOptions | None = None,
) -> None:
    """Serve with werkzeug's development server and reloader.

    The reloader runs the server in a child process, which imports the app. When that import
    fails (a file being edited has a syntax error), the child says why on stderr and serves a
    500 that says it too, while it watches the files (the broken one included) and restarts
    once one changes. Only the first load, before any child, ends the command.

    Raises:
        LoadError: the target gives no app at the first load.
    """
    from werkzeug.serving import WSGIRequestHandler, is_running_from_reloader, run_simple

    log_options = log_options or LogOptions()
    child = is_running_from_reloader()
    failure: LoadError | None = None
    try:
        app = load_app(target)
    except LoadError as ex:
        if not child:
            raise
        failure, app = ex, error_app(ex)
    source = configure_logging(app, log_options)
    if log_options.configure:  # werkzeug would set its logger to INFO
        logging.getLogger("werkzeug").setLevel(log_options.level.upper())
    if failure is not None:
        logger.error("%s; serving this error until a watched file changes", failure)
    if debug:
        if isinstance(app, App):
            app.debug = True
        elif not child:
            warn(f"--debug needs a workflowhttp App; {target} is served without it")
        if not child and not _is_loopback(host):
            # SECURITY: debug tracebacks show source and values to whoever reaches the port.
            warn(f"--debug shows tracebacks to every client that can reach {host}")
    if not child and log_options.access == "stream" and not has_log_processor(app):
        warn(f"{target} has no Stream with a LogProcessor: no access lines from it")

    if child and isinstance(app, App):
        app.start()  # the serving child; werkzeug gives no stop hook, the process just ends
        atexit.register(app.stop)

    class RequestHandler(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            if source == "server":
                super().log_request(code, size)

    run_simple(
        host,
        port,
        app,
        use_reloader=True,
        use_debugger=False,
        # The file with the syntax error was never imported: werkzeug would not watch it.
        extra_files=failure.files if failure is not None else None,
        request_handler=RequestHandler,
    )


def error_app(error: LoadError) -> WSGIApplication:
    """Return a WSGI app answering 500 with ``error`` and its traceback.

    Only a client on this machine (a loopback address) gets the details; others get a line
    that sends them to the console.
    """
    local = f"workflowhttp: {error}\n\n{error.details()}".encode()
    remote = b"The app failed to load; the dev server's console says why.\n"

    def failed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # SECURITY: the error shows file names and source lines: only a client on this
        # machine sees it; text/plain with nosniff, so a browser never renders it as HTML.
        body = local if _is_loopback(environ.get("REMOTE_ADDR", "")) else remote
        start_response(
            "500 Internal Server Error",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("X-Content-Type-Options", "nosniff"),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]

    return failed


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
