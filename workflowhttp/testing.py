"""Testing support: a werkzeug test client that validates every exchange with ``wsgiref``."""

from __future__ import annotations

from typing import Any
from wsgiref.validate import validator

from werkzeug.test import Client, TestResponse

__all__ = ["TestClient"]


class TestClient(Client):
    """werkzeug's test client around ``wsgiref.validate.validator(app)``.

    Every request is checked against PEP 3333 (status line, header types, ``Content-Type``
    rules, closing the body), and responses are buffered so the body is always closed.

    Args:
        app: The WSGI application (usually an :class:`~workflowhttp.App`).
        validate: Set to ``False`` to call the app directly.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, app: Any, *, validate: bool = True, **kwargs: Any) -> None:
        self.app_under_test = app
        super().__init__(validator(app) if validate else app, **kwargs)

    def open(self, *args: Any, buffered: bool = True, **kwargs: Any) -> TestResponse:
        return super().open(*args, buffered=buffered, **kwargs)
