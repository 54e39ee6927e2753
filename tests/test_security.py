"""Security and reliability in process: hosts, proxies, header and query limits, cookies,
redirects, path traversal, workflow faults, error rendering and request isolation.

tests/test_hostile_input.py holds the corpus of malformed framing, sizes, encodings and bodies;
this file adds what it lacks. Every hostile request gets its exact status and a short JSON body
without traceback text, and the same app then serves a normal request as if nothing happened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any
from urllib.parse import quote

import pytest
from werkzeug.test import TestResponse

from workflowhttp import (
    AccessDenied,
    App,
    BadRequest,
    Body,
    ConfigurationError,
    Cookie,
    Header,
    HttpEvent,
    Limits,
    Provider,
    Query,
    Redirect,
    Request,
    Response,
    Unauthorized,
    http,
    http_workflow,
)
from workflowhttp.testing import TestClient

HOSTS = ["example.com", ".example.org"]  # example.com exactly; example.org and its subdomains
HOST = {"Host": "example.com"}
INTERNAL = {"message": "Internal Server Error"}
SECRET = "hunter2"  # in every exception message below: it must never reach the client


# -- the routes --------------------------------------------------------------------------------


@http.GET("/hello")
def hello(name: str = "world") -> dict:
    return {"hello": name}


@http.POST("/hello")
def hello_post(name: str = "world") -> dict:
    return {"hello": name}


@http.GET("/where")
def where(request: Request) -> dict:
    return {
        "remote_addr": request.remote_addr,
        "scheme": request.scheme,
        "host": request.host,
        "url": request.url,
    }


@http.GET("/files/{rest:path}")
def files(rest: str) -> dict:
    return {"rest": rest}


@http.GET("/users/{name}")
def user(name: str) -> dict:
    return {"name": name}


@http.GET("/go")
def go(to: str) -> Redirect:
    return Redirect(to)


@http.GET("/away")
def away(to: str) -> Redirect:
    return Redirect(to, external=True)


@http.GET("/session")
def session(sid: Annotated[str, Cookie("sid")] = "none") -> dict:
    return {"sid": sid}


@http.GET("/html-error")
def html_error() -> dict:
    raise BadRequest("<script>alert(1)</script>")


ROUTES = [hello, hello_post, where, files, user, go, away, session, html_error]


def build(**options: Any) -> App:
    options.setdefault("controllers", ROUTES)
    return App(**options)


# -- ways to send a request --------------------------------------------------------------------

Send = Callable[[App], TestResponse]


def get(url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Send:
    sent = {**HOST, **(headers or {})}
    return lambda app: TestClient(app, use_cookies=False).get(url, headers=sent, **kwargs)


def post(url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Send:
    sent = {**HOST, **(headers or {})}
    return lambda app: TestClient(app, use_cookies=False).post(url, headers=sent, **kwargs)


def host(value: str, **headers: str) -> Send:
    return get("/where", headers={"Host": value, **headers})


def raw_path(path_info: str) -> Send:
    """A PATH_INFO as a server hands it over: percent-decoded (``%2e%2e`` is ``..`` here)."""
    return get("/", environ_overrides={"PATH_INFO": path_info})


def headers(count: int) -> dict[str, str]:
    return {f"X-Header-{i}": "1" for i in range(count)}


def redirect_to(location: str, route: str = "/go") -> Send:
    return get(f"{route}?to={quote(location, safe='')}")


def assert_serves_the_next_request(app: App) -> None:
    response = TestClient(app).get("/hello?name=next", headers=HOST)
    assert response.status_code == 200, response.data[:300]
    assert response.json == {"hello": "next"}


def assert_short_json_without_traceback(response: TestResponse) -> dict[str, Any]:
    assert response.headers["Content-Type"] == "application/json"
    text = response.get_data(as_text=True)
    assert len(text) < 400, text
    assert "Traceback" not in text
    assert 'File "' not in text
    assert SECRET not in text
    body = response.json
    assert isinstance(body["message"], str) and body["message"]
    return body


# -- the corpus --------------------------------------------------------------------------------

TRUSTED: dict[str, Any] = {"trusted_hosts": HOSTS}

CASES: list[tuple[str, dict[str, Any], Send, int]] = [
    # trusted hosts
    ("host-not-trusted", TRUSTED, host("evil.example"), 400),
    ("host-lookalike-suffix", TRUSTED, host("evilexample.com"), 400),
    ("host-trusted-name-as-a-prefix", TRUSTED, host("example.com.evil.example"), 400),
    ("host-subdomain-of-an-exact-entry", TRUSTED, host("www.example.com"), 400),
    ("host-lookalike-of-a-dot-entry", TRUSTED, host("evilexample.org"), 400),
    ("host-dot-entry-as-a-prefix", TRUSTED, host("www.example.org.evil.example"), 400),
    ("host-empty", TRUSTED, host(""), 400),
    ("host-with-a-space", TRUSTED, host("exa mple.com"), 400),
    ("host-with-userinfo", TRUSTED, host("example.com@evil.example"), 400),
    ("host-with-a-path", TRUSTED, host("example.com/evil"), 400),
    ("host-with-a-bad-port", TRUSTED, host("example.com:abc"), 400),
    ("host-non-ascii", TRUSTED, host("ex\xc3\xa1mple.com"), 400),
    (
        "forwarded-host-ignored-without-proxy-hops",
        TRUSTED,
        host("evil.example", **{"X-Forwarded-Host": "example.com"}),
        400,
    ),
    (
        "forwarded-host-checked-behind-a-trusted-proxy",
        {**TRUSTED, "proxy_hops": 1},
        host("example.com", **{"X-Forwarded-Host": "evil.example"}),
        400,
    ),
    # header count
    ("headers-above-max-headers", {"limits": Limits(max_headers=10)}, get("/", headers(10)), 431),
    ("headers-above-the-default-max-headers", {}, get("/hello", headers(100)), 431),
    (
        "content-headers-count-as-headers",
        {"limits": Limits(max_headers=10)},
        post("/hello", headers(8), data=b"x", content_type="text/plain"),
        431,
    ),
    (
        "too-many-headers-on-an-unknown-route",
        {"limits": Limits(max_headers=10)},
        get("/nowhere", headers(30)),
        431,
    ),
    # query length
    (
        "query-above-max-query-length",
        {"limits": Limits(max_query_length=100)},
        get("/hello?name=" + "x" * 96),
        414,
    ),
    (
        "query-length-counts-encoded-bytes",
        {"limits": Limits(max_query_length=100)},
        get("/hello?name=" + "%41" * 32),
        414,
    ),
    ("query-above-the-default-max-query-length", {}, get("/hello?name=" + "x" * 8188), 414),
    ("query-too-long-and-malformed", {}, get("/hello?name=%zz" + "x" * 9000), 414),
    ("query-too-long-on-an-unknown-route", {}, get("/nowhere?" + "x" * 9000), 414),
    # redirects
    ("redirect-crlf", {}, redirect_to("/ok\r\nSet-Cookie: admin=1"), 400),
    ("redirect-lf", {}, redirect_to("/ok\nLocation: https://evil.example/"), 400),
    ("redirect-cr", {}, redirect_to("/ok\rX: y"), 400),
    ("redirect-other-host", {}, redirect_to("https://evil.example/"), 400),
    ("redirect-other-host-no-slashes", {}, redirect_to("http:evil.example"), 400),
    ("redirect-other-host-one-slash", {}, redirect_to("https:/evil.example"), 400),
    ("redirect-protocol-relative", {}, redirect_to("//evil.example/"), 400),
    ("redirect-triple-slash", {}, redirect_to("///evil.example/"), 400),
    ("redirect-backslash-trick", {}, redirect_to("/\\evil.example"), 400),
    ("redirect-double-backslash", {}, redirect_to("\\\\evil.example"), 400),
    ("redirect-leading-space", {}, redirect_to(" //evil.example"), 400),
    ("redirect-leading-tab", {}, redirect_to("\t//evil.example"), 400),
    ("redirect-tab-between-the-slashes", {}, redirect_to("/\t/evil.example"), 400),
    ("redirect-leading-control-character", {}, redirect_to("\x01//evil.example"), 400),
    ("redirect-javascript", {}, redirect_to("javascript:alert(1)"), 400),
    ("redirect-data-url", {}, redirect_to("data:text/html,<script>alert(1)</script>"), 400),
    ("redirect-userinfo-trick", {}, redirect_to("//example.com@evil.example"), 400),
    (
        "redirect-external-still-refuses-crlf",
        {},
        redirect_to("https://a.example/\r\nX: y", "/away"),
        400,
    ),
    # {name:path} traversal; a server hands the app a decoded PATH_INFO
    ("traversal-server-decoded-dotdot", {}, raw_path("/files/../secret"), 404),
    ("traversal-server-decoded-climb", {}, raw_path("/files/../../../etc/passwd"), 404),
    ("traversal-server-decoded-deep-climb", {}, raw_path("/files/a/b/../../../etc/passwd"), 404),
    ("traversal-encoded-upper-case", {}, get("/files/%2E%2E/secret"), 404),
    ("traversal-encoded-first-dot", {}, get("/files/%2e./secret"), 404),
    ("traversal-encoded-second-dot", {}, get("/files/.%2e/secret"), 404),
    ("traversal-encoded-slashes", {}, get("/files/..%2f..%2fetc%2fpasswd"), 404),
    ("traversal-encoded-everything", {}, get("/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd"), 404),
    ("traversal-with-a-query", {}, get("/files/../secret?download=1"), 404),
    ("traversal-with-a-trailing-slash", {}, get("/files/a/../"), 404),
    ("traversal-absolute-path-value", {}, get("/files//etc/passwd"), 404),
    ("traversal-in-a-plain-parameter", {}, get("/users/%2e%2e"), 404),
    # cookies and error rendering
    ("error-message-with-html", {}, get("/html-error"), 400),
]


@pytest.mark.parametrize(
    ("options", "send", "status"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_hostile_request(options, send, status):
    app = build(**options)
    response = send(app)
    assert response.status_code == status, response.data[:300]
    assert_short_json_without_traceback(response)
    assert "Location" not in response.headers
    assert "Set-Cookie" not in response.headers
    assert_serves_the_next_request(app)


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 40
    assert len({case[0] for case in CASES}) == len(CASES)


# -- valid input that looks like an attack -----------------------------------------------------

VALID: list[tuple[str, dict[str, Any], Send, dict[str, Any]]] = [
    ("host-trusted", TRUSTED, host("example.com"), {"host": "example.com"}),
    ("host-trusted-with-a-port", TRUSTED, host("example.com:8443"), {"host": "example.com:8443"}),
    ("host-dot-entry-itself", TRUSTED, host("example.org"), {"host": "example.org"}),
    ("host-dot-entry-subdomain", TRUSTED, host("www.example.org"), {"host": "www.example.org"}),
    (
        "host-dot-entry-deep-subdomain",
        TRUSTED,
        host("a.b.example.org"),
        {"host": "a.b.example.org"},
    ),
    # RFC 9110 §4.2.3: the host is case-insensitive; a client may send it in upper case.
    ("host-in-upper-case", TRUSTED, host("EXAMPLE.COM"), {"scheme": "http"}),
    (
        "forwarded-host-ignored-for-a-trusted-host",
        TRUSTED,
        host("example.com", **{"X-Forwarded-Host": "evil.example"}),
        {"host": "example.com"},
    ),
    ("any-host-without-trusted-hosts", {}, host("anything.example"), {"host": "anything.example"}),
    ("headers-at-max-headers", {"limits": Limits(max_headers=10)}, get("/hello", headers(9)), {}),
    ("headers-at-the-default-max-headers", {}, get("/hello", headers(99)), {}),
    (
        "query-at-max-query-length",
        {"limits": Limits(max_query_length=100)},
        get("/hello?name=" + "x" * 95),
        {"hello": "x" * 95},
    ),
    (
        "query-at-the-default-max-query-length",
        {},
        get("/hello?name=" + "x" * 8187),
        {"hello": "x" * 8187},
    ),
    ("double-encoded-dotdot-is-a-literal", {}, get("/files/%252e%252e/x"), {"rest": "%2e%2e/x"}),
    ("dots-in-a-name", {}, get("/files/a..b/..c/d.."), {"rest": "a..b/..c/d.."}),
    ("dot-segment", {}, get("/files/a/./b"), {"rest": "a/./b"}),
    ("empty-inner-segment", {}, get("/files/a//b"), {"rest": "a//b"}),
    (
        "cookie-many",
        {},
        get("/session", {"Cookie": "; ".join(f"c{i}=v" for i in range(300)) + "; sid=z"}),
        {"sid": "z"},
    ),
    ("cookie-empty-pairs", {}, get("/session", {"Cookie": "a=b; =; ;; sid=ok"}), {"sid": "ok"}),
    (
        "cookie-long-value",
        {},
        get("/session", {"Cookie": "sid=" + "v" * 4000}),
        {"sid": "v" * 4000},
    ),
    ("cookie-utf8", {}, get("/session", {"Cookie": "sid=caf\xc3\xa9"}), {"sid": "café"}),
    ("cookie-percent-is-literal", {}, get("/session", {"Cookie": "sid=%ff"}), {"sid": "%ff"}),
    ("cookie-first-of-duplicates", {}, get("/session", {"Cookie": "sid=1; sid=2"}), {"sid": "1"}),
    # a malformed pair is dropped, the request goes on (tests/test_params_hardening.py)
    (
        "cookie-invalid-utf8-is-dropped",
        {},
        get("/session", {"Cookie": "sid=\xff\xfe"}),
        {"sid": "none"},
    ),
]


@pytest.mark.parametrize(
    ("options", "send", "expected"), [case[1:] for case in VALID], ids=[case[0] for case in VALID]
)
def test_unusual_but_valid_request(options, send, expected):
    app = build(**options)
    response = send(app)
    assert response.status_code == 200, response.data[:300]
    body = response.json
    assert {key: body[key] for key in expected} == expected


# -- hosts and proxies -------------------------------------------------------------------------

FORWARDED = {
    "X-Forwarded-For": "203.0.113.7, 198.51.100.2",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "public.example",
    "X-Forwarded-Port": "8443",
}
PEER = {"REMOTE_ADDR": "10.0.0.1"}  # the proxy's address, as the server sees the connection


def where_seen(app: App, forwarded: dict[str, str] = FORWARDED) -> dict[str, Any]:
    response = TestClient(app).get(
        "/where", headers={"Host": "internal:8000", **forwarded}, environ_base=PEER
    )
    assert response.status_code == 200, response.data[:300]
    return response.json


def test_proxy_headers_are_ignored_without_proxy_hops():
    # Any client can send X-Forwarded-*: without a trusted proxy they mean nothing.
    assert where_seen(build()) == {
        "remote_addr": "10.0.0.1",
        "scheme": "http",
        "host": "internal:8000",
        "url": "http://internal:8000/where",
    }


def test_proxy_headers_are_honoured_with_proxy_hops():
    # One proxy: its own entry is the last one of each header; earlier ones are the client's.
    assert where_seen(build(proxy_hops=1)) == {
        "remote_addr": "198.51.100.2",
        "scheme": "https",
        "host": "public.example:8443",
        "url": "https://public.example:8443/where",
    }


def test_two_proxy_hops_read_two_entries_back():
    seen = where_seen(
        build(proxy_hops=2),
        {"X-Forwarded-For": "203.0.113.7, 198.51.100.2", "X-Forwarded-Proto": "https, https"},
    )
    assert (seen["remote_addr"], seen["scheme"]) == ("203.0.113.7", "https")


def test_fewer_forwarded_entries_than_hops_are_ignored():
    # With 2 trusted proxies a single X-Forwarded-Proto did not come through both: ignored.
    seen = where_seen(build(proxy_hops=2), {"X-Forwarded-Proto": "https"})
    assert seen["scheme"] == "http"


def test_proxy_hops_as_proxy_fix_arguments_trust_only_those_headers():
    seen = where_seen(build(proxy_hops={"x_for": 1}))
    assert seen == {
        "remote_addr": "198.51.100.2",
        "scheme": "http",
        "host": "internal:8000",
        "url": "http://internal:8000/where",
    }


def test_proxy_hops_do_not_leak_between_requests():
    app = build(proxy_hops=1)
    assert where_seen(app)["remote_addr"] == "198.51.100.2"
    assert where_seen(app, {})["remote_addr"] == "10.0.0.1"
    assert where_seen(app, {})["scheme"] == "http"


def test_trusted_forwarded_host_is_checked_against_trusted_hosts():
    app = build(proxy_hops=1, trusted_hosts=["public.example"])
    # The proxy answers for public.example; what the client put in Host no longer matters.
    seen = where_seen(app, {"X-Forwarded-Host": "public.example"})
    assert seen["host"] == "public.example"
    refused = TestClient(app).get(
        "/where", headers={"Host": "public.example", "X-Forwarded-Host": "evil.example"}
    )
    assert refused.status_code == 400
    assert refused.json == {"message": "Host 'evil.example' is not trusted."}


@pytest.mark.parametrize(
    "hops", [-1, True, "1", 1.5, {"x_bogus": 1}], ids=["negative", "bool", "str", "float", "kwarg"]
)
def test_bad_proxy_hops_are_configuration_errors(hops):
    with pytest.raises(ConfigurationError, match="proxy_hops"):
        build(proxy_hops=hops)


def test_trusted_hosts_as_one_string_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="trusted_hosts"):
        build(trusted_hosts="example.com")


def test_an_empty_trusted_hosts_list_trusts_no_host():
    """An empty list (say, from an unset environment variable) must fail closed: refused when
    the app is built, or every host refused; never every host accepted."""
    try:
        app = build(trusted_hosts=[])
    except ConfigurationError:
        return
    for name in ("example.com", "localhost", "evil.example"):
        response = TestClient(app).get("/hello", headers={"Host": name})
        assert response.status_code == 400, name


def test_limit_defaults_for_headers_and_query():
    limits = Limits()
    assert (limits.max_headers, limits.max_query_length) == (100, 8192)


# -- cookies -----------------------------------------------------------------------------------


def cookie_app(**options: Any) -> App:
    @http.GET("/login")
    def login(value: str = "abc") -> Response:
        response = Response("ok")
        response.set_cookie("sid", value, **options)
        return response

    return App(controllers=[login])


def set_cookies(app: App, query: str = "") -> list[str]:
    response = TestClient(app).get("/login" + query)
    assert response.status_code == 200
    return response.headers.getlist("Set-Cookie")


def test_set_cookie_is_http_only_and_same_site_lax_by_default():
    (cookie,) = set_cookies(cookie_app())
    assert cookie == "sid=abc; HttpOnly; Path=/; SameSite=Lax"
    assert "Secure" not in cookie


def test_set_cookie_secure():
    (cookie,) = set_cookies(cookie_app(secure=True))
    assert cookie == "sid=abc; Secure; HttpOnly; Path=/; SameSite=Lax"


def test_set_cookie_strict_and_none():
    assert set_cookies(cookie_app(samesite="Strict")) == [
        "sid=abc; HttpOnly; Path=/; SameSite=Strict"
    ]
    (cookie,) = set_cookies(cookie_app(samesite="None", secure=True))
    assert cookie == "sid=abc; Secure; HttpOnly; Path=/; SameSite=None"


def test_set_cookie_script_readable_only_when_asked():
    (cookie,) = set_cookies(cookie_app(httponly=False))
    assert "HttpOnly" not in cookie
    assert "SameSite=Lax" in cookie


def test_a_cookie_value_cannot_inject_a_header_or_an_attribute():
    injected = "?value=" + quote("abc; Domain=evil.example\r\nSet-Cookie: admin=1", safe="")
    (cookie,) = set_cookies(cookie_app(), injected)
    assert "\r" not in cookie and "\n" not in cookie
    # The value is quoted: its ';' cannot end it and start an attribute.
    assert cookie.startswith('sid="abc\\073 Domain=evil.example\\015\\012Set-Cookie: admin=1";')
    assert cookie.endswith("; HttpOnly; Path=/; SameSite=Lax")


def test_delete_cookie_expires_it():
    @http.GET("/logout")
    def logout() -> Response:
        response = Response("bye")
        response.delete_cookie("sid")
        return response

    response = TestClient(App(controllers=[logout])).get("/logout")
    (cookie,) = response.headers.getlist("Set-Cookie")
    assert cookie.startswith("sid=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0")


# -- redirects that are allowed ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "sent"),
    [
        ("/next", "/next"),
        ("/next?page=2#top", "/next?page=2#top"),
        ("next/page", "next/page"),
        ("/a?next=//evil.example", "/a?next=//evil.example"),
        ("/%2f%2fevil.example", "/%2f%2fevil.example"),
        ("/%0d%0aSet-Cookie:x", "/%0d%0aSet-Cookie:x"),
        ("/café", "/caf%C3%A9"),
    ],
    ids=[
        "absolute-path",
        "query-and-fragment",
        "relative-path",
        "other-host-in-the-query",
        "encoded-slashes",
        "encoded-crlf",
        "non-ascii",
    ],
)
def test_redirect_within_the_site(location, sent):
    response = redirect_to(location)(build())
    assert response.status_code == 302, response.data[:300]
    assert response.headers["Location"] == sent
    assert response.headers.getlist("Set-Cookie") == []


def test_redirect_external_is_allowed_when_asked():
    response = redirect_to("https://docs.example.org/guide", "/away")(build())
    assert response.status_code == 302
    assert response.headers["Location"] == "https://docs.example.org/guide"


def test_redirect_status_is_kept():
    @http.GET("/moved")
    def moved() -> Redirect:
        return Redirect("/new", status=308)

    response = TestClient(App(controllers=[moved])).get("/moved")
    assert (response.status_code, response.headers["Location"]) == (308, "/new")


# -- workflow faults and error rendering -------------------------------------------------------


class Failing:
    """A request-scoped service whose factory fails: a parameter resolver raising."""


def failing_service(event: HttpEvent) -> Failing:
    raise RuntimeError(f"cannot build the service: {SECRET}")


class Refusing:
    """A request-scoped service whose factory refuses the request with an HTTPError."""


def refusing_service(event: HttpEvent) -> Refusing:
    raise Unauthorized(headers={"WWW-Authenticate": "Bearer"})


@http.controller("/ctor")
class BrokenController:
    def __init__(self) -> None:
        raise RuntimeError(f"constructor failed: {SECRET}")

    @http.GET("/")
    def show(self) -> str:
        return "unreachable"


@http.GET("/page")
def page(number: int) -> dict:
    return {"number": number}


@http.GET("/boom")
def boom() -> str:
    raise RuntimeError(f"controller failed: {SECRET}")


@http.GET("/denied")
def denied() -> str:
    raise AccessDenied()


@http.GET("/service")
def uses_failing(service: Failing) -> str:
    return "unreachable"


@http.GET("/refused")
def uses_refusing(service: Refusing) -> str:
    return "unreachable"


class Opaque:
    pass


@http.GET("/object")
def returns_an_object() -> Any:
    return Opaque()


@http.GET("/set")
def returns_a_set() -> Any:
    return {1, 2}


@http.GET("/bad-tuple")
def returns_a_bad_tuple() -> Any:
    return ("body", "200")


@http.GET("/bad-status")
def returns_a_bad_status() -> Response:
    return Response("x", status=1000)


@http.GET("/header-injection")
def injects_a_header() -> Response:
    return Response("x", headers={"X-Note": f"a\r\nSet-Cookie: {SECRET}=1"})


FAULT_ROUTES = [
    hello,
    page,
    boom,
    denied,
    uses_failing,
    uses_refusing,
    BrokenController,
    returns_an_object,
    returns_a_set,
    returns_a_bad_tuple,
    returns_a_bad_status,
    injects_a_header,
]

Setup = Callable[[App], None]
FAULT = {"X-Fault": "1"}  # fault listeners act on requests carrying it, not on the next one


def marked(event: HttpEvent) -> bool:
    return "HTTP_X_FAULT" in event.environ


def raising_in(state: str, priority: int = 0) -> Setup:
    def setup(app: App) -> None:
        def fail(event: HttpEvent) -> None:
            if marked(event):
                raise RuntimeError(f"listener failed in {state}: {SECRET}")

        app.listen(state, fail, priority=priority)

    return setup


def listening(state: str, action: Callable[[HttpEvent], Any], priority: int = 0) -> Setup:
    def act(event: HttpEvent) -> None:
        if marked(event):
            action(event)

    return lambda app: app.listen(state, act, priority=priority)


def nothing(app: App) -> None:
    return None


def remove_response(event: HttpEvent) -> None:
    event.response = None


FAULTS: list[tuple[str, dict[str, Any], Setup, str, int]] = [
    # a listener raising, in every state
    ("raise-in-request", {}, raising_in("request"), "/hello", 500),
    ("raise-in-route", {}, raising_in("route"), "/hello", 500),
    ("raise-in-route-fallback", {}, raising_in("route", 2000), "/nowhere", 500),
    ("raise-in-auth", {}, raising_in("auth"), "/hello", 500),
    ("raise-in-resolve-parameters", {}, raising_in("resolve_parameters"), "/hello", 500),
    ("raise-in-controller", {}, raising_in("controller"), "/hello", 500),
    ("raise-in-route-not-found", {}, raising_in("route_not_found"), "/nowhere", 500),
    ("raise-in-method-not-allowed", {}, raising_in("method_not_allowed"), "DELETE /hello", 500),
    ("raise-in-access-denied", {}, raising_in("access_denied"), "/denied", 500),
    ("raise-in-parameters-failed", {}, raising_in("parameters_failed"), "/page?number=x", 500),
    ("raise-in-controller-error", {}, raising_in("controller_error"), "/boom", 500),
    ("raise-in-response", {}, raising_in("response"), "/hello", 500),
    ("raise-in-response-before-rendering", {}, raising_in("response", -200), "/hello", 500),
    # resolvers, constructors, controllers
    ("resolver-raises", {}, nothing, "/service", 500),
    ("resolver-raises-an-http-error", {}, nothing, "/refused", 401),
    ("controller-constructor-raises", {}, nothing, "/ctor", 500),
    ("controller-raises", {}, nothing, "/boom", 500),
    # illegal moves, stalls, loops
    ("illegal-next", {}, listening("auth", lambda e: e.next("controller")), "/hello", 500),
    ("illegal-helper", {}, listening("auth", lambda e: e.not_found()), "/hello", 500),
    ("send-in-response", {}, listening("response", lambda e: e.send("x")), "/hello", 500),
    ("next-to-an-unknown-state", {}, listening("auth", lambda e: e.next("nowhere")), "/hello", 500),
    ("stall-in-route", {}, listening("route", lambda e: e.stop_propagation()), "/hello", 500),
    (
        "stall-after-clear-next",
        {},
        listening("controller", lambda e: e.clear_next(), priority=200),
        "/hello",
        500,
    ),
    # A normal request makes 5 moves; a detour through access_denied makes 6: a loop here.
    (
        "loop",
        {"limits": Limits(max_hops=5)},
        listening("controller", lambda e: e.access_denied()),
        "/hello",
        500,
    ),
    # responses the kernel cannot write
    ("response-removed", {}, listening("response", remove_response), "/hello", 500),
    ("unsupported-return-object", {}, nothing, "/object", 500),
    ("unsupported-return-set", {}, nothing, "/set", 500),
    ("tuple-with-a-string-status", {}, nothing, "/bad-tuple", 500),
    ("status-out-of-range", {}, nothing, "/bad-status", 500),
    ("response-header-with-crlf", {}, nothing, "/header-injection", 500),
]


def fault_app(options: dict[str, Any], setup: Setup, *, debug: bool = False) -> App:
    app = App(
        controllers=FAULT_ROUTES,
        providers=[
            Provider(Failing, failing_service, scope="request"),
            Provider(Refusing, refusing_service, scope="request"),
        ],
        debug=debug,
        **options,
    )
    setup(app)
    return app


def send_fault(app: App, target: str) -> TestResponse:
    method, _, url = target.rpartition(" ")
    return TestClient(app).open(url, method=method or "GET", headers={**HOST, **FAULT})


def error_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "workflowhttp"]


@pytest.mark.parametrize(
    ("options", "setup", "target", "status"),
    [case[1:] for case in FAULTS],
    ids=[case[0] for case in FAULTS],
)
def test_workflow_fault(caplog, options, setup, target, status):
    app = fault_app(options, setup)
    response = send_fault(app, target)
    assert response.status_code == status, response.data[:300]
    body = assert_short_json_without_traceback(response)
    assert "Set-Cookie" not in response.headers
    if status == 500:
        assert body == INTERNAL
        assert error_logs(caplog), "an unexpected error is logged"
    else:
        assert not error_logs(caplog), "an HTTPError is not an error of the app"
    caplog.clear()
    assert_serves_the_next_request(app)
    assert not error_logs(caplog)


@pytest.mark.parametrize(
    ("options", "setup", "target", "status"),
    [case[1:] for case in FAULTS if case[4] == 500],
    ids=[case[0] for case in FAULTS if case[4] == 500],
)
def test_workflow_fault_in_debug_shows_the_traceback(options, setup, target, status):
    app = fault_app(options, setup, debug=True)
    response = send_fault(app, target)
    assert response.status_code == 500, response.data[:300]
    assert response.headers["Content-Type"] == "application/json"
    body = response.json
    assert body["message"] == "Internal Server Error"
    assert isinstance(body["error"], str) and body["error"]
    trace = "".join(body["traceback"])
    assert trace.startswith("Traceback (most recent call last):")
    assert 'File "' in trace
    assert body["error"].split(":")[0] in trace  # the exception's type, at the end
    assert_serves_the_next_request(app)


def test_the_fault_corpus_covers_every_state():
    from workflowhttp.workflow import STATES

    raised_in = {case[0].removeprefix("raise-in-").replace("-", "_") for case in FAULTS}
    assert set(STATES) <= raised_in


def test_a_loop_is_logged_as_a_loop(caplog):
    loop = next(case for case in FAULTS if case[0] == "loop")
    app = fault_app(loop[1], loop[2])
    assert send_fault(app, "/hello").status_code == 500
    assert [r.getMessage() for r in error_logs(caplog)] == [
        "workflow loop: more than 5 moves, last in 'access_denied' (GET /hello)"
    ]
    assert TestClient(app).get("/hello").status_code == 200  # 5 moves: within max_hops


def test_an_exception_message_reaches_the_client_only_in_debug():
    quiet = send_fault(fault_app({}, nothing), "/boom")
    assert quiet.json == INTERNAL
    loud = send_fault(fault_app({}, nothing, debug=True), "/boom")
    assert loud.json["error"] == f"RuntimeError: controller failed: {SECRET}"


def test_an_html_error_message_is_json_not_markup():
    response = TestClient(build()).get("/html-error")
    assert response.headers["Content-Type"] == "application/json"
    assert response.json == {"message": "<script>alert(1)</script>"}


def test_an_http_error_from_a_resolver_keeps_its_headers():
    response = send_fault(fault_app({}, nothing), "/refused")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json == {"message": "Unauthorized"}


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit], ids=lambda e: e.__name__)
@pytest.mark.parametrize("state", ["request", "controller", "response"])
def test_interrupts_are_never_swallowed(state, error):
    def interrupt(event: HttpEvent) -> None:
        raise error()

    app = fault_app({}, listening(state, interrupt))
    with pytest.raises(error):
        send_fault(app, "/hello")


def test_a_stream_failing_midway_is_logged_and_reraised(caplog):
    @http.GET("/stream")
    def stream() -> Response:
        def chunks():
            yield b"first"
            raise RuntimeError(f"the source broke: {SECRET}")

        return Response(chunks())

    app = App(controllers=[stream, hello])
    # The status is sent already: re-raising is what makes a server abort the connection.
    with pytest.raises(RuntimeError, match="the source broke"):
        TestClient(app).get("/stream")
    assert any("streamed response body failed midway" in r.getMessage() for r in error_logs(caplog))
    assert_serves_the_next_request(app)


# -- isolation ---------------------------------------------------------------------------------


class Scoped:
    """A request-scoped service: it carries its own request's token."""

    def __init__(self, token: str) -> None:
        self.token = token


def scoped_service(event: HttpEvent) -> Scoped:
    return Scoped(event.request.args.get("q", ""))


class Counter:
    """A singleton, for comparison."""


@http.controller("/iso")
class Isolated:
    def __init__(self, scoped: Scoped, counter: Counter) -> None:
        self.scoped = scoped
        self.counter = counter
        self.token = scoped.token

    @http.POST("/{token}")
    def echo(
        self,
        token: str,
        event: HttpEvent,
        header: Annotated[str, Header("X-Token")],
        cookie: Annotated[str, Cookie("token")],
        body: Annotated[bytes, Body()],
        query: Annotated[str, Query("q")],
        name: str = "",
    ) -> dict:
        time.sleep(0.0005)  # give the other threads a chance to run inside this request
        return {
            "path": token,
            "header": header,
            "cookie": cookie,
            "body": body.decode(),
            "query": query,
            "store": event.store.get("token"),
            "service": self.scoped.token,
            "controller": self.token,
            "parameter": name,
            "scoped": id(self.scoped),
            "instance": id(self),
            "counter": id(self.counter),
        }


class Watcher:
    """Listeners that record what a request finds on arrival and mutate what it carries."""

    def __init__(self, *, mutate_early: bool = False) -> None:
        self.mutate_early = mutate_early
        self.lock = threading.Lock()
        self.problems: list[str] = []
        self.instances: list[Any] = []

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)

    def on_request(self, event: HttpEvent) -> None:
        if event.store:
            self.problem(f"store carried over: {event.store!r}")
        if event.parameters:
            self.problem(f"parameters carried over: {event.parameters!r}")
        if event.path_params:
            self.problem(f"path_params carried over: {event.path_params!r}")
        event.store["token"] = event.request.args.get("q", "")

    def on_auth(self, event: HttpEvent) -> None:
        # Before the parameters are resolved: this must stay within this request too.
        if self.mutate_early:
            event.parameters["early"] = event.store["token"]

    def on_controller(self, event: HttpEvent) -> None:
        if "early" in event.parameters:
            self.problem("a value set before resolution survived it")
        event.parameters["name"] = "seen-" + event.store["token"]


def isolation_app(watcher: Watcher) -> App:
    app = App(
        controllers=[Isolated, hello],
        providers=[Provider(Scoped, scoped_service, scope="request"), Counter],
    )
    app.listen("request", watcher.on_request)
    app.listen("auth", watcher.on_auth)
    app.listen("controller", watcher.on_controller)
    return app


def isolated_request(client: TestClient, token: str) -> dict[str, Any]:
    response = client.post(
        f"/iso/{token}?q={token}",
        data=token.encode(),
        content_type="text/plain",
        headers={"X-Token": token, "Cookie": f"token={token}"},
    )
    assert response.status_code == 200, response.data[:300]
    return response.json


def expected_echo(token: str) -> dict[str, str]:
    return {
        "path": token,
        "header": token,
        "cookie": token,
        "body": token,
        "query": token,
        "store": token,
        "service": token,
        "controller": token,
        "parameter": "seen-" + token,
    }


def echoed(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: answer[key] for key in expected_echo("")}


def test_services_controllers_and_store_are_new_per_request():
    watcher = Watcher()
    app = isolation_app(watcher)
    client = TestClient(app, use_cookies=False)
    answers = [isolated_request(client, f"t{i}") for i in range(5)]
    for i, answer in enumerate(answers):
        assert echoed(answer) == expected_echo(f"t{i}")
    assert len({answer["counter"] for answer in answers}) == 1  # the singleton is shared
    assert watcher.problems == []


BUILT: list[Any] = []  # kept alive, so no id can be reused while a test compares them


class Recorded:
    def __init__(self) -> None:
        BUILT.append(self)


@http.controller("/recorded")
class RecordedController:
    def __init__(self, recorded: Recorded) -> None:
        BUILT.append(self)

    @http.GET("/")
    def show(self) -> str:
        return "ok"


def test_request_scoped_instances_are_distinct_objects():
    BUILT.clear()
    app = App(controllers=[RecordedController], providers=[Provider(Recorded, scope="request")])
    client = TestClient(app)
    for _ in range(4):
        assert client.get("/recorded").status_code == 200
    assert len(BUILT) == 8
    assert len({id(item) for item in BUILT}) == 8
    BUILT.clear()


def test_a_store_entry_never_reaches_the_next_request():
    seen: list[dict[str, Any]] = []
    app = build()

    @app.listen(http_workflow.on_request)
    def fill(event: HttpEvent) -> None:
        seen.append(dict(event.store))
        event.store["user"] = event.request.args.get("name")

    for name in ("alice", "bob", "carol"):
        assert TestClient(app).get(f"/hello?name={name}").json == {"hello": name}
    assert seen == [{}, {}, {}]


@pytest.fixture
def shared_defaults_reset() -> Iterator[None]:
    """Undo what a leaking mutation leaves in a module-level default, before and after.

    Were a request's empty ``parameters``/``path_params`` a dict shared by every event (see
    /tmp/wf_bugs.md), a failing test here would also break the tests that run after it.
    """
    from workflowhttp import events

    def reset() -> None:
        shared = getattr(events, "_NO_PARAMS", None)
        if isinstance(shared, dict):
            shared.clear()

    reset()
    yield
    reset()


@pytest.mark.usefixtures("shared_defaults_reset")
@pytest.mark.parametrize("state", ["auth", "route_not_found"], ids=lambda s: f"mutated-in-{s}")
def test_parameters_mutated_before_resolution_do_not_leak(state):
    """A listener writing into ``event.parameters``/``path_params`` before they are resolved
    writes into its own request's dicts, never into one the next request starts with."""
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []
    app = build()

    @app.listen(http_workflow.on_request, priority=-1)
    def look(event: HttpEvent) -> None:
        seen.append((dict(event.parameters), dict(event.path_params)))

    @app.listen(state)
    def mutate(event: HttpEvent) -> None:
        event.parameters["leaked"] = "parameters"
        event.path_params["leaked"] = "path"

    client = TestClient(app)
    client.get("/nowhere" if state == "route_not_found" else "/hello")
    assert client.get("/hello?name=x").json == {"hello": "x"}
    assert client.get("/users/bob").json == {"name": "bob"}
    assert seen == [({}, {}), ({}, {}), ({}, {})]


def test_parameters_mutated_by_a_listener_stay_in_their_request():
    app = build()

    @app.listen(http_workflow.on_controller)
    def shout(event: HttpEvent) -> None:
        if event.request.headers.get("X-Shout"):
            event.parameters["name"] = event.parameters["name"].upper()

    client = TestClient(app)
    assert client.get("/hello?name=ann", headers={"X-Shout": "1"}).json == {"hello": "ANN"}
    assert client.get("/hello?name=ann").json == {"hello": "ann"}
    assert client.get("/hello").json == {"hello": "world"}


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("shared_defaults_reset")
def test_eight_threads_each_get_their_own_answers():
    watcher = Watcher(mutate_early=True)
    app = isolation_app(watcher)
    threads, per_thread = 8, 40
    start = threading.Barrier(threads, timeout=10)

    def run(thread: int) -> list[str]:
        client = TestClient(app, use_cookies=False)
        wrong = []
        start.wait()
        for number in range(per_thread):
            token = f"t{thread}x{number}"
            answer = isolated_request(client, token)
            if echoed(answer) != expected_echo(token):
                wrong.append(f"{token}: {answer}")
        return wrong

    with ThreadPoolExecutor(max_workers=threads) as pool:
        outcomes = list(pool.map(run, range(threads), timeout=50))
    wrong = [item for outcome in outcomes for item in outcome]
    assert wrong == [], wrong[:5]
    assert watcher.problems == [], watcher.problems[:5]
    # The watcher renames every request's `name` parameter (to "seen-" + its ?q= token).
    after = TestClient(app).get("/hello?name=next", headers=HOST)
    assert after.status_code == 200
    assert after.json == {"hello": "seen-"}
