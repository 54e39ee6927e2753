"""Routing under hostile paths: matching is linear in the path, bounded by the route tree, and
a parameter never takes a value that could climb out of a directory; compiled callables do not
accumulate; classmethod routes work.

The paths are put straight into a WSGI environ: the server's URI limits do not apply to
``PATH_INFO`` in-process, which is the point (an app behind a lenient server sees them).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import workflowhttp.routing.router as router_module
from tests.hardening import LARGE, SMALL, assert_linear, call
from workflowhttp import App, ConfigurationError, HttpEvent, Route, http, http_workflow
from workflowhttp.routing import Miss
from workflowhttp.testing import TestClient

# -- item 2: several parameters in one segment -------------------------------------------------


@http.GET("/f/{a}-{b}-{c}.txt")
def three_dashes(a: str, b: str, c: str) -> dict:
    return {"a": a, "b": b, "c": c}


@http.GET("/g/{a}--{b}--{c}.tar")
def double_dashes(a: str, b: str, c: str) -> dict:
    return {"a": a, "b": b, "c": c}


@http.GET("/h/{name}.{ext}")
def name_and_ext(name: str, ext: str) -> dict:
    return {"name": name, "ext": ext}


@http.GET("/i/v{a}-{b}-{c}x")
def prefixed(a: str, b: str, c: str) -> dict:
    return {"a": a, "b": b, "c": c}


MIXED = [three_dashes, double_dashes, name_and_ext, prefixed]

# (id, the path before the segment's filler, the filler repeated, the segment's end); the
# benign input of the same size repeats "z" instead. None of them matches a route.
HOSTILE_SEGMENTS = [
    ("three-params-dashes", "/f/", "-", ""),
    ("three-params-dashes-wrong-suffix", "/f/", "-", ".txd"),
    ("three-params-one-separator-short", "/f/", "z", "-.txt"),
    ("two-char-separator-dashes", "/g/", "-", ""),
    ("two-char-separator-near-misses", "/g/", "-z", "-.tar"),
    ("two-params-no-separator", "/h/", "z", ""),
    ("prefix-and-suffix-dashes", "/i/v", "-", ""),
]


@pytest.mark.parametrize(
    ("prefix", "filler", "end"),
    [case[1:] for case in HOSTILE_SEGMENTS],
    ids=[case[0] for case in HOSTILE_SEGMENTS],
)
def test_a_segment_with_several_parameters_is_matched_in_linear_time(prefix, filler, end):
    app = App(controllers=MIXED)

    def send(fill: str) -> Callable[[int], Any]:
        def run(size: int) -> None:
            status, _ = call(app, prefix + fill * (size // len(fill)) + end)
            assert status == 404

        return run

    assert_linear(send(filler), send("z"))
    assert call(app, "/f/x-y-z.txt") == (200, b'{"a":"x","b":"y","c":"z"}')


MATCHES = [
    ("three-params", "/f/x-y-z.txt", {"a": "x", "b": "y", "c": "z"}),
    ("last-param-takes-the-rest", "/f/x-y-z-w.txt", {"a": "x", "b": "y", "c": "z-w"}),
    ("last-param-may-hold-the-suffix", "/f/x-y-z.txt.txt", {"a": "x", "b": "y", "c": "z.txt"}),
    ("two-char-separator", "/g/a--b---c.tar", {"a": "a", "b": "b", "c": "-c"}),
    ("first-dot-splits", "/h/report.tar.gz", {"name": "report", "ext": "tar.gz"}),
    ("prefix-and-suffix", "/i/v1-2-3x", {"a": "1", "b": "2", "c": "3"}),
]


@pytest.mark.parametrize(
    ("path", "expected"), [case[1:] for case in MATCHES], ids=[case[0] for case in MATCHES]
)
def test_the_matching_rule_of_a_mixed_segment(path, expected):
    """Every parameter but the last ends at the first occurrence of the text after it."""
    client = TestClient(App(controllers=MIXED))
    response = client.get(path)
    assert (response.status_code, response.json) == (200, expected)


NON_MATCHES = [
    ("empty-first-param", "/f/-y-z.txt"),
    ("empty-middle-param", "/f/x--z.txt"),
    ("empty-last-param", "/f/x-y-.txt"),
    ("missing-suffix", "/f/x-y-z.txd"),
    ("too-few-separators", "/f/x-y.txt"),
    ("prefix-overlaps-suffix", "/i/vx"),
]


@pytest.mark.parametrize(
    "path", [case[1] for case in NON_MATCHES], ids=[case[0] for case in NON_MATCHES]
)
def test_a_mixed_segment_that_does_not_fit_is_404(path):
    assert call(App(controllers=MIXED), path)[0] == 404


def counting_search(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the calls of the router's depth-first search (it recurses through the name)."""
    calls = [0]
    search = router_module._search

    def counted(*args: Any) -> Any:
        calls[0] += 1
        return search(*args)

    monkeypatch.setattr(router_module, "_search", counted)
    return calls


SHAPES = ("{p%d}", "{p%d}-{q%d}", "s{p%d}", "{p%d}.{q%d}")


def sibling_routes(depth: int) -> Iterator[Any]:
    """Every combination of parameter shapes over ``depth`` segments: a wide, deep tree."""
    for number in range(len(SHAPES) ** depth):
        segments = []
        for level in range(depth):
            shape = SHAPES[(number // len(SHAPES) ** level) % len(SHAPES)]
            segments.append(shape.replace("%d", str(level)))

        def endpoint(**path_params: str) -> str:  # takes whatever placeholders the path has
            return "found"

        endpoint.__name__ = f"route{number}"
        yield http.GET("/" + "/".join(segments) + f"/end{number}")(endpoint)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["1KB-path", "256KB-path"])
def test_the_tree_search_visits_each_node_once_at_most(monkeypatch, size):
    """A path that every parameter sibling matches and no route ends makes the search try
    every branch: it still reaches each node of the tree once at most."""
    depth = 4
    app = App(controllers=list(sibling_routes(depth)))
    nodes = sum(len(SHAPES) ** level for level in range(depth + 1)) + len(SHAPES) ** depth
    calls = counting_search(monkeypatch)
    segment = "s" + "a.a-a" * (size // (5 * depth))  # matches all four shapes
    status, _ = call(app, "/" + "/".join([segment] * depth) + "/nothing")
    assert status == 404
    assert 0 < calls[0] <= nodes + 1
    calls[0] = 0
    many = "/" + "/".join(["sa.a-a"] * (size // 7))  # far deeper than the tree
    assert call(app, many)[0] == 404
    assert calls[0] <= nodes + 1
    assert call(app, "/" + "/".join(["s1"] * depth) + "/end0") == (200, b"found")


# -- item 18: what a parameter value never holds -----------------------------------------------


@http.GET("/files/{rest:path}")
def files(rest: str) -> dict:
    return {"rest": rest}


@http.GET("/users/{name}")
def user(name: str) -> dict:
    return {"name": name}


@http.GET("/docs/{name}.{ext}")
def document(name: str, ext: str) -> dict:
    return {"name": name, "ext": ext}


@http.GET("/pairs/{a}-{b}")
def pair(a: str, b: str) -> dict:
    return {"a": a, "b": b}


REFUSED = [
    ("path-backslash", "/files/a\\b"),
    ("path-backslash-traversal", "/files/..\\..\\etc\\passwd"),
    ("path-nul", "/files/a\x00b"),
    ("path-nul-at-the-end", "/files/passwd\x00.png"),
    ("path-dotdot-segment", "/files/a/../b"),
    ("name-backslash", "/users/..\\x"),
    ("name-nul", "/users/a\x00"),
    ("name-dotdot", "/users/.."),
    ("mixed-nul", "/docs/a\x00.txt"),
    ("mixed-backslash", "/docs/..\\a.txt"),
    ("mixed-dotdot-value", "/pairs/..-x"),
    ("mixed-dotdot-last-value", "/pairs/x-.."),
]


@pytest.mark.parametrize("path", [case[1] for case in REFUSED], ids=[case[0] for case in REFUSED])
def test_a_parameter_never_holds_a_backslash_a_nul_or_dotdot(path):
    app = App(controllers=[files, user, document, pair])
    status, body = call(app, path)
    assert (status, body) == (404, b'{"message":"Not Found"}')
    assert call(app, "/files/a/b.txt") == (200, b'{"rest":"a/b.txt"}')  # the next one is served


ACCEPTED = [
    ("dots-inside-names", "/files/a..b/..c", {"rest": "a..b/..c"}),
    ("one-dot-segment", "/users/.", {"name": "."}),
    ("dotdot-inside-a-mixed-value", "/pairs/a..-b", {"a": "a..", "b": "b"}),
]


@pytest.mark.parametrize(
    ("path", "expected"), [case[1:] for case in ACCEPTED], ids=[case[0] for case in ACCEPTED]
)
def test_values_near_the_refused_ones_are_served(path, expected):
    client = TestClient(App(controllers=[files, user, document, pair]))
    assert client.get(path).json == expected


# -- item 12: callables claimed with event.route_found() ---------------------------------------


def live_routes() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, Route))


def test_fresh_callables_claimed_per_request_do_not_accumulate():
    app = App()

    def fresh_handler() -> Callable[[], str]:
        return lambda: "claimed"  # a new function object each time

    @app.listen(http_workflow.on_route, priority=101)
    def claim(event: HttpEvent) -> None:
        event.route_found(fresh_handler())

    client = TestClient(app)
    for _ in range(300):
        assert client.get("/anything").text == "claimed"
    after_some = live_routes()
    for _ in range(1500):
        client.get("/anything")
    assert live_routes() <= after_some + 2


def test_the_same_callable_is_compiled_once():
    app = App()
    seen: list[Route] = []

    def handler(event: HttpEvent) -> str:
        assert event.route is not None
        seen.append(event.route)
        return "ok"

    @app.listen(http_workflow.on_route, priority=101)
    def claim(event: HttpEvent) -> None:
        event.route_found(handler)

    client = TestClient(app)
    client.get("/a")
    client.get("/b")
    assert len(seen) == 2 and seen[0] is seen[1]
    seen.clear()


# -- item 16: classmethod routes ---------------------------------------------------------------


def counter_classes() -> tuple[type, type]:
    """A controller with classmethod routes (both decorator orders) and a subclass of it."""

    class Counter:
        prefix = "count"

        def __init__(self) -> None:
            raise AssertionError("a classmethod route needs no instance")

        @http.GET("/above/{n}")
        @classmethod
        def above(cls, n: int, step: int = 1) -> dict:
            return {"prefix": cls.prefix, "next": n + step}

        @classmethod
        @http.GET("/below/{n}")
        def below(cls, n: int, step: int = 1) -> dict:
            return {"prefix": cls.prefix, "next": n + step}

    class SubCounter(Counter):
        prefix = "sub"

    return Counter, SubCounter


@pytest.mark.parametrize("order", ["/above", "/below"], ids=["route-above", "classmethod-above"])
def test_a_classmethod_route_is_called_on_its_class(order):
    counter, _ = counter_classes()
    client = TestClient(App(controllers=[counter]))
    response = client.get(f"{order}/41?step=2")
    assert (response.status_code, response.json) == (200, {"prefix": "count", "next": 43})


def test_an_inherited_classmethod_route_gets_the_subclass():
    _, sub_counter = counter_classes()
    client = TestClient(App(controllers=[sub_counter]))
    assert client.get("/below/1").json == {"prefix": "sub", "next": 2}


def test_a_route_on_a_non_callable_is_still_refused():
    with pytest.raises(ConfigurationError, match="not callable"):
        http.GET("/x")(property(lambda self: 1))


@pytest.mark.parametrize(
    "path",
    [
        "/api/a",
        "/api/a/b/c",
        "/api/static",
        "/api/static/x",
        "/api/..",
        "/api/a/../b",
        "/api/a\\b",
        "/files/1/rest/of/it",
        "/files/1",
        "/api",
    ],
)
def test_the_straight_descent_to_a_path_parameter_agrees_with_the_search(path):
    from workflowhttp.routing.router import Router, _search

    app = App(controllers=[_rest_api, _rest_static, _rest_files])
    router: Router = app.router
    found = router.match("GET", router.request_path({"PATH_INFO": path}))
    route = None if isinstance(found, Miss) else found[0]
    captures: list[str] = []
    allowed: set[str] = set()
    segments = router.request_path({"PATH_INFO": path})[1:].split("/")
    expected = _search(router._root, segments, 0, "GET", captures, allowed)
    assert route is expected
    if not isinstance(found, Miss):
        assert found[1] == dict(zip(route.param_names, captures, strict=True))


@http.GET("/api/{rest:path}")
def _rest_api(rest: str) -> str:
    return rest


@http.GET("/api/static")
def _rest_static() -> str:
    return "static"


@http.GET("/files/{id}/{rest:path}")
def _rest_files(id: int, rest: str) -> str:
    return rest
