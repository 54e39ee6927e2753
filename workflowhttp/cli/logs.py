"""How ``serve`` and ``dev`` configure logging: the command line does, never the library.

The root logger gets one handler on stderr, in text or JSON, unless the app configured logging
itself (while it was imported or built) or ``--no-log-config`` is given. Exactly one of the
server (gunicorn or werkzeug) and the app's stream
(:class:`~workflowhttp.stream.processors.LogProcessor`) writes the access lines, never both.
"""

from __future__ import annotations

import functools
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from ..app import App
from ..stream.processors import LogProcessor

__all__ = [
    "ACCESS_LOGGER",
    "JsonFormatter",
    "LogOptions",
    "configure_logging",
    "has_log_processor",
    "warn",
]

ACCESS_LOGGER = "workflowhttp.access"  # where LogProcessor writes its lines


@dataclass(frozen=True, slots=True)
class LogOptions:
    """What ``serve`` and ``dev`` were told about logging.

    ``access`` is ``auto`` (the stream when the app has a LogProcessor, else the server),
    ``server`` (gunicorn's or werkzeug's), ``stream`` or ``off``.
    """

    configure: bool = True
    level: str = "info"
    format: str = "text"
    access: str = "auto"


_TEXT_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"
_DATE_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"  # gunicorn's
_encode_json = msgspec.json.Encoder(enc_hook=str).encode


class JsonFormatter(logging.Formatter):
    """Format each record as one JSON object: time, level, logger, process and message.

    An access line's fields (gunicorn's, or the JSON of a
    :class:`~workflowhttp.stream.processors.LogProcessor` line) replace the message, so every
    access line is one flat object whichever side wrote it.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
        }
        fields = _access_fields(record)
        if fields is None:
            line["message"] = record.getMessage()
        else:
            for key, value in fields.items():  # time, level, logger stay the record's
                line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # SECURITY: every value is JSON-encoded, so a client's path, header or query cannot end
        # the line and forge another record.
        return _encode_json(line).decode()


def _access_fields(record: logging.LogRecord) -> dict[str, Any] | None:
    fields = getattr(record, "access", None)  # gunicorn's, from _gunicorn_logger
    if isinstance(fields, dict):
        return fields
    if record.name == ACCESS_LOGGER and isinstance(record.msg, str) and record.msg[:1] == "{":
        # PERF: LogProcessor's line is JSON already; decoding it again costs a few µs, in the
        # stream's thread, and only with --log-format json.
        try:
            decoded = msgspec.json.decode(record.getMessage())
        except msgspec.DecodeError:
            return None
        return decoded if isinstance(decoded, dict) else None
    return None


def _formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(_TEXT_FORMAT, _DATE_FORMAT)


def has_log_processor(app: Any) -> bool:
    """Whether ``app`` is an App whose stream's processors are LogProcessors."""
    stream = app.stream if isinstance(app, App) else None
    if stream is None:
        return False
    factory = stream.factory
    while isinstance(factory, functools.partial):
        factory = factory.func
    return isinstance(factory, type) and issubclass(factory, LogProcessor)


def _logging_configured() -> bool:
    """Whether the root logger or one of workflowhttp's has a handler (the app's doing)."""
    if logging.getLogger().handlers:
        return True
    return any(
        isinstance(item, logging.Logger) and item.handlers
        for name, item in logging.Logger.manager.loggerDict.items()
        if name == "workflowhttp" or name.startswith("workflowhttp.")
    )


def configure_logging(app: Any, options: LogOptions) -> str:
    """Configure this process's logging for ``app``; return who writes the access lines.

    The root logger gets a handler on stderr at ``options.level`` unless ``options.configure``
    is false or the app (while it was imported or built) configured logging. The stream's
    access logger is switched off unless it is the one chosen: never two lines per request.

    Returns:
        ``"server"``, ``"stream"`` or ``"off"``.
    """
    source = options.access
    if source == "auto":
        source = "stream" if has_log_processor(app) else "server"
    if options.configure and not _logging_configured():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_formatter(options.format))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(options.level.upper())
    # PERF: a disabled logger makes LogProcessor skip even encoding its line.
    logging.getLogger(ACCESS_LOGGER).disabled = source != "stream"
    return source


def warn(message: str) -> None:
    """Print a warning of the command on stderr."""
    print(f"workflowhttp: warning: {message}", file=sys.stderr, flush=True)
