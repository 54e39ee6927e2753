"""Generator providers: the code after ``yield`` is a teardown, run once the response is sent.

Request-scoped ones are torn down when the server closes the body (newest first, the
request's error thrown in when it failed); singletons at ``app.stop()``. A real gunicorn shows
the teardown runs after a streamed body has reached the client.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import create_environ

from tests.servers import serving, start
from workflowhttp import (
    AccessDenied,
    App,
    BadRequest,
    ConfigurationError,
    HttpEvent,
    NotFound,
    Provider,
    http,
    http_workflow,
)
from workflowhttp.testing import TestClient

# -- services ----------------------------------------------------------------------------------


class Connection:
    """A resource with a life: opened, maybe rolled back, closed."""

    def __init__(self, log: list[str], name: str = "connection") -> None:
        self.log = log
        self.name = name
        self.closed = False


class Session:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection


def recording_connection(log: list[str]) -> Any:
    """A generator factory of ``Connection`` that logs its setup and its teardown."""

    def connection() -> Iterator[Connection]:
        opened = Connection(log)
        log.append("open connection")
        try:
            yield opened
        except Exception as ex:
            log.append(f"rollback connection: {type(ex).__name__}")
            raise
        else:
            log.append("commit connection")
        finally:
            opened.closed = True
            log.append("close connection")

    return connection


def recording_session(log: list[str]) -> Any:
    """A generator factory of ``Session``, depending on the ``Connection``."""

    def session(connection: Connection) -> Generator[Session, None, None]:
        log.append("open session")
        yield Session(connection)
        log.append("close session")

    return session


@http.GET("/use")
def use(session: Session) -> dict[str, Any]:
    session.connection.log.append("controller")
    return {"session": type(session).__name__, "closed": session.connection.closed}


@http.GET("/connection")
def use_connection(connection: Connection) -> str:
    connection.log.append("controller")
    return "ok"


def environ(path: str) -> dict[str, Any]:
    return create_environ(path, "http://localhost/")


# -- request scope -----------------------------------------------------------------------------


def test_the_controller_gets_the_yielded_value_and_the_teardown_runs_after_the_response() -> None:
    log: list[str] = []
    app = App(
        controllers=[use_connection],
        providers=[Provider(Connection, recording_connection(log), scope="request")],
    )
    response = TestClient(app).get("/connection")
    assert response.status_code == 200
    assert log == ["open connection", "controller", "commit connection", "close connection"]


@pytest.mark.parametrize(
    "annotation",
    [Iterator[Connection], Generator[Connection, None, None]],
    ids=["Iterator[T]", "Generator[T, None, None]"],
)
def test_a_plain_generator_function_provides_the_yielded_type(annotation: Any) -> None:
    log: list[str] = []
    factory = recording_connection(log)
    factory.__annotations__ = {"return": annotation}
    app = App(controllers=[use_connection], providers=[factory])  # a singleton, by default
    with TestClient(app) as client:
        assert client.get("/connection").text == "ok"
        assert log == ["open connection", "controller"]


def test_a_request_scoped_generator_is_set_up_and_torn_down_once_per_request() -> None:
    log: list[str] = []

    @http.GET("/twice")
    def twice(first: Connection, event: HttpEvent) -> str:
        return "same" if event.parameters["first"] is first else "other"

    app = App(
        controllers=[twice],
        providers=[Provider(Connection, recording_connection(log), scope="request")],
    )
    client = TestClient(app)
    assert client.get("/twice").text == "same"
    assert client.get("/twice").text == "same"
    assert log == ["open connection", "commit connection", "close connection"] * 2


def test_teardowns_run_newest_first_across_services() -> None:
    log: list[str] = []
    app = App(
        controllers=[use],
        providers=[
            Provider(Connection, recording_connection(log), scope="request"),
            Provider(Session, recording_session(log), scope="request"),
        ],
    )
    response = TestClient(app).get("/use")
    assert response.json == {"session": "Session", "closed": False}
    assert log == [
        "open connection",
        "open session",
        "controller",
        "close session",
        "commit connection",
        "close connection",
    ]


def failing(error: Exception) -> Any:
    @http.GET("/fail")
    def fail(connection: Connection) -> str:
        raise error

    return fail


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ValueError("boom"), 500),
        (NotFound(), 404),
        (BadRequest("no"), 400),
        (AccessDenied(), 403),
    ],
    ids=["500-unexpected", "404-NotFound", "400-BadRequest", "403-AccessDenied"],
)
def test_the_request_error_is_thrown_into_the_teardown(
    error: Exception, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    app = App(
        controllers=[failing(error)],
        providers=[Provider(Connection, recording_connection(log), scope="request")],
    )
    with caplog.at_level(logging.ERROR, logger="workflowhttp"):
        response = TestClient(app).get("/fail")
    assert response.status_code == status
    assert log == [
        "open connection",
        f"rollback connection: {type(error).__name__}",
        "close connection",
    ]
    # Re-raising the request's error is how a teardown says "I saw it": not a second failure.
    assert not [r for r in caplog.records if "teardown" in r.getMessage()]


def test_the_thrown_error_is_the_one_that_made_the_response() -> None:
    seen: list[BaseException] = []
    error = NotFound("no such thing")

    def connection() -> Iterator[Connection]:
        try:
            yield Connection([])
        except Exception as ex:
            seen.append(ex)

    app = App(
        controllers=[failing(error)],
        providers=[Provider(Connection, connection, scope="request")],
    )
    response = TestClient(app).get("/fail")
    assert response.status_code == 404
    assert response.json == {"message": "no such thing"}
    assert seen == [error]
    assert seen[0] is error


def test_a_failing_teardown_is_logged_and_never_a_second_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []

    def broken(connection: Connection) -> Iterator[Session]:
        yield Session(connection)
        raise RuntimeError("cannot close the session")

    app = App(
        controllers=[use],
        providers=[
            Provider(Connection, recording_connection(log), scope="request"),
            Provider(Session, broken, scope="request"),
        ],
    )
    client = TestClient(app)
    with caplog.at_level(logging.ERROR, logger="workflowhttp"):
        response = client.get("/use")
    assert response.status_code == 200
    assert response.json == {"session": "Session", "closed": False}
    # The older service is still torn down, and sees a success.
    assert log == ["open connection", "controller", "commit connection", "close connection"]
    failures = [r for r in caplog.records if r.getMessage() == "the teardown of Session failed"]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert str(failures[0].exc_info[1]) == "cannot close the session"
    assert client.get("/use").status_code == 200  # the next request is served normally


def test_a_generator_that_yields_twice_is_logged_and_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[bool] = []

    def twice() -> Iterator[Connection]:
        try:
            yield Connection([])
            yield Connection([])
        finally:
            closed.append(True)

    app = App(
        controllers=[use_connection], providers=[Provider(Connection, twice, scope="request")]
    )
    with caplog.at_level(logging.ERROR, logger="workflowhttp"):
        assert TestClient(app).get("/connection").status_code == 200
    assert closed == [True]
    assert any("yielded twice" in r.getMessage() for r in caplog.records)


def test_a_generator_that_never_yields_is_a_logged_500(caplog: pytest.LogCaptureFixture) -> None:
    def nothing() -> Iterator[Connection]:
        if False:  # pragma: no cover - a generator function that returns at once
            yield Connection([])

    app = App(
        controllers=[use_connection], providers=[Provider(Connection, nothing, scope="request")]
    )
    with caplog.at_level(logging.ERROR, logger="workflowhttp"):
        response = TestClient(app).get("/connection")
    assert response.status_code == 500
    assert response.json == {"message": "Internal Server Error"}
    assert any(
        r.exc_info and "returned without yielding" in str(r.exc_info[1]) for r in caplog.records
    )


def test_a_failed_setup_still_tears_down_what_was_set_up_before_it() -> None:
    log: list[str] = []

    def session(connection: Connection) -> Iterator[Session]:
        raise OSError("the session server is away")
        yield Session(connection)  # pragma: no cover

    app = App(
        controllers=[use],
        providers=[
            Provider(Connection, recording_connection(log), scope="request"),
            Provider(Session, session, scope="request"),
        ],
    )
    assert TestClient(app).get("/use").status_code == 500
    assert log == ["open connection", "rollback connection: OSError", "close connection"]


def test_a_streamed_body_is_sent_before_the_teardown() -> None:
    log: list[str] = []

    @http.GET("/stream")
    def stream(connection: Connection) -> Iterator[bytes]:
        for number in range(3):
            log.append(f"chunk {number} (closed={connection.closed})")
            yield f"{number}\n".encode()

    app = App(
        controllers=[stream],
        providers=[Provider(Connection, recording_connection(log), scope="request")],
    )
    statuses: list[str] = []
    body = app(environ("/stream"), lambda status, headers: statuses.append(status))
    assert statuses == ["200 OK"]
    assert log == ["open connection"]  # nothing torn down while the server holds the body
    assert b"".join(body) == b"0\n1\n2\n"
    assert "commit connection" not in log  # nor once it is read: closing it is the end
    body.close()  # type: ignore[attr-defined]
    assert log == [
        "open connection",
        "chunk 0 (closed=False)",
        "chunk 1 (closed=False)",
        "chunk 2 (closed=False)",
        "commit connection",
        "close connection",
    ]
    body.close()  # type: ignore[attr-defined]
    assert log.count("close connection") == 1  # a second close tears down nothing twice


def test_the_teardown_runs_when_start_response_raises() -> None:
    log: list[str] = []
    app = App(
        controllers=[use_connection],
        providers=[Provider(Connection, recording_connection(log), scope="request")],
    )

    def refuse(status: str, headers: list[tuple[str, str]]) -> None:
        raise OSError("the client went away")

    with pytest.raises(OSError, match="went away"):
        app(environ("/connection"), refuse)
    assert log == ["open connection", "controller", "commit connection", "close connection"]


def test_the_teardown_runs_when_a_response_listener_fails_after_the_controller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []
    app = App(
        controllers=[use_connection],
        providers=[Provider(Connection, recording_connection(log), scope="request")],
    )

    @app.listen(http_workflow.on_response)
    def broken(event: HttpEvent) -> None:
        raise KeyError("a response listener's bug")

    with caplog.at_level(logging.ERROR, logger="workflowhttp"):
        response = TestClient(app).get("/connection")
    assert response.status_code == 500  # the rendered answer is given up for the last resort
    assert log == [
        "open connection",
        "controller",
        "rollback connection: KeyError",
        "close connection",
    ]


def test_a_request_without_generator_services_is_unaffected() -> None:
    log: list[str] = []

    @http.GET("/plain")
    def plain() -> str:
        return "plain"

    app = App(
        controllers=[plain, use_connection],
        providers=[Provider(Connection, recording_connection(log), scope="request")],
    )
    client = TestClient(app)
    assert client.get("/plain").text == "plain"
    assert log == []  # a route that needs no connection opens none
    assert client.get("/connection").text == "ok"
    assert client.get("/plain").text == "plain"
    assert log == ["open connection", "controller", "commit connection", "close connection"]


# -- singletons --------------------------------------------------------------------------------


def test_a_generator_singleton_is_set_up_once_and_torn_down_at_stop() -> None:
    log: list[str] = []
    app = App(
        controllers=[use_connection], providers=[Provider(Connection, recording_connection(log))]
    )
    with TestClient(app) as client:
        assert client.get("/connection").text == "ok"
        assert client.get("/connection").text == "ok"
        assert log == ["open connection", "controller", "controller"]
    assert log[-2:] == ["commit connection", "close connection"]
    app.stop()  # a second stop tears down nothing twice
    assert log.count("close connection") == 1


class Repository:
    """A singleton holding the generator singleton."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection


@http.GET("/repository")
def repository(repository: Repository) -> dict[str, bool]:
    return {"closed": repository.connection.closed}


def test_after_stop_the_singletons_are_built_again_so_none_keeps_a_closed_resource() -> None:
    log: list[str] = []
    app = App(
        controllers=[repository],
        providers=[Provider(Connection, recording_connection(log)), Repository],
    )
    for _ in range(2):
        with TestClient(app) as client:
            assert client.get("/repository").json == {"closed": False}
    assert log == ["open connection", "commit connection", "close connection"] * 2


def test_a_singleton_never_used_is_never_set_up() -> None:
    log: list[str] = []

    @http.GET("/other")
    def other() -> str:
        return "other"

    app = App(controllers=[other], providers=[Provider(Connection, recording_connection(log))])
    with TestClient(app) as client:
        assert client.get("/other").text == "other"
    assert log == []


# -- configuration -----------------------------------------------------------------------------


def no_annotation():  # type: ignore[no-untyped-def]
    yield Connection([])


def class_annotation() -> Connection:  # type: ignore[misc]
    yield Connection([])


@contextmanager
def context_manager() -> Iterator[Connection]:
    yield Connection([])


def returns_an_iterator() -> Iterator[Connection]:
    return iter([Connection([])])


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (no_annotation, r"needs Iterator\[T\]"),
        (context_manager, "not a generator function"),
        (returns_an_iterator, "not a generator function"),
    ],
    ids=["generator-without-annotation", "contextmanager", "plain-function-returning-iterator"],
)
def test_an_iterator_factory_that_cannot_work_is_a_configuration_error(
    factory: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        App(controllers=[use_connection], providers=[factory])


def test_a_generator_annotated_with_the_class_itself_provides_it() -> None:
    app = App(controllers=[use_connection], providers=[class_annotation])
    with TestClient(app) as client:
        assert client.get("/connection").text == "ok"


def test_the_bookstore_closes_its_connections_with_a_generator_provider() -> None:
    from examples.bookstore import listeners
    from examples.bookstore.app import create_app

    app = create_app(":memory:")
    names = {getattr(f, "__name__", "") for f in app.listeners(http_workflow.on_response)}
    assert "close_connection" not in names
    assert not hasattr(listeners, "close_connection")


# -- under a real gunicorn ---------------------------------------------------------------------

GRACEFUL_TIMEOUT = 3


@pytest.mark.gunicorn
def test_under_gunicorn_the_teardown_runs_after_the_streamed_body_was_sent(tmp_path: Path) -> None:
    journal = tmp_path / "journal.txt"
    go = tmp_path / "go"
    server = start(
        "tests.apps.teardown_app:app",
        tmp_path / "server",
        workers=1,
        graceful_timeout=GRACEFUL_TIMEOUT,
        env={"TEARDOWN_JOURNAL": str(journal), "TEARDOWN_GO": str(go)},
    )
    with serving(server):
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            connection.request("GET", "/stream")
            response = connection.getresponse()
            assert response.status == 200
            first = response.read1(2)
            assert first == b"0\n"
            # The body is still being sent: nothing is torn down yet.
            assert "teardown" not in journal.read_text()
            go.touch()  # let the body finish
            rest = response.read()
        finally:
            connection.close()
        assert first + rest == b"0\n1\n2\n"
        lines = wait_for_line(journal, "request teardown")
        assert lines[-3:] == ["chunk 2 sent (open)", "body done", "request teardown"]
        worker = lines[0].split()[-1]
    # At shutdown, gunicorn's worker_exit runs app.stop(): the singleton's teardown.
    lines = wait_for_line(journal, "singleton teardown")
    assert lines[-1] == f"singleton teardown {worker}"
    assert os.path.exists(journal)


def wait_for_line(journal: Path, text: str, deadline: float = 10.0) -> list[str]:
    give_up = time.monotonic() + deadline
    while True:
        lines = journal.read_text().splitlines()
        if any(text in line for line in lines):
            return lines
        if time.monotonic() > give_up:
            pytest.fail(f"{text!r} never reached the journal: {lines}")
        time.sleep(0.05)


# -- event.call_on_close ------------------------------------------------------------------


def test_call_on_close_runs_once_the_body_is_closed_newest_first() -> None:
    ran: list[str] = []

    @http.GET("/chunks")
    def chunks(event: HttpEvent) -> Iterator[bytes]:
        event.call_on_close(lambda: ran.append("first"))
        event.call_on_close(lambda: ran.append("second"))

        def body() -> Iterator[bytes]:
            ran.append("body")
            yield b"x"

        return body()

    app = App(controllers=[chunks])
    body = app(create_environ("/chunks"), lambda status, headers, exc_info=None: None)
    assert b"".join(body) == b"x"
    assert ran == ["body"]  # not before the server closes the body
    body.close()  # type: ignore[attr-defined]
    assert ran == ["body", "second", "first"]


def test_call_on_close_runs_when_the_request_failed_and_its_error_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[int] = []

    def boom() -> None:
        raise RuntimeError("callback failed")

    @http.GET("/fails")
    def fails(event: HttpEvent) -> str:
        event.call_on_close(lambda: ran.append(event.status or 0))
        event.call_on_close(boom)
        raise NotFound("nothing here")

    client = TestClient(App(controllers=[fails]))
    with caplog.at_level(logging.ERROR):
        answer = client.get("/fails")
    assert answer.status_code == 404
    assert len(ran) == 1  # run despite the failure, and despite the other callback raising
    assert any("callback failed" in str(r.exc_info and r.exc_info[1]) for r in caplog.records)
    assert client.get("/fails").status_code == 404  # the next request is served as usual
