"""Hooks registered over HTTP at run time, after Gateleen's hook handler (DESIGN.md §8).

::

    from workflowhttp import App
    from workflowhttp.hooks import Hooks

    hooks = Hooks(storage="sqlite:///var/lib/shop/hooks.sqlite3",   # or "redis://127.0.0.1:6379/0"
                  allowed_destinations=["http://127.0.0.1:9001/"])
    app = App(controllers=[...], extensions=[hooks])

``PUT <resource>/_hooks/route`` registers a route hook. See ``docs/hooks.md``.
"""

from __future__ import annotations

from .extension import HOOK, Hooks, HooksChanged
from .forwarding import LoopDetected
from .registry import RouteHook
from .specs import HOOK_METHODS, HeaderRule, RouteSpec
from .storage import Record, SQLiteStorage, Storage, StorageUnavailable, open_storage

__all__ = [
    "HOOK",
    "HOOK_METHODS",
    "HeaderRule",
    "Hooks",
    "HooksChanged",
    "LoopDetected",
    "Record",
    "RouteHook",
    "RouteSpec",
    "SQLiteStorage",
    "Storage",
    "StorageUnavailable",
    "open_storage",
]
