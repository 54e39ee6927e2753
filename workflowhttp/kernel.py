"""The kernel's own listeners: the framework's default behaviour, state by state.

Each is an ordinary listener at priority 100 (rendering at -100, the route fallback at 1000), so
a user listener (default 0) runs first and can take over any step. A kernel listener only acts
when nothing is scheduled yet: once a listener has called ``send()`` or ``next()``, the kernel
leaves the request alone.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any, cast

from werkzeug.exceptions import HTTPException
from werkzeug.sansio.utils import host_is_trusted
from werkzeug.wrappers import Response as WerkzeugResponse
from werkzeug.wsgi import get_host

from .errors import (
    AccessDenied,
    BadRequest,
    HTTPError,
    HTTPNotImplemented,
    MethodNotAllowed,
    NotFound,
    ParametersFailed,
    RequestHeaderFieldsTooLarge,
    WorkflowStalled,
)
from .events import HttpEvent
from .limits import Limits
from .middleware import run_incoming, run_outgoing
from .request import check_query_string, content_length
from .responses import JSON, JSONResponse, Response, copy_response, render
from .workflow import (
    ACCESS_DENIED,
    AUTH,
    CONTROLLER,
    CONTROLLER_ERROR,
    METHOD_NOT_ALLOWED,
    PARAMETERS_FAILED,
    REQUEST,
    RESOLVE_PARAMETERS,
    RESPONSE,
    ROUTE,
    ROUTE_NOT_FOUND,
    WorkflowLoop,
)

logger = logging.getLogger("workflowhttp")

KERNEL = 100
RENDER = -100
ROUTE_FALLBACK = 1000


def request_checks(
    limits: Limits, trusted_hosts: list[str] | None
) -> Callable[[dict[str, Any]], None]:
    """Compile the checks every request passes before its walk, for one app's settings.

    The returned ``check(environ)`` refuses a malformed or oversized request
    (400/413/414/431/501) or an untrusted host (400). Every request is checked, whether or not
    its controller reads the query or the body: bad input is answered as bad input wherever
    it is.

    SECURITY: this is not a listener. ``App.__call__`` calls it before the walk starts, so no
    listener can switch it off (by scheduling ``route`` itself, answering with ``send()`` or
    stopping propagation in ``request``), and a refused request reaches no user code at all:
    no listener of any state, no middleware, no controller. It is answered like a request the
    server refuses itself, with its status and the kernel's short JSON body.

    PERF: a closure over the limits, so a request pays no attribute lookups for them.

    Raises (from ``check``):
        HTTPError: the status to answer with.
    """
    max_headers = limits.max_headers
    max_content_length = limits.max_content_length
    max_params = limits.max_params
    max_query_length = limits.max_query_length

    def check(environ: dict[str, Any]) -> None:
        # PERF: the environ holds the headers plus a few CGI keys; only a large one is counted.
        if len(environ) > max_headers and _header_count(environ) > max_headers:
            raise RequestHeaderFieldsTooLarge(f"More than {max_headers} headers")
        # SECURITY: RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400 (gunicorn passes
        # it on). HTTP/1.0 has no Host requirement.
        if "HTTP_HOST" not in environ and environ.get("SERVER_PROTOCOL") == "HTTP/1.1":
            raise BadRequest("Missing Host header")
        codings = environ.get("HTTP_TRANSFER_ENCODING")
        if codings:
            _check_transfer_codings(codings, environ)
        if environ.get("CONTENT_LENGTH"):
            content_length(environ, max_content_length)
        query_string = environ.get("QUERY_STRING")
        if query_string:
            check_query_string(query_string, max_params, max_query_length)
        # SECURITY: a Host (or trusted X-Forwarded-Host) outside the list is refused, so URLs
        # the app builds never point elsewhere. Host names are case-insensitive.
        if trusted_hosts is not None:
            host = get_host(environ)
            if not host_is_trusted(host.lower(), trusted_hosts):
                raise BadRequest(f"Host {host!r} is not trusted.")

    return check


def schedule_route(event: HttpEvent) -> None:
    if event._next is None:
        event._next = ROUTE


def _header_count(environ: dict[str, Any]) -> int:
    count = sum(1 for key in environ if key.startswith("HTTP_"))
    return count + ("CONTENT_TYPE" in environ) + ("CONTENT_LENGTH" in environ)


def _check_transfer_codings(header: str, environ: dict[str, Any]) -> None:
    """Accept a body framed by ``chunked`` alone: the one coding WSGI servers decode.

    SECURITY: RFC 9112 §6.3: when ``chunked`` is not the last coding (or comes twice), the
    body's length cannot be determined: 400. A server hands the app the decoded chunks but
    leaves any coding before them (``gzip, chunked``: gunicorn passes it on) to the app, which
    would read the compressed bytes as if they were the body: 501 (a server that decodes a
    coding drops it from the header). ``Transfer-Encoding`` with ``Content-Length`` is the
    ambiguity request smuggling lives on: 400.
    """
    codings = [coding.strip(" \t").lower() for coding in header.split(",")]
    codings = [coding for coding in codings if coding]  # empty list elements are ignored
    if not codings:
        return
    if codings[-1] != "chunked" or codings.count("chunked") > 1:
        raise BadRequest(f"Transfer-Encoding {header[:64]!r}: chunked must come last, once")
    if len(codings) > 1:
        raise HTTPNotImplemented(f"Transfer-Encoding {header[:64]!r} is not supported")
    if environ.get("CONTENT_LENGTH"):
        raise BadRequest("Both Transfer-Encoding and Content-Length")


def match_route(event: HttpEvent) -> None:
    """Match the router; found → ``auth``; an unmatched ``OPTIONS`` is answered 204."""
    if event._next is not None:
        return
    environ = event.environ
    router = event.app.router
    method = environ["REQUEST_METHOD"]
    route, found = router.match(method, router.request_path(environ))
    if route is None:
        event.allowed_methods = found
        if method == "OPTIONS" and found:
            event.send(Response(b"", 204, {"Allow": ", ".join(found)}, None))
        return
    event.route = route
    event.path_params = found
    event._next = AUTH


def route_fallback(event: HttpEvent) -> None:
    """Nothing matched and nothing scheduled: 405 when the path exists, else 404."""
    if event._next is None:
        event._next = METHOD_NOT_ALLOWED if event.allowed_methods else ROUTE_NOT_FOUND


# PERF: the errors the kernel answers with when nobody raised one are made once; they are
# only read (never raised, so they gather no traceback).
_NOT_FOUND = NotFound()
_ACCESS_DENIED = AccessDenied()
_PARAMETERS_FAILED = ParametersFailed([])


def send_not_found(event: HttpEvent) -> None:
    if event._next is None:
        # PERF: the commonest error answer is rendered once (by http_error_response, which
        # error_response uses for every HTTPError) and sent as a fresh response around it.
        event.send(Response(_NOT_FOUND_BODY, 404, None, JSON))


def send_method_not_allowed(event: HttpEvent) -> None:
    if event._next is None:
        allow = ", ".join(event.allowed_methods)
        event.send(error_response(MethodNotAllowed(headers={"Allow": allow}), event))


def schedule_resolve_parameters(event: HttpEvent) -> None:
    if event._next is None:
        event._next = RESOLVE_PARAMETERS


def resolve_parameters(event: HttpEvent) -> None:
    """Resolve the controller's arguments by the route's plan; failure → ``parameters_failed``."""
    if event._next is not None:
        return
    plan = event.route.plan  # type: ignore[union-attr]
    if plan.resolvers:
        try:
            event.parameters = plan.resolve(event)
        except ParametersFailed as ex:
            event.error = ex
            event._next = PARAMETERS_FAILED
            return
    else:
        event.parameters = {}
    event._next = CONTROLLER


def call_controller(event: HttpEvent) -> None:
    """Call the controller; its return value becomes ``event.result``."""
    if event._next is not None:
        return
    event.result = event.route.invoke(event)  # type: ignore[union-attr]
    if event._next is None:  # the controller may have scheduled something itself
        event._next = RESPONSE


def send_access_denied(event: HttpEvent) -> None:
    if event._next is None:
        error = event.error if isinstance(event.error, AccessDenied) else _ACCESS_DENIED
        event.send(error_response(error, event))


def send_parameters_failed(event: HttpEvent) -> None:
    if event._next is None:
        error = event.error
        if not isinstance(error, ParametersFailed):
            error = _PARAMETERS_FAILED
        event.send(error_response(error, event))


def send_controller_error(event: HttpEvent) -> None:
    """``HTTPError`` (ours or werkzeug's) → its status; anything else → a logged 500."""
    if event._next is None:
        event.send(error_response(event.error, event, debug=event.app.debug))


def render_result(event: HttpEvent) -> None:
    """Render ``event.result`` into ``event.response`` unless a listener already set one.

    When the request runs outgoing middleware steps, which may change ``event.response``, a
    response the controller made (perhaps one object shared by every request) is copied.
    """
    if event.response is None:
        result = event.result
        response = render(result, event.status)
        if response is result and event._middlewares:
            response = copy_response(response)
        event.response = response


def error_response(
    error: BaseException | None, event: HttpEvent, *, debug: bool = False
) -> Response | WerkzeugResponse:
    """Return the response for ``error``: every error the kernel answers is rendered here.

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


def run_global_middlewares(event: HttpEvent) -> None:
    if event._next is None:
        run_incoming(event, event.app.middlewares.unfiltered)


def run_route_middlewares(event: HttpEvent) -> None:
    if event._next is None:
        chain = event.route.middlewares  # type: ignore[union-attr]
        if chain:
            run_incoming(event, chain)


Kernel = tuple[tuple[str, int, Callable[[HttpEvent], None]], ...]

_REQUEST_MIDDLEWARE: Kernel = ((REQUEST, KERNEL, run_global_middlewares),)
_AFTER_REQUEST_MIDDLEWARE: Kernel = (
    (REQUEST, KERNEL, schedule_route),
    (ROUTE, KERNEL, match_route),
    (ROUTE, ROUTE_FALLBACK, route_fallback),
    (ROUTE_NOT_FOUND, KERNEL, send_not_found),
    (METHOD_NOT_ALLOWED, KERNEL, send_method_not_allowed),
)
_ROUTE_MIDDLEWARE: Kernel = ((AUTH, KERNEL, run_route_middlewares),)
_AFTER_ROUTE_MIDDLEWARE: Kernel = (
    (AUTH, KERNEL, schedule_resolve_parameters),
    (RESOLVE_PARAMETERS, KERNEL, resolve_parameters),
    (CONTROLLER, KERNEL, call_controller),
    (ACCESS_DENIED, KERNEL, send_access_denied),
    (PARAMETERS_FAILED, KERNEL, send_parameters_failed),
    (CONTROLLER_ERROR, KERNEL, send_controller_error),
    (RESPONSE, RENDER, render_result),
)
_OUTGOING_MIDDLEWARE: Kernel = ((RESPONSE, KERNEL, run_outgoing),)


def kernel_listeners(*, middleware: bool) -> Kernel:
    """Return the kernel's listeners as ``(state, priority, listener)``, in registration order.

    Equal priorities run in this order, so at 100 in ``request`` the global middlewares come
    before scheduling ``route``; likewise in ``auth`` the route's middlewares run just before
    ``resolve_parameters`` is scheduled. Without middlewares their runners are left out, and
    cost nothing. The request checks are not among them: :func:`request_checks` runs before
    the walk.
    """
    if not middleware:
        return _AFTER_REQUEST_MIDDLEWARE + _AFTER_ROUTE_MIDDLEWARE
    return (
        _REQUEST_MIDDLEWARE
        + _AFTER_REQUEST_MIDDLEWARE
        + _ROUTE_MIDDLEWARE
        + _AFTER_ROUTE_MIDDLEWARE
        + _OUTGOING_MIDDLEWARE
    )


# Rendered once, by the renderer of every HTTPError (see send_not_found).
_NOT_FOUND_BODY = cast(bytes, http_error_response(_NOT_FOUND).body)
