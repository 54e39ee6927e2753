"""``workflowhttp serve``: the app under gunicorn, through its application API."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any

import msgspec

from .loading import LoadError, load_app
from .logs import JsonFormatter, LogOptions, configure_logging, has_log_processor, warn

__all__ = ["serve"]


def serve(target: str, options: dict[str, Any], log_options: LogOptions) -> None:
    """Run ``target`` under gunicorn, through its application API.

    The target is first loaded once in a forked child, so that a bad one is one line and
    status 2 here, not a traceback in every worker; the master itself never imports it.

    Raises:
        LoadError: the target gives no app.
    """
    from gunicorn.app.base import BaseApplication
    from gunicorn.errors import AppImportError

    logs_itself = _check_in_child(target)
    if log_options.access == "stream" and not logs_itself:
        warn(f"{target} has no Stream with a LogProcessor: no access lines from it")
    logger_class = _gunicorn_logger(log_options)
    options = {
        **options,
        "loglevel": log_options.level,
        "logger_class": logger_class,
        # gunicorn's handler exists unless it is never wanted; each worker says if it is used.
        "accesslog": "-" if log_options.access in ("auto", "server") else None,
    }

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                # The control-socket settings exist from gunicorn 25.1 on only.
                if key in self.cfg.settings and (value is not None or key == "accesslog"):
                    self.cfg.set(key, value)

        def load(self) -> Any:
            # Imported in each worker after the fork (no preload), so every worker opens its
            # own connections and builds its own singletons.
            try:
                app = load_app(target)
            except LoadError as ex:  # gunicorn prints the message alone, and stops
                raise AppImportError(str(ex)) from ex
            logger_class.server_access = configure_logging(app, log_options) == "server"
            return app

    def start_app(worker: Any) -> None:
        # After the fork, before the first request: extensions open pools and threads here.
        start = getattr(worker.wsgi, "start", None)
        if start is not None:
            start()

    def stop_app(server: Any, worker: Any) -> None:
        stop = getattr(getattr(worker, "wsgi", None), "stop", None)
        if stop is not None:
            stop()

    options.setdefault("post_worker_init", start_app)
    options.setdefault("worker_exit", stop_app)
    Server().run()


def _check_in_child(target: str) -> bool:
    """Load ``target`` in a forked child; return whether its app has a LogProcessor.

    Raises:
        LoadError: what :func:`load_app` said in the child.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child ends with os._exit, unseen by coverage
        os.close(read)
        try:
            report: dict[str, Any] = {"logs_itself": has_log_processor(load_app(target))}
        except LoadError as ex:
            report = {"error": str(ex)}
        except BaseException as ex:  # SystemExit or KeyboardInterrupt while importing
            report = {"error": f"loading {target} raised {type(ex).__name__}: {ex}"}
        with os.fdopen(write, "wb") as pipe:
            pipe.write(msgspec.json.encode(report))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise LoadError(f"loading {target} ended its process (wait status {status})")
    report = msgspec.json.decode(data)
    if "error" in report:
        raise LoadError(report["error"])
    return bool(report["logs_itself"])


def _gunicorn_logger(options: LogOptions) -> Any:
    """Return gunicorn's logger class, writing where and how ``options`` say."""
    from gunicorn.glogging import Logger

    class GunicornLogger(Logger):  # type: ignore[misc]
        """gunicorn's logger: on stderr in the chosen format; access lines when chosen."""

        server_access = True  # per process: a worker whose app logs them turns it off

        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            if not options.configure:
                return
            for handler in (*self.error_log.handlers, *self.access_log.handlers):
                if type(handler) is logging.StreamHandler:  # "-": not a file, not syslog
                    handler.setStream(sys.stderr)
                    if options.format == "json":
                        handler.setFormatter(JsonFormatter())

        @property
        def access_log_enabled(self) -> bool:
            # Recent gunicorns read it before they gather a request's access line.
            return type(self).server_access and bool(self.cfg.accesslog)

        def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
            if not self.access_log_enabled:
                return
            if not (options.configure and options.format == "json"):
                super().access(resp, req, environ, request_time)
                return
            try:
                atoms = self.atoms(resp, req, environ, request_time)
                fields = {
                    "remote": atoms["h"],
                    "method": atoms["m"],
                    "path": atoms["U"],
                    "query": atoms["q"],
                    "protocol": atoms["H"],
                    "status": getattr(resp, "status_code", atoms["s"]),
                    "bytes": atoms["B"],
                    "duration_ms": round(request_time.total_seconds() * 1000, 3),
                    "referer": atoms["f"],
                    "user_agent": atoms["a"],
                }
                self.access_log.info("%s %s", atoms["m"], atoms["U"], extra={"access": fields})
            except Exception:
                self.error(traceback.format_exc())

    return GunicornLogger
