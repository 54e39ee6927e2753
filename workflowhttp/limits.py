"""Limits on what one request may make the framework read, parse or do."""

from __future__ import annotations

from typing import Any

from .errors import ConfigurationError
from .settings import check_positive_ints

__all__ = ["Limits"]

_DEFAULTS: dict[str, int] = {
    "max_content_length": 1024 * 1024,
    "max_form_memory_size": 500_000,
    "max_form_parts": 1000,
    "max_form_files": 100,
    "max_params": 1000,
    "max_query_length": 8192,
    "max_headers": 100,
    "max_json_depth": 64,
    "max_hops": 32,
}


class Limits:
    """Per-app limits, each checked before more than the limit is read.

    Args:
        max_content_length: Largest request body in bytes (default 1 MiB). Checked against
            ``Content-Length`` before reading and while reading a chunked body: 413.
        max_form_memory_size: Largest form data kept in memory (default 500 kB): 413. That is
            each non-file field of a multipart body, and an urlencoded body as a whole (it is
            held in memory whole), however the body is framed (``Content-Length`` or chunked).
        max_form_parts: Most parts in a multipart body (default 1000): 400, refused as the
            part after the limit arrives.
        max_form_files: Most uploaded files in a multipart body (default 100): 400, refused
            before the file after the limit is read.
        max_params: Most query plus form fields, counted together (default 1000): 400. The
            query alone is checked for every request; with a form, the query's fields and the
            form's add up.
        max_query_length: Longest query string in bytes (default 8192): 414. The request line
            as a whole is bounded by the server (gunicorn's ``--limit-request-line``).
        max_headers: Most request headers (default 100): 431. Each header's size is bounded
            by the server (gunicorn's ``--limit-request-field-size``).
        max_json_depth: Deepest nesting of arrays/objects in a JSON body (default 64): 400.
        max_hops: Most state moves of one request through the workflow (default 32); more is a
            loop: logged and answered 500.
    """

    __slots__ = tuple(_DEFAULTS)

    max_content_length: int
    max_form_memory_size: int
    max_form_parts: int
    max_form_files: int
    max_params: int
    max_query_length: int
    max_headers: int
    max_json_depth: int
    max_hops: int

    def __init__(self, **overrides: int) -> None:
        unknown = set(overrides) - set(_DEFAULTS)
        if unknown:
            raise ConfigurationError(f"unknown limit(s): {', '.join(sorted(unknown))}")
        values = {name: overrides.get(name, default) for name, default in _DEFAULTS.items()}
        check_positive_ints("limit", **values)
        for name, value in values.items():
            setattr(self, name, value)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)}" for name in _DEFAULTS)
        return f"Limits({fields})"

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Limits):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in _DEFAULTS)

    __hash__ = None  # type: ignore[assignment]
