"""Errors: HTTP errors that carry a status, and framework errors kept apart from them.

An :class:`HTTPError` raised anywhere in the workflow (a listener, a resolver, a controller)
becomes a JSON response with its status: ``{"message": "..."}``. Each subclass only sets
``status`` and ``message`` as class attributes, so ``raise NotFound()`` and
``raise BadRequest("why")`` both work.

Framework errors (:class:`WorkflowError`, :class:`ConfigurationError`) are programming errors,
not client errors: they are never turned into a 4xx.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class HTTPError(Exception):
    """An error that answers the client with ``status`` and a short JSON body.

    Args:
        message: Overrides the class's default message.
        headers: Extra response headers (``Allow``, ``Retry-After``, ``WWW-Authenticate``...),
            a mapping or a list of pairs (a name given twice is sent twice).
    """

    status: int = 500
    message: str = "Internal Server Error"

    def __init__(
        self,
        message: str | None = None,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ):
        if message is not None:
            self.message = message
        self.headers = headers
        super().__init__(self.message)

    def to_body(self) -> dict[str, Any]:
        """Return the JSON body of the error response."""
        return {"message": self.message}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class BadRequest(HTTPError):
    status = 400
    message = "Bad Request"


class Unauthorized(HTTPError):
    status = 401
    message = "Unauthorized"


class AccessDenied(HTTPError):
    """Raised (or ``event.access_denied()`` called) to move the request to ``access_denied``."""

    status = 403
    message = "Access denied"


class NotFound(HTTPError):
    status = 404
    message = "Not Found"


class MethodNotAllowed(HTTPError):
    status = 405
    message = "Method Not Allowed"


class NotAcceptable(HTTPError):
    status = 406
    message = "Not Acceptable"


class Conflict(HTTPError):
    status = 409
    message = "Conflict"


class Gone(HTTPError):
    status = 410
    message = "Gone"


class LengthRequired(HTTPError):
    status = 411
    message = "Length Required"


class PayloadTooLarge(HTTPError):
    status = 413
    message = "Payload Too Large"


class URITooLong(HTTPError):
    status = 414
    message = "URI Too Long"


class UnsupportedMediaType(HTTPError):
    status = 415
    message = "Unsupported Media Type"


class UnprocessableEntity(HTTPError):
    status = 422
    message = "Unprocessable Entity"


class TooManyRequests(HTTPError):
    status = 429
    message = "Too Many Requests"


class RequestHeaderFieldsTooLarge(HTTPError):
    status = 431
    message = "Request Header Fields Too Large"


class InternalServerError(HTTPError):
    status = 500
    message = "Internal Server Error"


class HTTPNotImplemented(HTTPError):
    """501: the server does not support what the request needs (a transfer coding, say).

    Not named ``NotImplemented``: that would shadow Python's builtin constant.
    """

    status = 501
    message = "Not Implemented"


class BadGateway(HTTPError):
    status = 502
    message = "Bad Gateway"


class ServiceUnavailable(HTTPError):
    status = 503
    message = "Service Unavailable"


class GatewayTimeout(HTTPError):
    status = 504
    message = "Gateway Timeout"


class ParametersFailed(BadRequest):
    """The controller's arguments could not be resolved; carries one error per location.

    Each error is ``{"path": ..., "message": ...}`` where ``path`` is the parameter name or
    the dotted location inside a body (``"user.age"``, ``"items.0.name"``).
    """

    def __init__(self, errors: list[dict[str, str]], message: str | None = None):
        super().__init__(message)
        self.errors = errors

    def to_body(self) -> dict[str, Any]:
        return {"message": self.message, "errors": self.errors}


class WorkflowError(Exception):
    """Base of the errors raised by the workflow machinery itself."""


class IllegalTransition(WorkflowError):
    """A listener asked to move to a state the graph does not allow from the current one."""

    def __init__(self, source: str, target: str, allowed: frozenset[str] | tuple[str, ...] = ()):
        self.source = source
        self.target = target
        choices = ", ".join(sorted(allowed)) or "none"
        super().__init__(
            f"illegal transition from '{source}' to '{target}' (allowed from '{source}': {choices})"
        )


class WorkflowStalled(WorkflowError):
    """The listeners of a state scheduled no next state."""


class WorkflowLoop(WorkflowError):
    """A request made more state moves than ``Limits.max_hops`` allows."""


class ConfigurationError(Exception):
    """The app is configured wrongly; raised when the ``App`` is built, never per request."""
