"""Testing support: a werkzeug test client that validates every exchange with ``wsgiref``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from wsgiref.validate import validator

from werkzeug.http import parse_cookie
from werkzeug.test import Client, TestResponse
from werkzeug.wsgi import get_current_url

if TYPE_CHECKING:
    from .trace import Trace

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

    def __enter__(self) -> TestClient:
        """Start the app's extensions (``app.start()``), as a worker does after the fork."""
        start = getattr(self.app_under_test, "start", None)
        if start is not None:
            start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        """Stop the app's extensions (``app.stop()``), as a worker does at shutdown."""
        stop = getattr(self.app_under_test, "stop", None)
        if stop is not None:
            stop()

    def open(self, *args: Any, buffered: bool = True, **kwargs: Any) -> TestResponse:
        return super().open(*args, buffered=buffered, **kwargs)

    def trace(self, method: str, path: str, **kwargs: Any) -> Trace:  # type: ignore[override]
        """Run one request through an instrumented copy of the app; return its :class:`Trace`.

        ``kwargs`` are :meth:`open`'s (``headers=``, ``data=``, ``json=``, ``query_string=``).
        The app itself is not instrumented: its other requests pay nothing for the trace. The
        request is validated like the client's others, and sent with the client's cookie jar.
        (This replaces werkzeug's ``trace()``, which sent an HTTP ``TRACE``: use
        ``open(path, method="TRACE")`` for that.)
        """
        from .trace import answer_of, traced_app

        traced, recorder = traced_app(self.app_under_test)
        client = TestClient(traced, validate=self.application is not self.app_under_test)
        client._cookies = self._cookies
        response = client.open(path, method=method.upper(), **kwargs)
        body = response.get_data()
        answer = answer_of(response.status_code, response.headers.to_wsgi_list(), body)
        return recorder.trace(method.upper(), path, answer)

    def _add_cookies_to_wsgi(self, environ: dict[str, Any]) -> None:
        """Send an explicit ``Cookie`` header as given, plus the jar's other cookies.

        werkzeug's client replaces an explicit ``headers={"Cookie": ...}`` with its cookie
        jar, so a test written that way would silently send no cookie at all.
        """
        explicit = environ.get("HTTP_COOKIE")
        if not explicit:
            super()._add_cookies_to_wsgi(environ)
            return
        if self._cookies is None:
            return
        given = parse_cookie(explicit)
        url = urlsplit(get_current_url(environ))
        host = url.hostname or "localhost"
        jar = [
            cookie._to_request_header()
            for cookie in self._cookies.values()
            if cookie.key not in given and cookie._matches_request(host, url.path)
        ]
        environ["HTTP_COOKIE"] = "; ".join([explicit, *jar])
