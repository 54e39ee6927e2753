"""The registration JSON (Gateleen's properties), its validation, and the compiled hooks.

The JSON is decoded into msgspec structs (unknown properties and wrong types are refused there,
every one reported); :func:`route_problems` then finds every semantic problem at once (a bad
regex, a method nobody sends, a destination outside the allowed ones, a header rule that would
inject a line). A registration with any problem answers 400 listing them all; Gateleen logs a
bad regex and silently drops the hook instead.

Regexes (``headersFilter``, ``translateStatus``) are compiled with RE2, whose matching time is
linear in the input whatever the pattern: a registered regex runs against every request's
headers, so a backtracking engine would let one registration (``(a+)+$``) stall every worker.
RE2 has no backreferences or lookarounds; a pattern using them is refused with the reason.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import msgspec
import re2
from urllib3.util import parse_url

from ..errors import ParametersFailed
from ..numbers import parse_int
from ..params import json_errors
from ..proxy.headers import HOP_BY_HOP
from ..reading import check_json_depth

__all__ = [
    "HOOK_METHODS",
    "AllowedDestinations",
    "HeaderRule",
    "ListenerSpec",
    "QueueingStrategy",
    "RouteSpec",
    "compile_pattern",
    "listener_problems",
    "route_problems",
]

#: The methods a hook may name (Gateleen's list).
HOOK_METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH")

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the client's 400, not a log line
_RE2_OPTIONS.max_mem = 1 << 20  # SECURITY: a pattern whose program is huge is refused

#: The longest regex a registration may hold.
MAX_PATTERN = 1024
# RFC 9110 token characters, for header names.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A {name} reference in a header rule's value (linear: no nested quantifier).
REFERENCE = re.compile(r"\{([^{}]*)\}")
# The headers no rule may touch: the message's framing and the connection's own.
_UNRULED = HOP_BY_HOP | {"content-length"}


class HeaderRule(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One header manipulation (Gateleen's ``headers`` entries).

    No ``mode`` (or ``set``): set the header. ``complete``: set it only where the request has
    none. ``override``: set it only where the request has one. An empty or null ``value``
    removes the header. ``{name}`` in a value is replaced by that request header's value.
    """

    header: str
    value: str | None = None
    mode: Literal["set", "complete", "override"] | None = None


class RouteSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The body of ``PUT <resource>/_hooks/route`` (Gateleen's route properties)."""

    destination: str
    methods: list[str] = []
    headers: list[HeaderRule] = []
    headersFilter: str | None = None  # noqa: N815 - Gateleen's property names
    translateStatus: dict[str, int] = {}  # noqa: N815
    timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    fullUrl: bool = False  # noqa: N815


class QueueingStrategy(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """How a listener's copies are queued (Gateleen's ``queueingStrategy``).

    ``default``: each copy as it is. ``discardPayload``: each copy without its body
    (``Content-Length: 0``). ``reducedPropagation``: copies without their bodies, at most one
    delivered per ``intervalMs`` per queue however many requests matched (Gateleen's
    "something changed" notification).
    """

    type: Literal["default", "discardPayload", "reducedPropagation"] = "default"
    intervalMs: Annotated[int, msgspec.Meta(ge=1, le=86_400_000)] | None = None  # noqa: N815


class ListenerSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The body of ``PUT <resource>/_hooks/listeners/http/<id>`` (Gateleen's listener
    properties)."""

    destination: str
    methods: list[str] = []
    filter: str | None = None
    headersFilter: str | None = None  # noqa: N815 - Gateleen's property names
    headers: list[HeaderRule] = []
    type: Literal["before", "after"] = "before"
    queueingStrategy: QueueingStrategy = msgspec.field(  # noqa: N815
        default_factory=QueueingStrategy
    )
    queueExpireAfter: Annotated[int, msgspec.Meta(ge=-1, le=315_360_000)] | None = None  # noqa: N815
    timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    fullUrl: bool = False  # noqa: N815


#: The longest listener id (the last segment of its registration path).
MAX_LISTENER_ID = 128
# SECURITY: a listener id names its queue and its storage keys (``:`` separates a Redis key's
# parts, ``+`` joins the resource's segments in the queue's name): letters, digits and
# ``-._~`` only, so no id can reach into another listener's keys or queue.
_LISTENER_ID = re.compile(r"[A-Za-z0-9._~-]+")


def listener_id_problems(id: str) -> list[dict[str, str]]:
    """Problems of a listener id (the ``<id>`` of ``…/_hooks/listeners/http/<id>``)."""
    if len(id) > MAX_LISTENER_ID or not _LISTENER_ID.fullmatch(id):
        return [
            {
                "path": "id",
                "message": f"a listener id is 1-{MAX_LISTENER_ID} letters, digits or -._~",
            }
        ]
    return []


def compile_pattern(pattern: str) -> Any:
    """Compile a registered regex with RE2 (linear-time matching).

    Raises:
        ValueError: the pattern is too long or not valid RE2 syntax.
    """
    # SECURITY: a client registers the pattern and it runs on every request's headers: RE2
    # matches in time linear in the input whatever the pattern ((a+)+$ included), where a
    # backtracking engine would let one registration stall every worker.
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"longer than {MAX_PATTERN} characters")
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as ex:
        reason = ex.args[0] if ex.args else ex
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(
            f"invalid regex (RE2 syntax, no lookarounds or backreferences): {reason}"
        ) from None


class AllowedDestinations:
    """The external URLs hooks may forward to: each entry allows its scheme, host, port and
    the paths below its path (``http://127.0.0.1:9001/api`` allows ``/api`` and ``/api/...``,
    not ``/apix``)."""

    __slots__ = ("entries", "_known")

    def __init__(self, urls: Iterable[str]) -> None:
        entries = []
        for url in urls:
            parts = _url_parts(url)
            if parts is None:
                raise ValueError(f"allowed destination must be an http(s) URL: {url!r}")
            entries.append(parts)
        self.entries = tuple(entries)
        # PERF: every delivery of a listener's copy checks its URL again (parsing a URL costs
        # more than the rest of the check); the answers for the last URLs seen are kept.
        self._known: dict[str, bool] = {}

    def allows(self, url: str) -> bool:
        known = self._known.get(url)
        if known is None:
            known = self._allows(url)
            if len(self._known) >= 1024:
                self._known.clear()
            self._known[url] = known
        return known

    def _allows(self, url: str) -> bool:
        parts = _url_parts(url)
        if parts is None:
            return False
        scheme, host, port, path = parts
        for allowed_scheme, allowed_host, allowed_port, allowed_path in self.entries:
            if (scheme, host, port) == (allowed_scheme, allowed_host, allowed_port) and (
                path == allowed_path or path.startswith(allowed_path.rstrip("/") + "/")
            ):
                return True
        return False


def _url_parts(url: str) -> tuple[str, str, int, str] | None:
    """Return ``(scheme, host, port, path)`` of an http(s) URL without credentials, query or
    fragment; ``None`` for anything else."""
    try:
        parsed = parse_url(url)
    except ValueError:
        return None
    # SECURITY: credentials in a URL hide its real host from a reader
    # (http://127.0.0.1:9001@evil.example/); a URL with them is never a destination.
    if parsed.scheme not in ("http", "https") or not parsed.host or parsed.auth:
        return None
    if parsed.query is not None or parsed.fragment is not None:
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    path = parsed.path or "/"
    if "/../" in path + "/" or "/./" in path + "/":
        return None  # SECURITY: a dot segment would climb out of the allowed path
    return parsed.scheme, parsed.host.lower(), port, path


def is_local(destination: str) -> bool:
    """Return whether ``destination`` is a local path (answered by the app in process)."""
    return destination.startswith("/") and not destination.startswith("//")


def parse_route(
    body: bytes, resource: str, allowed: AllowedDestinations, max_depth: int
) -> tuple[RouteSpec | None, list[dict[str, str]]]:
    """Return the route registration in ``body`` and every problem it has, types and meaning
    together (the spec is ``None`` when there are problems).

    Raises:
        BadRequest: the body is not JSON, or too deeply nested.
    """
    return _parse(RouteSpec, route_problems, body, resource, allowed, max_depth)


def parse_listener(
    body: bytes, resource: str, allowed: AllowedDestinations, max_depth: int
) -> tuple[ListenerSpec | None, list[dict[str, str]]]:
    """Return the listener registration in ``body`` and every problem it has (as
    :func:`parse_route` does)."""
    return _parse(ListenerSpec, listener_problems, body, resource, allowed, max_depth)


def _parse(
    struct: Any,
    problems_of: Any,
    body: bytes,
    resource: str,
    allowed: AllowedDestinations,
    max_depth: int,
) -> tuple[Any, list[dict[str, str]]]:
    check_json_depth(body, max_depth)
    document, problems = json_errors(struct, body)
    if not isinstance(document, dict):
        return None, problems or [{"path": "body", "message": "Expected `object`"}]
    # The fields without a type error are checked for meaning too, so one answer lists
    # every problem (a wrong type of one field and a bad regex in another, say).
    bad = {problem["path"].partition(".")[0] for problem in problems}
    fields = struct.__struct_fields__
    clean = {key: value for key, value in document.items() if key in fields and key not in bad}
    placeholder = "destination" not in clean
    if placeholder:
        clean["destination"] = "/"
    spec = msgspec.convert(clean, struct, strict=False)
    found = problems_of(spec, resource, allowed)
    problems.extend(p for p in found if not placeholder or p["path"] != "destination")
    return (None if problems else spec), problems


def route_problems(
    spec: RouteSpec, resource: str, allowed: AllowedDestinations
) -> list[dict[str, str]]:
    """Return every problem of a route registration on ``resource`` (empty when it is good)."""
    problems = _common_problems(spec, resource, allowed, {"headersFilter": spec.headersFilter})
    for pattern, status in spec.translateStatus.items():
        where = f"translateStatus.{pattern}"
        try:
            compile_pattern(pattern)
        except ValueError as ex:
            problems.append({"path": where, "message": str(ex)})
        if not 100 <= status <= 599:
            problems.append({"path": where, "message": f"status must be 100-599, not {status}"})
    return problems


def listener_problems(
    spec: ListenerSpec, resource: str, allowed: AllowedDestinations
) -> list[dict[str, str]]:
    """Return every problem of a listener registration on ``resource`` (empty when good)."""
    patterns = {"filter": spec.filter, "headersFilter": spec.headersFilter}
    problems = _common_problems(spec, resource, allowed, patterns)
    strategy = spec.queueingStrategy
    if strategy.type == "reducedPropagation" and strategy.intervalMs is None:
        problems.append(
            {
                "path": "queueingStrategy.intervalMs",
                "message": "reducedPropagation needs intervalMs (milliseconds, at least 1)",
            }
        )
    if spec.queueExpireAfter == 0:
        problems.append(
            {"path": "queueExpireAfter", "message": "seconds at least 1, or -1 for never"}
        )
    return problems


def _common_problems(
    spec: RouteSpec | ListenerSpec,
    resource: str,
    allowed: AllowedDestinations,
    patterns: dict[str, str | None],
) -> list[dict[str, str]]:
    """The problems both kinds of registration can have: destination, methods, header rules
    and the regexes in ``patterns`` (by property name)."""
    problems: list[dict[str, str]] = []
    problems.extend(destination_problems(spec.destination, resource, allowed))
    problems.extend(methods_problems(spec.methods))
    problems.extend(header_rule_problems(spec.headers))
    for where, pattern in patterns.items():
        if pattern is not None:
            try:
                compile_pattern(pattern)
            except ValueError as ex:
                problems.append({"path": where, "message": str(ex)})
    return problems


def destination_problems(
    destination: str, resource: str, allowed: AllowedDestinations
) -> list[dict[str, str]]:
    """Problems of a destination: neither a local path nor an allowed URL, or a loop."""
    where = "destination"
    if is_local(destination):
        path = destination.rstrip("/") or "/"
        if any(ord(char) < 0x21 or char in "?#\\" for char in path):
            return [{"path": where, "message": "a local destination is a plain path"}]
        if "/_hooks/" in path + "/" or "/../" in path + "/" or "/./" in path + "/":
            return [
                {"path": where, "message": "a local destination cannot hold _hooks or dot segments"}
            ]
        # SECURITY: a destination inside the hooked resource would forward to itself.
        if path == resource or path.startswith(resource.rstrip("/") + "/"):
            return [
                {
                    "path": where,
                    "message": f"{destination} is inside the hooked resource {resource}: a loop",
                }
            ]
        return []
    if _url_parts(destination) is None:
        return [
            {
                "path": where,
                "message": "must be a local path (/...) or an http(s) URL without credentials, "
                "query or fragment",
            }
        ]
    # SECURITY: no server-side request forgery: an external destination must fall under
    # allowed_destinations (none by default), so a client cannot make the app call its
    # internal network or a cloud metadata address.
    if not allowed.allows(destination):
        return [
            {
                "path": where,
                "message": f"{destination} is not under an allowed destination "
                "(Hooks(allowed_destinations=[...]))",
            }
        ]
    return []


def methods_problems(methods: list[str]) -> list[dict[str, str]]:
    return [
        {
            "path": f"methods.{index}",
            "message": f"{method!r} is not one of {', '.join(HOOK_METHODS)}",
        }
        for index, method in enumerate(methods)
        if method not in HOOK_METHODS
    ]


def header_rule_problems(rules: list[HeaderRule]) -> list[dict[str, str]]:
    problems = []
    for index, rule in enumerate(rules):
        where = f"headers.{index}"
        if not _TOKEN.fullmatch(rule.header):
            problems.append({"path": f"{where}.header", "message": "not a header name"})
        elif rule.header.lower() in _UNRULED:
            # SECURITY: a rule on Content-Length or Transfer-Encoding (``{x-len}`` from the
            # client, say) would frame the forwarded body differently from what is sent: the
            # rest of the body becomes the upstream's next request on the pooled connection
            # (request smuggling). Framing and hop-by-hop headers are the proxy's alone.
            message = f"{rule.header} is the proxy's to set (framing or hop-by-hop)"
            problems.append({"path": f"{where}.header", "message": message})
        value = rule.value or ""
        # SECURITY: CR, LF or NUL in a value would inject header lines into the forwarded
        # request (response splitting's request-side twin).
        if any(char in value for char in "\r\n\x00"):
            problems.append(
                {"path": f"{where}.value", "message": "a value cannot hold CR, LF or NUL"}
            )
        for reference in REFERENCE.findall(value):
            if not _TOKEN.fullmatch(reference):
                problems.append(
                    {"path": f"{where}.value", "message": f"{{{reference}}} is not a header name"}
                )
    return problems


def expiry(header: str | None, default: float | None = 3600.0) -> float | None:
    """Return when a hook registered now expires, from its ``X-Expire-After`` header.

    ``-1`` never; otherwise whole seconds ≥ 1 (at most ten years).

    Raises:
        ParametersFailed: the header is not such a number.
    """
    if header is None:
        return None if default is None else time.time() + default
    try:
        seconds = parse_int(header.strip(" \t"), max_digits=10)
    except ValueError:
        seconds = 0
    if seconds == -1:
        return None
    if not 1 <= seconds <= 315_360_000:
        raise ParametersFailed(
            [{"path": "X-Expire-After", "message": "seconds from 1 to 315360000, or -1 for never"}],
            "Invalid registration",
        )
    return time.time() + seconds
