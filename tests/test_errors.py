"""Errors: HTTP errors carry their status; framework errors stay apart; JSON error bodies."""

from __future__ import annotations

import pytest
import werkzeug.exceptions

import workflowhttp
from workflowhttp import (
    AccessDenied,
    App,
    BadRequest,
    ConfigurationError,
    HTTPError,
    HttpEvent,
    IllegalTransition,
    MethodNotAllowed,
    NotFound,
    ParametersFailed,
    Unauthorized,
    WorkflowError,
    WorkflowStalled,
    http,
    http_workflow,
)
from workflowhttp.testing import TestClient


def raising(make_error, *args, **options) -> TestClient:
    """A client for an app whose ``GET /`` raises ``make_error(*args)``.

    The error is made per request: an exception instance that outlives a request would keep
    the request's frames alive through its ``__traceback__``.
    """

    @http.GET("/")
    def controller() -> str:
        raise make_error(*args)

    return TestClient(App(controllers=[controller], **options))


# -- the error classes -------------------------------------------------------------------------

STATUSES = [
    ("BadRequest", 400, "Bad Request"),
    ("Unauthorized", 401, "Unauthorized"),
    ("AccessDenied", 403, "Access denied"),
    ("NotFound", 404, "Not Found"),
    ("MethodNotAllowed", 405, "Method Not Allowed"),
    ("NotAcceptable", 406, "Not Acceptable"),
    ("Conflict", 409, "Conflict"),
    ("Gone", 410, "Gone"),
    ("LengthRequired", 411, "Length Required"),
    ("PayloadTooLarge", 413, "Payload Too Large"),
    ("UnsupportedMediaType", 415, "Unsupported Media Type"),
    ("UnprocessableEntity", 422, "Unprocessable Entity"),
    ("TooManyRequests", 429, "Too Many Requests"),
    ("RequestHeaderFieldsTooLarge", 431, "Request Header Fields Too Large"),
    ("InternalServerError", 500, "Internal Server Error"),
    ("BadGateway", 502, "Bad Gateway"),
    ("ServiceUnavailable", 503, "Service Unavailable"),
    ("GatewayTimeout", 504, "Gateway Timeout"),
]


@pytest.mark.parametrize(("name", "status", "message"), STATUSES, ids=[s[0] for s in STATUSES])
def test_subclasses_set_status_and_message_as_class_attributes(name, status, message):
    error_class = getattr(workflowhttp, name)
    assert issubclass(error_class, HTTPError)
    assert error_class.status == status
    assert error_class.message == message
    error = error_class()
    assert error.status == status
    assert error.message == message
    assert error.headers is None
    assert str(error) == message


@pytest.mark.parametrize(("name", "status", "message"), STATUSES, ids=[s[0] for s in STATUSES])
def test_raised_subclass_answers_its_status_and_message(name, status, message):
    response = raising(getattr(workflowhttp, name)).get("/")
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.json == {"message": message}


def test_message_given_to_the_constructor():
    error = BadRequest("why")
    assert error.message == "why"
    assert error.status == 400
    assert str(error) == "why"
    assert repr(error) == "BadRequest('why')"
    assert BadRequest.message == "Bad Request"  # the class default is untouched


def test_raise_bad_request_with_a_reason():
    response = raising(BadRequest, "why").get("/")
    assert response.status_code == 400
    assert response.json == {"message": "why"}


def test_raise_not_found():
    response = raising(NotFound).get("/")
    assert response.status_code == 404
    assert response.json == {"message": "Not Found"}


def test_headers_on_an_http_error():
    response = raising(
        lambda: Unauthorized(headers={"WWW-Authenticate": 'Bearer realm="api"'})
    ).get("/")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.json == {"message": "Unauthorized"}


def test_headers_and_message_together():
    response = raising(lambda: MethodNotAllowed("use POST", headers={"Allow": "POST"})).get("/")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.json == {"message": "use POST"}


def test_custom_subclass():
    class Teapot(HTTPError):
        status = 418
        message = "I'm a teapot"

    response = raising(Teapot).get("/")
    assert response.status_code == 418
    assert response.json == {"message": "I'm a teapot"}
    assert raising(Teapot, "short and stout").get("/").json == {"message": "short and stout"}


def test_custom_subclass_of_a_subclass_keeps_the_status():
    class UserNotFound(NotFound):
        message = "No such user"

    response = raising(UserNotFound).get("/")
    assert response.status_code == 404
    assert response.json == {"message": "No such user"}


def test_custom_body_by_overriding_to_body():
    class Detailed(BadRequest):
        def to_body(self) -> dict:
            return {"message": self.message, "code": "E42"}

    assert raising(Detailed, "bad").get("/").json == {"message": "bad", "code": "E42"}


def test_bare_http_error_is_a_500_that_is_not_logged(caplog):
    response = raising(HTTPError).get("/")
    assert response.status_code == 500
    assert response.json == {"message": "Internal Server Error"}
    assert caplog.records == []


def test_http_errors_are_not_logged_as_errors(caplog):
    raising(NotFound).get("/")
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


# -- access denied ------------------------------------------------------------------------------


def test_access_denied_is_an_http_error_with_403():
    assert issubclass(AccessDenied, HTTPError)
    assert AccessDenied.status == 403
    assert AccessDenied().message == "Access denied"
    assert not hasattr(workflowhttp, "Forbidden")  # one name for 403: AccessDenied


def test_raised_access_denied_goes_to_access_denied():
    states = []

    @http.GET("/")
    def controller() -> str:
        raise AccessDenied("Admins only")

    app = App(controllers=[controller])

    @app.listen(http_workflow.on_access_denied)
    def seen(event: HttpEvent) -> None:
        states.append(event.state)

    @app.listen(http_workflow.on_controller_error)
    def wrong(event: HttpEvent) -> None:
        states.append(event.state)

    response = TestClient(app).get("/")
    assert response.status_code == 403
    assert response.json == {"message": "Admins only"}
    assert states == ["access_denied"]


def test_access_denied_from_a_listener_with_a_message():
    app = App(controllers=[_plain()])

    @app.listen(http_workflow.on_auth)
    def deny(event: HttpEvent) -> None:
        event.access_denied("No entry")

    response = TestClient(app).get("/")
    assert response.status_code == 403
    assert response.json == {"message": "No entry"}


def test_access_denied_from_a_listener_without_a_message():
    app = App(controllers=[_plain()])

    @app.listen(http_workflow.on_auth)
    def deny(event: HttpEvent) -> None:
        event.access_denied()

    assert TestClient(app).get("/").json == {"message": "Access denied"}


def test_access_denied_raised_in_a_listener():
    app = App(controllers=[_plain()])

    @app.listen(http_workflow.on_resolve_parameters)
    def deny(event: HttpEvent) -> None:
        raise AccessDenied(headers={"X-Reason": "token"})

    response = TestClient(app).get("/")
    assert response.status_code == 403
    assert response.headers["X-Reason"] == "token"
    assert response.json == {"message": "Access denied"}


def _plain():
    @http.GET("/")
    def plain() -> str:
        return "plain"

    return plain


# -- errors from listeners and werkzeug --------------------------------------------------------


@pytest.mark.parametrize("state", ["request", "route", "auth", "resolve_parameters", "controller"])
def test_http_error_in_a_listener_keeps_its_status(state):
    app = App(controllers=[_plain()])

    @app.listen(state)
    def fail(event: HttpEvent) -> None:
        raise BadRequest("from " + state)

    response = TestClient(app).get("/")
    assert response.status_code == 400
    assert response.json == {"message": "from " + state}


@pytest.mark.parametrize(
    ("error_class", "status"),
    [
        (werkzeug.exceptions.NotFound, 404),
        (werkzeug.exceptions.BadRequest, 400),
        (werkzeug.exceptions.RequestEntityTooLarge, 413),
        (werkzeug.exceptions.ImATeapot, 418),
        (werkzeug.exceptions.ServiceUnavailable, 503),
    ],
    ids=["404", "400", "413", "418", "503"],
)
def test_werkzeug_http_exception_keeps_its_status(error_class, status):
    response = raising(error_class).get("/")
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    body = response.json
    assert set(body) == {"message"}
    assert body["message"] == error_class.description


def test_werkzeug_exception_raised_in_a_listener():
    app = App(controllers=[_plain()])

    @app.listen(http_workflow.on_auth)
    def fail(event: HttpEvent) -> None:
        raise werkzeug.exceptions.Unauthorized("log in")

    response = TestClient(app).get("/")
    assert response.status_code == 401
    assert response.json == {"message": "log in"}


def test_unexpected_exception_is_a_logged_500(caplog):
    response = raising(ZeroDivisionError, "division by zero").get("/")
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "application/json"
    assert response.json == {"message": "Internal Server Error"}
    assert "Traceback" not in response.text
    (record,) = caplog.records
    assert record.levelname == "ERROR"
    assert record.name == "workflowhttp"
    assert isinstance(record.exc_info[1], ZeroDivisionError)


def test_debug_shows_the_error_and_traceback():
    response = raising(ZeroDivisionError, "division by zero", debug=True).get("/")
    assert response.status_code == 500
    body = response.json
    assert body["message"] == "Internal Server Error"
    assert body["error"] == "ZeroDivisionError: division by zero"
    assert body["traceback"][0].startswith("Traceback")
    assert "ZeroDivisionError" in body["traceback"][-1]


def test_error_in_a_failure_state_is_the_last_resort_500(caplog):
    app = App(controllers=[_plain()])

    @app.listen(http_workflow.on_route_not_found)
    def broken(event: HttpEvent) -> None:
        raise RuntimeError("broken 404 page")

    client = TestClient(app)
    response = client.get("/missing")
    assert response.status_code == 500
    assert response.json == {"message": "Internal Server Error"}
    assert any("route_not_found" in record.getMessage() for record in caplog.records)
    assert client.get("/").text == "plain"


def test_error_in_response_state_is_the_last_resort_500():
    app = App(controllers=[_plain()])

    @app.listen(http_workflow.on_response)
    def broken(event: HttpEvent) -> None:
        raise RuntimeError("broken renderer")

    response = TestClient(app).get("/")
    assert response.status_code == 500
    assert response.json == {"message": "Internal Server Error"}


def test_http_error_in_a_failure_state_keeps_its_status():
    # DESIGN: an HTTP error raised *anywhere* keeps its status; other errors there are a 500.
    app = App(controllers=[_plain()])

    @app.listen(http_workflow.on_method_not_allowed)
    def broken(event: HttpEvent) -> None:
        raise NotFound()

    response = TestClient(app).post("/")
    assert response.status_code == 404
    assert response.json == {"message": "Not Found"}


def test_custom_error_page_in_controller_error():
    app = App(controllers=[_plain()])

    @app.listen(http_workflow.on_controller)
    def fail(event: HttpEvent) -> None:
        raise NotFound("gone fishing")

    @app.listen(http_workflow.on_controller_error)
    def page(event: HttpEvent) -> None:
        error = event.error
        event.send(f"<h1>{error.status}: {error.message}</h1>", error.status)

    response = TestClient(app).get("/")
    assert response.status_code == 404
    assert response.text == "<h1>404: gone fishing</h1>"


# -- kernel error responses --------------------------------------------------------------------


def test_kernel_error_bodies(client):
    not_found = client.get("/nope")
    assert (not_found.status_code, not_found.json) == (404, {"message": "Not Found"})
    not_allowed = client.delete("/hello")
    assert (not_allowed.status_code, not_allowed.json) == (405, {"message": "Method Not Allowed"})


def test_parameters_failed_body():
    @http.GET("/n/{n}")
    def number(n: int, flag: bool = False) -> dict:
        return {}

    response = TestClient(App(controllers=[number])).get("/n/x?flag=maybe")
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    body = response.json
    assert body["message"] == "Bad Request"
    assert [error["path"] for error in body["errors"]] == ["n", "flag"]


def test_parameters_failed_is_a_bad_request():
    error = ParametersFailed([{"path": "a", "message": "m"}])
    assert isinstance(error, BadRequest)
    assert error.status == 400
    assert error.to_body() == {"message": "Bad Request", "errors": [{"path": "a", "message": "m"}]}


def test_stalled_workflow_is_a_logged_500(caplog):
    app = App(controllers=[_plain()])

    @app.listen(http_workflow.on_auth)
    def stop(event: HttpEvent) -> None:
        event.stop_propagation()

    response = TestClient(app).get("/")
    assert response.status_code == 500
    assert response.json == {"message": "Internal Server Error"}
    assert any("workflow stalled in state 'auth'" in r.getMessage() for r in caplog.records)


# -- framework errors --------------------------------------------------------------------------


def test_framework_errors_are_not_http_errors():
    assert issubclass(IllegalTransition, WorkflowError)
    assert issubclass(WorkflowStalled, WorkflowError)
    for error_class in (WorkflowError, IllegalTransition, WorkflowStalled, ConfigurationError):
        assert not issubclass(error_class, HTTPError)
    assert not issubclass(ConfigurationError, WorkflowError)


def test_illegal_transition_names_both_states():
    error = IllegalTransition("auth", "controller", ("resolve_parameters", "response"))
    assert error.source == "auth"
    assert error.target == "controller"
    assert "'auth'" in str(error) and "'controller'" in str(error)


def test_illegal_transition_in_a_listener_is_a_500(caplog):
    app = App(controllers=[_plain()])

    @app.listen(http_workflow.on_auth)
    def jump(event: HttpEvent) -> None:
        event.next("controller")

    response = TestClient(app).get("/")
    assert response.status_code == 500
    assert response.json == {"message": "Internal Server Error"}
    (record,) = [r for r in caplog.records if r.exc_info]
    assert isinstance(record.exc_info[1], IllegalTransition)
