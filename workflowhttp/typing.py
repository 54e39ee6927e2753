"""Public type aliases for annotating listeners and configuration."""

from __future__ import annotations

from .events import Listener

__all__ = ["Listener", "Priority", "StateName"]

StateName = str
"""A workflow state's name, e.g. ``"auth"``."""

Priority = int
"""A listener priority: lower runs first; users default to 0, the kernel sits at 100."""
