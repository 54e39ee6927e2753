"""The ``workflowhttp`` command: serve (gunicorn), dev (werkzeug reloader), routes, graph, hooks,
openapi, trace.

Every command that needs the app gets it from :func:`load_app`
(:mod:`workflowhttp.cli.loading`): what is wrong with a target (no such module, a syntax
error, no such attribute, a factory that raises) is one line on stderr and exit status 2,
never a traceback. ``serve`` (:mod:`~workflowhttp.cli.serving`) and ``dev``
(:mod:`~workflowhttp.cli.development`) configure logging as :mod:`~workflowhttp.cli.logs` says.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence

from ..app import App
from .development import dev
from .loading import LoadError, load_app
from .logs import LogOptions
from .serving import serve

__all__ = [
    "LoadError",
    "dev",
    "graph",
    "hooks",
    "load_app",
    "main",
    "openapi",
    "routes",
    "serve",
    "trace",
]


def _default_workers() -> int:
    return min(2 * (os.cpu_count() or 1) + 1, 8)


def routes(target: str) -> str:
    """Return the route table of the app at ``target``.

    Raises:
        LoadError: the target gives no app, or a WSGI callable that is not an App.
    """
    app = load_app(target)
    if not isinstance(app, App):
        raise LoadError(f"{target} is a WSGI callable, not a workflowhttp App: it has no routes")
    rows = [("METHODS", "PATH", "NAME", "GROUPS", "DESCRIPTION")]
    for route in app.routes:
        methods = "ANY" if "*" in route.methods else ",".join(route.methods)
        rows.append((methods, route.path, route.name, ",".join(route.groups), route.description))
    return _table(rows)


def hooks(target: str) -> str:
    """Return the table of the hooks registered in the storage of the app at ``target``.

    Raises:
        LoadError: the target gives no app, the app has no ``Hooks``, or its storage cannot
            be read.
    """
    from ..hooks import Hooks, StorageUnavailable
    from ..hooks.extension import add_queues, describe

    app = load_app(target)
    found = [ext for ext in getattr(app, "extensions", ()) if isinstance(ext, Hooks)]
    if not found:
        raise LoadError(f"{target} has no Hooks extension")
    rows = [("KIND", "RESOURCE", "ID", "DESTINATION", "METHODS", "EXPIRES", "QUEUED", "OLDEST")]
    for extension in found:
        try:
            extension.storage.open()
            listed = describe(extension.storage.records(), extension.allowed)
            add_queues(listed, extension.storage.queue_stats())
        except StorageUnavailable as ex:
            raise LoadError(f"hooks storage unavailable: {ex}") from None
        finally:
            extension.storage.close()
        for kind, entry in listed:
            rows.append(
                (
                    kind,
                    entry["resource"],
                    entry.get("id", ""),
                    entry["destination"],
                    ",".join(entry.get("methods", ())) or "ANY",
                    entry["expires"] or "never",
                    str(entry["queueLength"]) if kind == "listener" else "",
                    _age(entry["oldestQueuedSeconds"]) if kind == "listener" else "",
                )
            )
    return _table(rows)


def _age(seconds: float | None) -> str:
    """Return how old a listener's oldest queued copy is (``-`` for an empty queue)."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.0f}h"


def openapi(target: str, *, as_yaml: bool = False) -> str:
    """Return the OpenAPI document of the app at ``target``, as JSON (or YAML).

    Raises:
        LoadError: the target gives no App.
        SystemExit: ``as_yaml`` without PyYAML (a one-line message).
    """
    app = load_app(target)
    if not isinstance(app, App):
        raise LoadError(f"{target} is a WSGI callable, not a workflowhttp App: it has no routes")
    document = app.openapi()
    if not as_yaml:
        return json.dumps(document, indent=2, ensure_ascii=False)
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        raise SystemExit("workflowhttp: error: --yaml needs PyYAML (pip install pyyaml)") from None
    text: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return text.rstrip("\n")


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def trace(target: str, method: str, path: str, headers: Sequence[str] = (), data: str = "") -> str:
    """Run one request in process on the app at ``target``; return its trace as a table.

    ``headers`` are ``"Name: value"`` strings.

    Raises:
        LoadError: the target gives no App.
        SystemExit: a header without a colon (a one-line message).
    """
    from ..testing import TestClient
    from ..trace import format_trace

    app = _the_app(target)
    given = []
    for header in headers:
        name, colon, value = header.partition(":")
        if not colon or not name.strip():
            raise SystemExit(f"workflowhttp: error: a header is 'Name: value', not {header!r}")
        given.append((name.strip(), value.strip()))
    body = data.encode("utf-8")
    with TestClient(app) as client:
        traced = client.trace(method, path, headers=given, data=body)
    return format_trace(traced)


def _the_app(target: str) -> App:
    app = load_app(target)
    if not isinstance(app, App):
        raise LoadError(f"{target} is a WSGI callable, not a workflowhttp App: it has no listeners")
    return app


def graph(
    fmt: str,
    output: str | None,
    workflow: str = "http",
    *,
    target: str | None = None,
    listeners: bool = False,
) -> str | None:
    """Return a workflow's diagram as Mermaid text, or write an image with graphviz.

    With ``listeners`` (Mermaid only) each state carries a note listing the own listeners of
    the app at ``target``, in the order they run.
    """
    from ..workflow import draw

    if listeners and target is None:
        raise SystemExit("workflowhttp: error: graph --listeners needs the app (module:app)")
    if fmt == "mermaid":
        if listeners and target is not None:
            from ..trace import draw_listeners

            text = draw_listeners(_the_app(target), workflow)
        else:
            text = str(draw("mermaid", workflow=workflow))
        if output:
            with open(output, "w", encoding="utf-8") as handle:
                handle.write(text)
            return None
        return text
    try:
        diagram = draw("graphviz", workflow=workflow)
    except (ImportError, ModuleNotFoundError) as ex:
        raise SystemExit(f"an image needs graphviz (pip install graphviz): {ex}") from None
    diagram.draw(output or f"workflow.{fmt}", format=fmt, prog="dot")
    return None


# -- the command line --------------------------------------------------------------------------

_TARGET_HELP = (
    "module:app (an App or a WSGI callable), module:factory or module:factory() "
    "(a function without arguments that builds the app)"
)


def _logging_options(server: str) -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("logging")
    group.add_argument(
        "--access-log",
        choices=("auto", server, "stream", "off"),
        default="auto",
        help=f"who writes the one access line per request: {server}, the app's stream "
        f"(its LogProcessor) or nobody; auto (default): the stream when the app has a "
        f"LogProcessor, else {server}",
    )
    group.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error", "critical"),
        default="info",
        help="the level of the root logger and the server's (default: info)",
    )
    group.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text lines (default) or one JSON object per line",
    )
    group.add_argument(
        "--no-log-config",
        action="store_true",
        help="leave logging alone (configure it yourself); without it, the root logger gets "
        "a handler on stderr unless the app configured logging already",
    )
    return options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workflowhttp", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser(
        "serve", help="serve an app under gunicorn", parents=[_logging_options("gunicorn")]
    )
    serve_parser.add_argument("app", help=_TARGET_HELP)
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
    serve_parser.add_argument("--pid", default=None, help="write the master's PID here")
    serve_parser.add_argument(
        "--control-socket",
        default=None,
        help="enable gunicorn's control socket (gunicornc) at this path; off by default, "
        "as its default path is shared by every server of the user",
    )

    dev_parser = commands.add_parser(
        "dev",
        help="serve with werkzeug's reloader, for your machine",
        parents=[_logging_options("werkzeug")],
    )
    dev_parser.add_argument("app", help=_TARGET_HELP)
    dev_parser.add_argument("--host", default="127.0.0.1")
    dev_parser.add_argument("--port", type=int, default=8000)
    dev_parser.add_argument(
        "--debug",
        action="store_true",
        help="answer 500s with the error and its traceback (sets the App's debug "
        "attribute, as App(debug=True) does); never where others can connect",
    )

    routes_parser = commands.add_parser("routes", help="print the route table")
    routes_parser.add_argument("app", help=_TARGET_HELP)

    hooks_parser = commands.add_parser(
        "hooks", help="list the hooks registered in the app's hooks storage"
    )
    hooks_parser.add_argument("app", help=_TARGET_HELP)

    openapi_parser = commands.add_parser("openapi", help="print the app's OpenAPI document")
    openapi_parser.add_argument("app", help=_TARGET_HELP)
    openapi_parser.add_argument(
        "--yaml", action="store_true", help="YAML instead of JSON (needs PyYAML)"
    )

    trace_parser = commands.add_parser(
        "trace", help="run one request in process; print each state and listener it passed"
    )
    trace_parser.add_argument("app", help=_TARGET_HELP)
    trace_parser.add_argument("method", help="GET, POST, ...")
    trace_parser.add_argument("path", help="the path, with its query (/items/1?x=2)")
    trace_parser.add_argument(
        "-H", "--header", action="append", default=[], help="a header, 'Name: value'"
    )
    trace_parser.add_argument("-d", "--data", default="", help="the request body")

    graph_parser = commands.add_parser("graph", help="print the workflow's state diagram")
    graph_parser.add_argument(
        "app", nargs="?", default=None, help="module:app, for --listeners: " + _TARGET_HELP
    )
    graph_parser.add_argument(
        "--listeners",
        action="store_true",
        help="note each state's own listeners of the app, in the order they run (mermaid)",
    )
    graph_parser.add_argument(
        "--format",
        default="mermaid",
        help="mermaid (text, default) or an image format such as png/svg",
    )
    graph_parser.add_argument("--output", "-o", default=None)
    graph_parser.add_argument(
        "--workflow",
        choices=("http", "proxy"),
        default="http",
        help="the request's workflow (default) or the proxy's transaction",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2 when the target gives no app)."""
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except LoadError as ex:
        print(f"workflowhttp: error: {ex}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while the app loads, before a server handles it
        return 130
    return 0


def _run(args: argparse.Namespace) -> None:
    if args.command in ("serve", "dev"):
        log_options = LogOptions(
            configure=not args.no_log_config,
            level=args.log_level,
            format=args.log_format,
            access="server" if args.access_log in ("gunicorn", "werkzeug") else args.access_log,
        )
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
                "pidfile": args.pid,
                "preload_app": False,
                "control_socket": args.control_socket,
                "control_socket_disable": args.control_socket is None,
            },
            log_options,
        )
    elif args.command == "dev":
        dev(args.app, args.host, args.port, debug=args.debug, log_options=log_options)
    elif args.command == "routes":
        print(routes(args.app))
    elif args.command == "hooks":
        print(hooks(args.app))
    elif args.command == "openapi":
        print(openapi(args.app, as_yaml=args.yaml))
    elif args.command == "trace":
        print(trace(args.app, args.method, args.path, args.header, args.data))
    elif args.command == "graph":
        text = graph(
            args.format, args.output, args.workflow, target=args.app, listeners=args.listeners
        )
        if text is not None:
            print(text)
