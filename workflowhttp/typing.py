"""Public type aliases for annotating listeners and configuration."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .events import HttpEvent

__all__ = ["Listener", "Priority", "StateName"]

StateName = str
"""A workflow state's name, e.g. ``"auth"``."""

Priority = int
"""A listener priority: lower runs first; users default to 0, the kernel sits at 100."""

Listener = Callable[[HttpEvent], Any]
"""A listener: called with the event; its return value is ignored."""
