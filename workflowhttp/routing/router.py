"""The compiled router: routes, the static table and the segment tree (see the package)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

from ..errors import BadRequest, ConfigurationError
from .paths import ANY, BAD_PERCENT, METHODS, PARAM, normalize_path, parse_template

__all__ = ["Match", "Miss", "Route", "Router"]


class Route:
    """A compiled route: one path template, its methods, and how to call its controller.

    Attributes:
        path: The full path template, the controller's base path included.
        methods: The methods it answers (``("*",)`` for ``ANY``).
        groups: Class groups first, then the method's, without duplicates.
        name: The route name (explicit, or ``Class.method`` / the function's name).
        data: Values attached with ``.data(key, value)``.
        endpoint: The controller function (for a class controller, the function on the class).
        controller: The controller class, or ``None`` for a plain function.
        mounted: The prefix of the mount (``http.mount``) the route is in, ``""`` for none.
    """

    __slots__ = (
        "path",
        "methods",
        "groups",
        "name",
        "explicit_name",
        "data",
        "description",
        "endpoint",
        "controller",
        "mounted",
        "param_names",
        "plan",
        "invoke",
        "middlewares",
    )

    def __init__(
        self,
        path: str,
        methods: tuple[str, ...],
        endpoint: Callable[..., Any],
        *,
        name: str | None = None,
        groups: tuple[str, ...] = (),
        data: dict[str, Any] | None = None,
        description: str = "",
        controller: type | None = None,
    ) -> None:
        self.path = normalize_path(path)
        self.methods = methods
        self.endpoint = endpoint
        self.controller = controller
        self.mounted = ""
        self.explicit_name = name is not None
        self.name = name or (
            f"{controller.__name__}.{endpoint.__name__}" if controller else endpoint.__name__
        )
        self.groups = groups
        self.data = dict(data or {})
        self.description = description
        self.param_names = tuple(name for name, _ in parse_template(self.path))
        # Filled in by the app: the parameter plan, the callable that runs the controller, and
        # the middlewares that run once the route is known (compiled, in order).
        self.plan: Any = None
        self.invoke: Callable[[Any], Any] = _unbound
        self.middlewares: tuple[Any, ...] = ()

    def url(self, **params: Any) -> str:
        """Build this route's path from ``params`` (percent-encoded)."""
        missing = set(self.param_names) - set(params)
        if missing:
            raise ValueError(f"route {self.name!r} needs {', '.join(sorted(missing))}")

        def fill(match: re.Match[str]) -> str:
            value = str(params.pop(match.group(1)))
            safe = "/" if match.group(2) == "path" else ""
            return quote(value, safe=safe)

        path = PARAM.sub(fill, self.path)
        if params:
            path += "?" + urlencode(params, doseq=True)
        return path

    def __repr__(self) -> str:
        return f"<Route {'|'.join(self.methods)} {self.path} {self.name}>"


def _described(route: Route) -> str:
    """Name ``route`` for an error message, with the mount it is in."""
    if route.mounted:
        return f"{route.name} (mounted at {route.mounted})"
    return route.name


def _unbound(event: Any) -> Any:
    raise RuntimeError("route is not bound to an app")


Match = tuple[Route, dict[str, str]]
"""What :meth:`Router.match` returns on a hit: ``(route, params)``, the route for the method and
its path parameters. Tell it from a :class:`Miss` with ``isinstance(found, Miss)``.

PERF: a plain pair, not a class: a ``NamedTuple`` would cost every matched request ~0.3 µs
(its ``__new__`` is Python code), 5% of a hello-world request.
"""


class Miss(NamedTuple):
    """What :meth:`Router.match` returns when no route takes the request.

    ``allowed`` is empty when no route has the path (404), else the methods for ``Allow``
    (405; ``OPTIONS`` is answered 204 with them).
    """

    allowed: tuple[str, ...]


NO_ROUTE = Miss(())
"""The miss of a path no route has (one object: a 404 allocates nothing for it)."""


class _Node:
    """One segment position of the segment tree."""

    __slots__ = ("static", "patterns", "param", "rest", "suffixed", "leaf")

    def __init__(self) -> None:
        self.static: dict[str, _Node] = {}
        self.patterns: dict[tuple[str, ...], tuple[_SegmentPattern, _Node]] = {}
        self.param: _Node | None = None
        self.rest: _Node | None = None  # the {name:path} leaf below this node
        # {name:path} followed by static segments ("/{resource:path}/_hooks/route"): the
        # leaf of each static suffix, longest suffix first.
        self.suffixed: dict[tuple[str | None, ...], _Node] = {}
        self.leaf: dict[str, Route] | None = None


class Router:
    """The compiled route table of one app."""

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self._static: dict[str, dict[str, Route]] = {}
        self._root = _Node()
        self._names: dict[str, Route | None] = {}
        self._shared: dict[str, list[Route]] = {}  # one endpoint's routes at several paths
        # SECURITY: a bounded cache, so a fresh callable per request (a lambda) cannot grow it
        # without end; each one costs a compile, the last ADOPTED_CALLABLES stay compiled.
        self._adopted = functools.lru_cache(maxsize=ADOPTED_CALLABLES)(self._compile_callable)
        self.adopt_callable: Callable[[Callable[..., Any]], Route] | None = None

    def add(self, *routes: Route) -> None:
        """Add ``routes`` all together, or none of them when one is a duplicate.

        Raises:
            ConfigurationError: two routes share a method and a path (``ANY`` overlaps every
                method), or an explicit name names two paths.
        """
        placed: list[tuple[_Node, Route]] = []
        pending: dict[int, dict[str, Route]] = {}
        names: dict[str, Route | None] = {}
        for route in routes:
            node = self._node_for(route.path)
            taken = {**(node.leaf or {}), **pending.get(id(node), {})}
            for method in route.methods:
                other = taken.get(method)
                if other is not None:
                    raise ConfigurationError(
                        f"duplicate route {method} {route.path}: {_described(other)} and "
                        f"{_described(route)}"
                    )
                taken[method] = route
            if ANY in taken and len(taken) > 1:
                raise ConfigurationError(
                    f"duplicate route {route.path}: ANY overlaps other methods "
                    f"({_described(route)})"
                )
            pending[id(node)] = taken
            if route.name not in names and route.name not in self._names:
                names[route.name] = route
            else:
                known = names[route.name] if route.name in names else self._names[route.name]
                if known is not None and known.endpoint is route.endpoint:
                    # One endpoint at several paths shares its name (Flask's endpoints):
                    # url_for picks the path whose parameters it is given.
                    self._shared.setdefault(route.name, [known]).append(route)
                elif known is None or known.path != route.path:
                    if route.explicit_name or (known is not None and known.explicit_name):
                        where = known.path if known else "other paths"
                        raise ConfigurationError(
                            f"route name {route.name!r} names both {where} and {route.path}"
                        )
                    names[route.name] = None  # default names alike: url_for says ambiguous
            placed.append((node, route))
        for node, route in placed:
            leaf = node.leaf
            if leaf is None:
                leaf = node.leaf = {}
            leaf.update(dict.fromkeys(route.methods, route))
            if not PARAM.search(route.path):
                self._static[route.path] = leaf
            self.routes.append(route)
        self._names.update(names)

    def detach(self, *routes: Route) -> None:
        """Take ``routes`` out of matching; they stay listed (``routes``, the OpenAPI
        document) and nameable (``url_for``).

        For routes whose requests a listener claims before the router is asked (the hooks'
        registration routes, matched by their own router in ``route``): PERF: left in the
        tree, a ``{name:path}`` suffix at the root would make every miss take the full
        search, through one more branch.
        """
        for route in routes:
            node = self._node_for(route.path)
            leaf = node.leaf
            if leaf is not None:
                for method in route.methods:
                    if leaf.get(method) is route:
                        del leaf[method]
                if not leaf:
                    node.leaf = None
                    self._static.pop(route.path, None)
        _prune(self._root)

    def _node_for(self, path: str) -> _Node:
        node = self._root
        if path == "/":
            return node
        segments = path[1:].split("/")
        for index, segment in enumerate(segments):
            params = parse_template(segment)
            if not params:
                node = node.static.setdefault(segment, _Node())
                continue
            converter = params[0][1]
            if len(params) == 1 and PARAM.fullmatch(segment):
                if converter == "path":
                    if index == len(segments) - 1:
                        node.rest = node.rest or _Node()
                        return node.rest
                    # Static segments and whole {name} segments may follow (each {name} is
                    # None in the suffix: it takes one segment).
                    suffix: tuple[str | None, ...] = ()
                    for part in segments[index + 1 :]:
                        found = parse_template(part)
                        if not found:
                            suffix += (part,)
                        elif len(found) == 1 and found[0][1] is None and PARAM.fullmatch(part):
                            suffix += (None,)
                        else:
                            raise ConfigurationError(
                                "only static segments and whole {name} segments may follow "
                                f"{{...:path}}: {path}"
                            )
                    if all(part is None for part in suffix):
                        raise ConfigurationError(
                            f"a static segment must follow {{...:path}}: {path}"
                        )
                    if suffix not in node.suffixed:
                        node.suffixed[suffix] = _Node()
                        # Longest first; of equal length, the one with fewer {name} first
                        # (the more specific).
                        node.suffixed = dict(
                            sorted(
                                node.suffixed.items(),
                                key=lambda item: (-len(item[0]), item[0].count(None)),
                            )
                        )
                    return node.suffixed[suffix]
                if converter is not None:
                    raise ConfigurationError(f"unknown converter {converter!r} in {path}")
                node.param = node.param or _Node()
                node = node.param
                continue
            if any(conv is not None for _, conv in params):
                raise ConfigurationError(f"converters need a whole segment: {segment} in {path}")
            pattern = _SegmentPattern(segment)
            entry = node.patterns.get(pattern.literals)
            if entry is None:
                entry = node.patterns[pattern.literals] = (pattern, _Node())
            node = entry[1]
        return node

    # -- matching -------------------------------------------------------------------------

    @staticmethod
    def request_path(environ: dict[str, Any]) -> str:
        """Return the decoded request path with the trailing slash stripped.

        Raises:
            BadRequest: the path is not valid UTF-8 or has malformed percent-encoding.
        """
        path: str = environ.get("PATH_INFO") or "/"
        if not path.isascii():
            try:
                path = path.encode("latin-1").decode("utf-8")
            except UnicodeError:
                raise BadRequest("Invalid path encoding") from None
        if "%" in path:
            raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
            if BAD_PERCENT.search(raw.partition("?")[0]):
                raise BadRequest("Invalid percent-encoding in path")
        if len(path) > 1 and path[-1] == "/":
            path = path.rstrip("/") or "/"
        return path

    def match(self, method: str, path: str) -> Match | Miss:
        """Return a :data:`Match`, ``(route, params)``: the route and its path parameters;
        else a :class:`Miss` (the methods the path allows: none when no route has the path)."""
        leaf = self._static.get(path)
        if leaf is not None:
            route = _for_method(leaf, method)
            if route is not None:
                return route, {}
        segments = path[1:].split("/") if path != "/" else []
        # PERF: first the straight descent (static child, else the {name} child) that the
        # depth-first search would try first; when it ends on a route for the method, the
        # search would have found the same one. Anything else takes the full search, and so
        # does a {name} segment when the path holds a character no parameter may hold
        # (checked once, on the whole path).
        plain = "\\" not in path and "\x00" not in path
        node = self._root
        captures: list[str] = []
        for index, segment in enumerate(segments):
            child = node.static.get(segment)
            if child is None:
                child = node.param
                if child is None:
                    # A {name:path} leaf is the search's next choice where there is no
                    # static, pattern or {name} child (a proxy's /api/{path:path}).
                    rest = node.rest
                    if (
                        rest is not None
                        and rest.leaf is not None
                        and not node.patterns
                        and not node.suffixed
                    ):
                        found = _rest_match(rest.leaf, segments, index, method, plain)
                        if found is not None:
                            captures.append(found[1])
                            route = found[0]
                            return route, dict(zip(route.param_names, captures, strict=True))
                    break
                if node.patterns or not plain or not segment or segment == "..":
                    break
                captures.append(segment)
            node = child
        else:
            leaf = node.leaf
            if leaf is not None:
                route = _for_method(leaf, method)
                if route is not None:
                    return route, dict(zip(route.param_names, captures, strict=True))
        allowed: set[str] = set()
        captures = []
        route = _search(self._root, segments, 0, method, captures, allowed)
        if route is None:
            return Miss(_allow_header_methods(allowed)) if allowed else NO_ROUTE
        if not captures:
            return route, {}
        return route, dict(zip(route.param_names, captures, strict=True))

    def url_for(self, name: str, /, **params: Any) -> str:
        """Build the path of the route named ``name`` (a mounted route's name carries its
        mounts' names: ``"v1.users.show"``)."""
        if name not in self._names:
            mounted = sorted(known for known in self._names if known.endswith(f".{name}"))
            hint = (
                f"; mounted: {', '.join(repr(known) for known in mounted[:5])}" if mounted else ""
            )
            raise LookupError(f"no route named {name!r}{hint}")
        route = self._names[name]
        if route is None:
            raise LookupError(f"route name {name!r} is ambiguous: name the routes explicitly")
        shared = self._shared.get(name)
        if shared:  # the path with the most parameters that are all given
            fitting = [r for r in shared if set(r.param_names) <= set(params)]
            if fitting:
                route = max(fitting, key=lambda r: len(r.param_names))
        return route.url(**params)

    def adopt(self, route: Route | Callable[..., Any]) -> Route:
        """Return ``route`` as a Route, compiling a plain callable claimed in ``route``.

        The last :data:`ADOPTED_CALLABLES` callables stay compiled: claim with the same callable
        (a module-level function, a bound method) to compile it once. A fresh callable on each
        request is compiled on each request, and does not accumulate.
        """
        if isinstance(route, Route):
            return route
        return self._adopted(route)

    def _compile_callable(self, function: Callable[..., Any]) -> Route:
        if self.adopt_callable is None:
            raise ConfigurationError("router cannot compile callables")
        return self.adopt_callable(function)


#: How many callables claimed with ``event.route_found()`` stay compiled (least recently
#: used ones are dropped first).
ADOPTED_CALLABLES = 128


class _SegmentPattern:
    """A segment mixing text and ``{name}`` parameters, matched left to right in one pass.

    The matching rule: every parameter but the last ends at the first occurrence of the text
    that follows it (so it never contains that text); the last one takes everything up to the
    segment's fixed ending. ``{a}-{b}-{c}.txt`` matches ``x-y-z-w.txt`` with ``a="x"``,
    ``b="y"``, ``c="z-w"``. Every parameter is non-empty.

    SECURITY: a backtracking regex (``([^/]+?)-([^/]+?)-([^/]+?)\\.txt``) costs the cube of the
    segment's length on a segment of dashes; each ``str.find`` here starts where the previous
    one ended, so the cost is linear in the segment (times the longest text between
    parameters). The rule is the one such a regex (lazy parameters) applies, so nothing that
    matched before matches differently.
    """

    __slots__ = ("literals", "prefix", "separators", "suffix")

    def __init__(self, segment: str) -> None:
        literals = []
        last = 0
        for match in PARAM.finditer(segment):
            literals.append(segment[last : match.start()])
            last = match.end()
        literals.append(segment[last:])
        self.literals = tuple(literals)
        self.prefix = literals[0]
        self.separators = tuple(literals[1:-1])
        self.suffix = literals[-1]

    def match(self, segment: str) -> list[str] | None:
        """Return the parameters' values in ``segment``, or ``None`` when it does not match."""
        if not (segment.startswith(self.prefix) and segment.endswith(self.suffix)):
            return None
        start = len(self.prefix)
        end = len(segment) - len(self.suffix)
        values = []
        for separator in self.separators:
            # The first occurrence after one character at least, leaving one for the rest:
            # if it cannot work, no later one can (a later one leaves less room).
            found = segment.find(separator, start + 1, end - 1)
            if found < 0:
                return None
            values.append(segment[start:found])
            start = found + len(separator)
        if start >= end:
            return None
        values.append(segment[start:end])
        return values


def _rest_match(
    leaf: dict[str, Route], segments: list[str], index: int, method: str, plain: bool
) -> tuple[Route, str] | None:
    """Return the {name:path} route for the segments from ``index`` on, and its value, when
    the full search would take it (the same checks as its ``rest`` branch)."""
    segment = segments[index]
    if not plain or not segment or segment == "..":
        return None
    tail = segments[index:]
    if ".." in tail:
        return None
    route = _for_method(leaf, method)
    return None if route is None else (route, "/".join(tail))


def _refused(value: str) -> bool:
    """Return whether no parameter may take ``value`` (see the package's SECURITY note)."""
    # SECURITY: a '..' value climbs out of a directory it is joined to; a backslash is a
    # separator on Windows ('..\\..\\x'); a NUL byte truncates or breaks file system calls.
    return value == ".." or "\\" in value or "\x00" in value


def _for_method(leaf: dict[str, Route], method: str) -> Route | None:
    """Return the leaf's route for ``method``: its own, else ``ANY``, else GET for HEAD."""
    route = leaf.get(method) or leaf.get(ANY)
    if route is None and method == "HEAD":
        route = leaf.get("GET")
    return route


def _pick(leaf: dict[str, Route], method: str, allowed: set[str]) -> Route | None:
    route = _for_method(leaf, method)
    if route is None:
        allowed.update(leaf)
    return route


def _search(
    node: _Node,
    segments: list[str],
    index: int,
    method: str,
    captures: list[str],
    allowed: set[str],
) -> Route | None:
    """Depth-first search of the segment tree, static first; see the package docstring.

    Every edge of the tree consumes one segment, so a node is reached at one index only and
    visited at most once: the search costs at most the size of the tree (times the cost of
    matching one segment), however the path is made.
    """
    if index == len(segments):
        return _pick(node.leaf, method, allowed) if node.leaf is not None else None
    segment = segments[index]
    child = node.static.get(segment)
    if child is not None:
        found = _search(child, segments, index + 1, method, captures, allowed)
        if found is not None:
            return found
    if not segment or segment == "..":  # SECURITY: see _refused()
        return None
    for pattern, child in node.patterns.values():
        values = pattern.match(segment)
        if values is not None and not any(_refused(value) for value in values):
            captures.extend(values)
            found = _search(child, segments, index + 1, method, captures, allowed)
            if found is not None:
                return found
            del captures[-len(values) :]
    if node.param is not None and not _refused(segment):
        captures.append(segment)
        found = _search(node.param, segments, index + 1, method, captures, allowed)
        if found is not None:
            return found
        captures.pop()
    for suffix, child in node.suffixed.items():
        # The suffix is compared once, from the end: "/a/b/_hooks/route" gives {resource}
        # "a/b". Checked before the plain {name:path}, being more specific.
        end = len(segments) - len(suffix)
        last = suffix[-1]
        if (
            end > index
            and (last is None or segments[-1] == last)  # PERF: most paths differ there
            and child.leaf is not None
        ):
            values = _suffix_values(suffix, segments, end)
            if values is None:
                continue
            tail = segments[index:end]
            if "" not in tail and ".." not in tail:
                value = "/".join(tail)
                if not _refused(value):
                    route = _pick(child.leaf, method, allowed)
                    if route is not None:
                        captures.append(value)
                        captures.extend(values)
                        return route
    rest = node.rest
    if rest is not None and rest.leaf is not None:
        tail = segments[index:]
        if ".." not in tail:
            value = "/".join(tail)
            if not _refused(value):
                route = _pick(rest.leaf, method, allowed)
                if route is not None:
                    captures.append(value)
                    return route
    return None


def _prune(node: _Node) -> bool:
    """Drop the branches below ``node`` that lead to no route; return whether it is empty."""
    node.static = {key: child for key, child in node.static.items() if not _prune(child)}
    node.patterns = {key: entry for key, entry in node.patterns.items() if not _prune(entry[1])}
    node.suffixed = {key: child for key, child in node.suffixed.items() if not _prune(child)}
    if node.param is not None and _prune(node.param):
        node.param = None
    if node.rest is not None and _prune(node.rest):
        node.rest = None
    return not (
        node.leaf or node.static or node.patterns or node.suffixed or node.param or node.rest
    )


def _suffix_values(
    suffix: tuple[str | None, ...], segments: list[str], end: int
) -> list[str] | None:
    """Return the {name} values of ``segments[end:]`` matched against ``suffix`` (None where
    it differs)."""
    values = []
    for part, segment in zip(suffix, segments[end:], strict=True):
        if part is None:
            if not segment or _refused(segment) or segment == "..":
                return None
            values.append(segment)
        elif part != segment:
            return None
    return values


def _allow_header_methods(methods: Iterable[str]) -> tuple[str, ...]:
    """Return the methods to list in ``Allow`` for a path served by ``methods``."""
    found = set(methods)
    if not found:
        return ()
    # No ANY here: a leaf with an ANY route answers every method, so it never adds to them.
    if "GET" in found:
        found.add("HEAD")
    found.add("OPTIONS")
    return tuple(m for m in METHODS if m in found) + tuple(sorted(found - set(METHODS)))
