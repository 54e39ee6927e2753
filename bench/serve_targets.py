"""WSGI entry points for a real server: ``bench.serve_targets:<framework>``.

``python -m gunicorn bench.serve_targets:workflowhttp`` serves the ``main`` app of
``bench/apps/workflowhttp_app.py`` (``/hello``, ``/users/{id}``, ``/search``, ``/items``); the
other names are ``raw``, ``flask`` and ``falcon``. The attribute is resolved lazily (PEP 562
module ``__getattr__``), so a worker imports and builds only the framework it serves, after the
fork (the bench does not preload). Run from the repository root, or with it on ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib
from wsgiref.types import WSGIApplication

#: The attribute names, one per framework module in ``bench/apps/``.
TARGETS = ("raw", "flask", "falcon", "workflowhttp", "workflowhttp_stream")

_built: dict[str, WSGIApplication] = {}


def target(framework: str) -> str:
    """Return the gunicorn ``module:attribute`` target serving ``framework``'s main app."""
    if framework not in TARGETS:
        raise ValueError(f"unknown framework {framework!r}; choose from {', '.join(TARGETS)}")
    return f"bench.serve_targets:{framework}"


def __getattr__(name: str) -> WSGIApplication:
    if name not in TARGETS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = _built.get(name)
    if app is None:
        if name == "workflowhttp_stream":  # the main app plus a stream (no-op, every event)
            module = importlib.import_module("bench.apps.workflowhttp_app")
            app = _built[name] = module.make_stream_app(every_event=True)
        else:
            module = importlib.import_module(f"bench.apps.{name}_app")
            app = _built[name] = module.make_app("main")
    return app
