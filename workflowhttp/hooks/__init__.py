"""Hooks registered over HTTP at run time, after Gateleen's hook handler (DESIGN.md §8).

::

    from workflowhttp import App
    from workflowhttp.hooks import Hooks

    hooks = Hooks(storage="sqlite:///var/lib/shop/hooks.sqlite3",   # or "redis://127.0.0.1:6379/0"
                  allowed_destinations=["http://127.0.0.1:9001/"])
    app = App(controllers=[...], extensions=[hooks])

``PUT <resource>/_hooks/route`` registers a route hook, ``PUT
<resource>/_hooks/listeners/http/<id>`` a listener hook whose copies are queued durably and
delivered at least once. See ``docs/hooks.md``.
"""

from __future__ import annotations

from ..stream.events import HookDelivered, HookQueues
from .delivery import DELIVERY, Copy, Deliverer
from .extension import HOOK, Hooks, HooksChanged
from .forwarding import LoopDetected
from .registry import ListenerHook, RouteHook
from .specs import HOOK_METHODS, HeaderRule, ListenerSpec, QueueingStrategy, RouteSpec
from .storage import (
    Entry,
    QueueItem,
    Record,
    SQLiteStorage,
    Storage,
    StorageUnavailable,
    open_storage,
)

__all__ = [
    "DELIVERY",
    "HOOK",
    "HOOK_METHODS",
    "Copy",
    "Deliverer",
    "Entry",
    "HeaderRule",
    "HookDelivered",
    "HookQueues",
    "Hooks",
    "HooksChanged",
    "ListenerHook",
    "ListenerSpec",
    "LoopDetected",
    "QueueItem",
    "QueueingStrategy",
    "Record",
    "RouteHook",
    "RouteSpec",
    "SQLiteStorage",
    "Storage",
    "StorageUnavailable",
    "open_storage",
]
