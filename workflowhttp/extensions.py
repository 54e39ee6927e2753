"""Extensions: objects that bring controllers, listeners, providers and middlewares to an app.

``App(extensions=[...])`` takes any object with some of these attributes (subclassing
:class:`Extension` is the easy way; every attribute is optional):

* ``controllers``, ``listeners``, ``providers``, ``middlewares``: added as if given to
  ``App(...)`` directly, before the app's own;
* ``kernel``: ``(state, priority, listener)`` triples that are part of the framework's own
  behaviour for a workflow (the proxy's ``forward``, say). They are placed among the kernel's
  listeners (first among equal priorities, like the HTTP kernel's), once per app however many
  extensions bring the same function. It is read when the app is built and again at each
  ``app.recompile()``: an extension whose kernel changes while the app serves calls it (the
  hooks subscribe their copying listener only while a listener hook is registered);
* ``start(app)``: run once per worker before its first request: after gunicorn's fork (its
  ``post_worker_init`` hook under ``workflowhttp serve``), when the dev server's child starts,
  when ``with TestClient(app):`` is entered, or else lazily on the first request. Open pools,
  sockets and threads here, never at import;
* ``stop(app)``: run once at shutdown (gunicorn's ``worker_exit``, the end of the ``with``
  block, ``app.stop()``), in the reverse order of ``start``.

An exception in ``start`` fails the start (the worker does not serve); one in ``stop`` is
logged and the other extensions still stop.

A :class:`~workflowhttp.proxy.Proxy` is an extension; it may also be given in
``App(controllers=[...])``, where an extension is recognised and added as one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import App

__all__ = ["Extension", "Lifecycle", "is_extension"]

logger = logging.getLogger("workflowhttp")


class Extension:
    """Base class of extensions; override what you bring (see the module docstring)."""

    controllers: Sequence[Any] = ()
    listeners: Sequence[Any] = ()
    providers: Sequence[Any] = ()
    middlewares: Sequence[Any] = ()
    kernel: Sequence[tuple[str, int, Any]] = ()

    def start(self, app: App) -> None:
        """Open what the extension needs in this worker (pools, threads, connections)."""

    def stop(self, app: App) -> None:
        """Close what :meth:`start` opened."""


def is_extension(item: Any) -> bool:
    """Return whether ``item`` is an extension instance (rather than a controller)."""
    return isinstance(item, Extension)


class Lifecycle:
    """Runs the extensions' ``start``/``stop`` once each, thread-safely."""

    __slots__ = ("app", "started", "_stopped", "_lock", "_running")

    def __init__(self, app: App) -> None:
        self.app = app
        self.started = not any(hasattr(ext, "start") for ext in app.extensions)
        self._stopped = False
        self._lock = threading.Lock()
        self._running: list[Any] = []

    def start(self) -> None:
        with self._lock:
            if self._running or (self.started and not self.app.extensions):
                self.started = True
                return
            for extension in self.app.extensions:
                start = getattr(extension, "start", None)
                if start is not None:
                    start(self.app)  # a failure fails the start: the worker must not serve
                self._running.append(extension)
            self.started = True
            self._stopped = False

    def stop(self) -> None:
        with self._lock:
            running, self._running = self._running, []
            for extension in reversed(running):
                stop = getattr(extension, "stop", None)
                if stop is None:
                    continue
                try:
                    stop(self.app)
                except Exception:
                    logger.exception("extension %r failed to stop", extension)
            self._stopped = True
            self.started = not self.app.extensions
