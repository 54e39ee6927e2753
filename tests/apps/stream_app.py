"""The app ``tests/test_gunicorn_stream.py`` serves under gunicorn: an event stream whose
processors are ``MetricsProcessor`` (prometheus_client's multiprocess mode when
``PROMETHEUS_MULTIPROC_DIR`` is set), the metrics endpoint, and a route saying which process
answered and which stream threads it runs.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

from workflowhttp import App, http
from workflowhttp.stream import Stream
from workflowhttp.stream.processors import MetricsProcessor, metrics_endpoint

_PR_SET_NAME = 15


def _name_the_native_thread() -> None:
    """Give the OS thread its Python name (cut to 15 bytes), so ``/proc/<pid>/task/*/comm``
    shows it: Python 3.11 names threads for Python only."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, threading.current_thread().name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: /proc is not read there either
        pass


def metrics_processor() -> MetricsProcessor:
    """The stream's factory, called in each shard's thread."""
    _name_the_native_thread()
    return MetricsProcessor()


def stream_threads() -> list[str]:
    return sorted(
        thread.name
        for thread in threading.enumerate()
        if thread.name.startswith("workflowhttp-stream")
    )


@http.GET("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@http.GET("/whoami")
def whoami() -> dict[str, Any]:
    return {"pid": os.getpid(), "stream_threads": stream_threads()}


app = App(
    controllers=[health, whoami, metrics_endpoint()],
    stream=Stream(metrics_processor),
)
