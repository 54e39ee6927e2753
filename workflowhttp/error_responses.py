"""How an error becomes the client's answer: every error the app answers is rendered here.

:mod:`workflowhttp.errors` owns the errors, their statuses and their messages; this module
owns one way to turn any of them into a response (:func:`error_response`) and to log the ones
that are the app's own fault. The kernel's failure states, the app's last resort and the
extensions all answer through it, so a 404 from the router and a ``NotFound`` raised by a
controller are the same bytes.

Imports :mod:`.errors` and :mod:`.responses`; never the app, the kernel or the router.
"""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any, cast

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from .errors import HTTPError, NotFound, WorkflowLoop, WorkflowStalled
from .responses import JSON, JSONResponse, Response

if TYPE_CHECKING:
    from .events import HttpEvent

__all__ = ["error_response", "http_error_response", "loggable", "not_found_response"]

logger = logging.getLogger("workflowhttp")


def error_response(
    error: BaseException | None, event: HttpEvent, *, debug: bool = False
) -> Response | WerkzeugResponse:
    """Return the response for ``error``.

    An ``HTTPError`` keeps its status and headers wherever it was raised. A werkzeug
    ``HTTPException`` keeps its status and the headers of its ``get_headers()`` (``Allow``,
    ``WWW-Authenticate``, ``Retry-After``...); one that carries a response
    (``abort(response)``) or builds its own (``RequestRedirect``, with its ``Location``) is
    answered with that response. Those are JSON ``{"message": ...}`` bodies like the
    kernel's. Anything else is a 500, logged: a workflow fault (stall, loop) by its own
    message, any other error with its traceback; ``debug`` adds both to the body.
    """
    if isinstance(error, HTTPError):
        return http_error_response(error)
    if isinstance(error, HTTPException) and (error.code or error.response is not None):
        return _werkzeug_error_response(error, event.environ)
    environ = event.environ
    # SECURITY: method and path come from the client; escaped, a decoded %0a cannot start a
    # forged line in the log.
    where = f"{loggable(event.method)} {loggable(environ.get('PATH_INFO', ''))}"
    if isinstance(error, (WorkflowStalled, WorkflowLoop)):  # no traceback worth showing
        logger.error("%s (%s)", error, where)
    else:
        state = event.error_state if event.error is error and event.error_state else event.state
        logger.error("unhandled error in state '%s' (%s)", state, where, exc_info=error)
    body: dict[str, Any] = {"message": "Internal Server Error"}
    if debug and error is not None:
        body["error"] = f"{type(error).__name__}: {error}"
        body["traceback"] = traceback.format_exception(error)
    return JSONResponse(body, 500)


def http_error_response(error: HTTPError) -> JSONResponse:
    """Return the JSON response of an ``HTTPError``: its status, message and headers."""
    return JSONResponse(error.to_body(), error.status, error.headers)


def not_found_response() -> Response:
    """Return the 404 the router's miss is answered with (``NotFound()``'s response).

    PERF: the commonest error answer: its body is rendered once, at import, and each call
    wraps it in a fresh response (a listener may still change its headers).
    """
    return Response(_NOT_FOUND_BODY, 404, None, JSON)


def _werkzeug_error_response(
    error: HTTPException, environ: dict[str, Any]
) -> Response | WerkzeugResponse:
    carried: Any = error.response
    if carried is not None:  # abort(response): that response is the answer
        return carried  # type: ignore[no-any-return]
    if type(error).get_response is not HTTPException.get_response:
        # It builds its own answer (RequestRedirect: a redirect with its Location).
        return error.get_response(environ)
    headers = [
        (name, value)
        for name, value in error.get_headers(environ)
        if name.lower() != "content-type"  # the body is JSON, not werkzeug's HTML page
    ]
    message = error.description or error.name
    return JSONResponse({"message": message}, error.code or 500, headers)


def loggable(text: object) -> str:
    """Return request-derived ``text`` for a log line: as it is when printable, else escaped.

    SECURITY: a decoded ``%0a`` (or CR, ESC, NEL, U+2028) in a path would start a forged
    line in the log, or rewrite the terminal; escaped as ``repr()`` escapes it, it stays
    visible and on one line. A backslash is escaped too, so an escaped newline and a
    literal backslash-n never look alike.
    """
    text = str(text)
    if text.isprintable() and "\\" not in text:
        return text
    return repr(text)[1:-1]


_NOT_FOUND_BODY = cast(bytes, http_error_response(NotFound()).body)
