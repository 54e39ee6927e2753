"""Path templates: parsing, normalizing and joining them (the trailing-slash policy)."""

from __future__ import annotations

import re

from ..errors import ConfigurationError

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
    """Return ``(name, converter)`` for each parameter of a path template.

    Raises:
        ConfigurationError: the template holds ``<`` or ``>`` (a Flask-style ``<int:id>``;
            the error says what to write instead), or a brace that opens or closes no
            ``{name}`` (``{item-id}``, ``{id``), which would be matched as text.
    """
    if "<" in path or ">" in path:
        raise ConfigurationError(_angle_brackets(path))
    if "{" in path or "}" in path:
        rest = PARAM.sub("", path)
        if "{" in rest or "}" in rest:
            raise ConfigurationError(
                f"malformed placeholder in path {path!r}: write {{name}} or {{name:path}}, "
                f"a name being letters, digits and underscores"
            )
    return [(m.group(1), m.group(2)) for m in PARAM.finditer(path)]


# Flask's placeholders: <name>, <converter:name>, <converter(arguments):name>.
_FLASK_PARAM = re.compile(r"<(?:([A-Za-z_]\w*)(?:\([^()<>]*\))?:)?([A-Za-z_]\w*)>")


def _angle_brackets(path: str) -> str:
    """Say what is wrong with a template holding ``<`` or ``>``, with the fix when it is Flask's."""
    match = _FLASK_PARAM.search(path)
    if match is None:
        return f"'<' and '>' are not allowed in a path template: {path!r}"
    converter, name = match.groups()
    written = f"{{{name}:path}}" if converter == "path" else f"{{{name}}}"
    return (
        f"Flask-style placeholder {match.group(0)} in path {path!r}: write {written} "
        f"(the parameter's annotation converts the value)"
    )
