"""Path templates: parsing, normalizing and joining them (the trailing-slash policy)."""

from __future__ import annotations

import re

__all__ = [
    "ANY",
    "BAD_PERCENT",
    "METHODS",
    "PARAM",
    "join_paths",
    "normalize_path",
    "parse_template",
]

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ANY = "*"
_SPECS = "__workflowhttp_routes__"
_CONTROLLER = "__workflowhttp_controller__"
PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}")
# SECURITY: a '%' not followed by two hex digits is malformed percent-encoding.
BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def normalize_path(path: str) -> str:
    """Return ``path`` with one leading slash and no trailing slash (except the root)."""
    if not path.startswith("/"):
        path = "/" + path
    if len(path) > 1:
        path = path.rstrip("/") or "/"
    return path


def join_paths(base: str, path: str) -> str:
    """Join a controller's base path and a route's path."""
    if not base or base == "/":
        return normalize_path(path)
    return normalize_path(normalize_path(base) + "/" + path.lstrip("/"))


def parse_template(path: str) -> list[tuple[str, str | None]]:
    """Return ``(name, converter)`` for each parameter of a path template."""
    return [(m.group(1), m.group(2)) for m in PARAM.finditer(path)]
