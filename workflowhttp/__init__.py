"""workflowhttp: a WSGI framework in which every request is a small finite state machine."""

from __future__ import annotations

from .app import App
from .di import Provider
from .errors import (
    AccessDenied,
    BadGateway,
    BadRequest,
    ConfigurationError,
    Conflict,
    GatewayTimeout,
    Gone,
    HTTPError,
    IllegalTransition,
    InternalServerError,
    LengthRequired,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    ParametersFailed,
    PayloadTooLarge,
    RequestHeaderFieldsTooLarge,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnprocessableEntity,
    UnsupportedMediaType,
    URITooLong,
    WorkflowError,
    WorkflowLoop,
    WorkflowStalled,
)
from .events import HttpEvent, listener
from .limits import Limits
from .middleware import Middleware
from .params import Body, Cookie, Header, Query
from .request import Request
from .responses import HTMLResponse, JSONResponse, Redirect, Response
from .routing import Route, http
from .workflow import http_workflow

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "App",
    "BadGateway",
    "BadRequest",
    "Body",
    "ConfigurationError",
    "Conflict",
    "Cookie",
    "GatewayTimeout",
    "Gone",
    "HTMLResponse",
    "HTTPError",
    "Header",
    "HttpEvent",
    "IllegalTransition",
    "InternalServerError",
    "JSONResponse",
    "LengthRequired",
    "Limits",
    "MethodNotAllowed",
    "Middleware",
    "NotAcceptable",
    "NotFound",
    "ParametersFailed",
    "PayloadTooLarge",
    "Provider",
    "Query",
    "Redirect",
    "Request",
    "RequestHeaderFieldsTooLarge",
    "Response",
    "Route",
    "ServiceUnavailable",
    "TooManyRequests",
    "URITooLong",
    "Unauthorized",
    "UnprocessableEntity",
    "UnsupportedMediaType",
    "WorkflowError",
    "WorkflowLoop",
    "WorkflowStalled",
    "http",
    "http_workflow",
    "listener",
]
