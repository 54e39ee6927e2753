"""The ``workflowhttp`` command: serve (gunicorn), dev (werkzeug reloader), routes, graph."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["load_app", "main"]


def load_app(target: str) -> Any:
    """Import ``module:attribute`` (or ``module:factory()``) and return the WSGI app."""
    module_name, _, attribute = target.partition(":")
    if not module_name:
        raise SystemExit(f"expected module:app, got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    attribute = attribute or "app"
    call = attribute.endswith("()")
    try:
        app = getattr(module, attribute.removesuffix("()"))
    except AttributeError:
        raise SystemExit(f"{module_name} has no attribute {attribute!r}") from None
    return app() if call else app


def _default_workers() -> int:
    return min(2 * (os.cpu_count() or 1) + 1, 8)


def serve(target: str, options: dict[str, Any]) -> None:
    """Run ``target`` under gunicorn, through its application API."""
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                # The control-socket settings exist from gunicorn 25.1 on only.
                if value is not None and key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            # Imported in each worker after the fork (no preload), so every worker opens its
            # own connections and builds its own singletons.
            return load_app(target)

    Server().run()


def dev(target: str, host: str, port: int) -> None:
    """Serve with werkzeug's development server and reloader."""
    from werkzeug.serving import run_simple

    run_simple(host, port, load_app(target), use_reloader=True, use_debugger=False)


def routes(target: str) -> str:
    """Return the route table of the app at ``target``."""
    app = load_app(target)
    rows = [("METHODS", "PATH", "NAME", "GROUPS", "DESCRIPTION")]
    for route in app.routes:
        methods = "ANY" if "*" in route.methods else ",".join(route.methods)
        rows.append((methods, route.path, route.name, ",".join(route.groups), route.description))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def graph(fmt: str, output: str | None) -> str | None:
    """Return the workflow diagram as Mermaid text, or write an image with graphviz."""
    from .workflow import draw

    if fmt == "mermaid":
        text = str(draw("mermaid"))
        if output:
            with open(output, "w", encoding="utf-8") as handle:
                handle.write(text)
            return None
        return text
    try:
        diagram = draw("graphviz")
    except (ImportError, ModuleNotFoundError) as ex:
        raise SystemExit(f"an image needs graphviz (pip install graphviz): {ex}") from None
    diagram.draw(output or f"workflow.{fmt}", format=fmt, prog="dot")
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workflowhttp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="serve an app under gunicorn")
    serve_parser.add_argument("app", help="module:app or module:factory()")
    serve_parser.add_argument("--bind", "-b", default="127.0.0.1:8000")
    serve_parser.add_argument(
        "--workers",
        "-w",
        type=int,
        default=None,
        help="worker processes (default: 2 x cores + 1, at most 8)",
    )
    serve_parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads per worker (more than 1 uses gthread workers)",
    )
    serve_parser.add_argument(
        "--timeout",
        type=int,
        default=30,
        help="seconds before a silent worker is killed and restarted",
    )
    serve_parser.add_argument(
        "--graceful-timeout",
        type=int,
        default=30,
        help="seconds workers get to finish requests after SIGTERM",
    )
    serve_parser.add_argument("--keepalive", type=int, default=5)
    serve_parser.add_argument("--limit-request-line", type=int, default=8190)
    serve_parser.add_argument("--limit-request-fields", type=int, default=100)
    serve_parser.add_argument("--limit-request-field-size", type=int, default=8190)
    serve_parser.add_argument(
        "--max-requests",
        type=int,
        default=0,
        help="restart a worker after this many requests (0: never)",
    )
    serve_parser.add_argument("--access-log", default="-", help="file, or - for stdout")
    serve_parser.add_argument("--log-level", default="info")
    serve_parser.add_argument("--pid", default=None, help="write the master's PID here")
    serve_parser.add_argument(
        "--control-socket",
        default=None,
        help="enable gunicorn's control socket (gunicornc) at this path; off by default, "
        "as its default path is shared by every server of the user",
    )

    dev_parser = commands.add_parser("dev", help="serve with werkzeug's reloader")
    dev_parser.add_argument("app")
    dev_parser.add_argument("--host", default="127.0.0.1")
    dev_parser.add_argument("--port", type=int, default=8000)

    routes_parser = commands.add_parser("routes", help="print the route table")
    routes_parser.add_argument("app")

    graph_parser = commands.add_parser("graph", help="print the workflow's state diagram")
    graph_parser.add_argument(
        "--format",
        default="mermaid",
        help="mermaid (text, default) or an image format such as png/svg",
    )
    graph_parser.add_argument("--output", "-o", default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        serve(
            args.app,
            {
                "bind": [args.bind],
                "workers": args.workers or _default_workers(),
                "threads": args.threads,
                "worker_class": "gthread" if args.threads > 1 else "sync",
                "timeout": args.timeout,
                "graceful_timeout": args.graceful_timeout,
                "keepalive": args.keepalive,
                "limit_request_line": args.limit_request_line,
                "limit_request_fields": args.limit_request_fields,
                "limit_request_field_size": args.limit_request_field_size,
                "max_requests": args.max_requests,
                "accesslog": args.access_log,
                "loglevel": args.log_level,
                "pidfile": args.pid,
                "preload_app": False,
                "control_socket": args.control_socket,
                "control_socket_disable": args.control_socket is None,
            },
        )
    elif args.command == "dev":
        dev(args.app, args.host, args.port)
    elif args.command == "routes":
        print(routes(args.app))
    elif args.command == "graph":
        text = graph(args.format, args.output)
        if text is not None:
            print(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
