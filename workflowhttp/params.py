"""Parameter plans: how each controller argument is found, decided once per route at start-up.

For every parameter of a controller, in this order:

1. its name is a path parameter → the matched path value, converted to the annotation;
2. ``Annotated[T, Query("n")]``, ``Header("X-Key")``, ``Cookie("n")`` or ``Body()`` → that source;
3. ``HttpEvent``, ``Request`` or a provided service type → injected;
4. a dataclass, ``msgspec.Struct`` or ``TypedDict`` (or a list of them) → the request body,
   decoded from JSON (or converted from form data);
5. any other type ``msgspec`` can convert (``str``, ``int``, ``bool``, ``UUID``, ``date``,
   ``Literal``, ``list[int]`` for repeated keys, ...) → the query string.

``Annotated[Model, Query()]`` with a model type builds the model from the query parameters.
A path placeholder that no parameter reads is a :class:`~workflowhttp.errors.ConfigurationError`.

A default makes a parameter optional. Conversion uses ``msgspec`` (strict for JSON, lax for
strings from the path, query, headers, cookies and forms), except that from a string an integer
is only ever an optional sign and decimal digits (:func:`~workflowhttp.numbers.parse_int`) and
a boolean one of ``true/false``, ``on/off``, ``1/0``, ``yes/no`` (any case).
Every failure is collected into one :class:`~workflowhttp.errors.ParametersFailed` (400), each
error at its path: the parameter name, or the dotted location inside the body document
(``"user.age"``, ``"items.0.name"``). The successful request pays for one conversion per
parameter (one ``msgspec`` decode for a body); only a failed one is checked again field by
field, so that it reports every error at once.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import decimal
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import msgspec
import msgspec.inspect as msgspec_inspect
from werkzeug.datastructures import MultiDict
from werkzeug.sansio.http import parse_cookie

from .errors import BadRequest, ConfigurationError, ParametersFailed, UnsupportedMediaType
from .numbers import MAX_DIGITS, parse_int
from .reading import check_json_depth, query_of, read_body

if TYPE_CHECKING:
    from .di import Container
    from .events import HttpEvent

__all__ = [
    "Body",
    "Cookie",
    "Header",
    "ParameterInfo",
    "ParameterPlan",
    "Query",
    "build_plan",
    "json_errors",
]

_MISSING: Any = object()
_EMPTY: Any = inspect.Parameter.empty
Resolver = Callable[["HttpEvent"], Any]


class _Source:
    __slots__ = ("name",)
    kind = ""

    def __init__(self, name: str | None = None) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})" if self.name else f"{type(self).__name__}()"


class Query(_Source):
    """``Annotated[T, Query("n")]``: the query parameter ``n`` (default: the parameter's name)."""

    kind = "query"


class Header(_Source):
    """``Annotated[T, Header("X-Key")]``: a request header (default: ``x_key`` → ``X-Key``)."""

    kind = "header"


class Cookie(_Source):
    """``Annotated[T, Cookie("n")]``: a cookie (default: the parameter's name)."""

    kind = "cookie"


class Body(_Source):
    """``Annotated[T, Body()]``: the request body as ``T`` (``bytes``, ``str`` or a JSON type)."""

    kind = "body"


class _Failure(Exception):
    """One parameter failed; carries the errors at their paths."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors


class ParameterInfo(NamedTuple):
    """What one controller parameter reads, for tools that describe the app (OpenAPI).

    Plain data, built with the resolver; resolving a request never reads it.
    """

    argument: str
    """The controller's parameter name."""
    source: str
    """``"path"``, ``"query"``, ``"header"``, ``"cookie"``, ``"body"``, or ``"injected"``
    (``HttpEvent``, ``Request`` or a service). A query parameter whose annotation is a model
    (dataclass, Struct, TypedDict) is a query model: one query parameter per field."""
    name: str
    """The name the client sends: the query key, the header or cookie name; the argument's
    name for the other sources."""
    annotation: Any
    """The parameter's type without its source marker (``msgspec.Meta`` kept)."""
    default: Any
    """The default, or ``inspect.Parameter.empty``."""
    required: bool
    """Whether a request without it fails (the parameter has no default)."""


class ParameterPlan:
    """The resolvers of one controller's parameters, in signature order.

    ``parameters`` describes what each resolver reads (:class:`ParameterInfo`), in the same
    order.
    """

    __slots__ = ("resolvers", "parameters")

    def __init__(
        self,
        resolvers: list[tuple[str, Resolver]],
        parameters: tuple[ParameterInfo, ...] = (),
    ) -> None:
        self.resolvers = tuple(resolvers)
        self.parameters = parameters

    def resolve(self, event: HttpEvent) -> dict[str, Any]:
        """Return the arguments by name.

        Raises:
            ParametersFailed: one or more parameters failed, with every error found.
        """
        arguments: dict[str, Any] = {}
        errors: list[dict[str, str]] | None = None
        for name, resolver in self.resolvers:
            try:
                value = resolver(event)
            except _Failure as failure:
                errors = (errors or []) + failure.errors
                continue
            if value is not _MISSING:
                arguments[name] = value
        if errors:
            raise ParametersFailed(errors)
        return arguments


# -- building a plan ---------------------------------------------------------------------------


def build_plan(
    function: Callable[..., Any],
    path_names: tuple[str, ...] | None,
    container: Container,
    *,
    skip_first: bool = False,
) -> ParameterPlan:
    """Compile the plan of ``function``'s parameters (``skip_first`` skips ``self``).

    ``path_names`` is ``None`` for a callable claimed with ``event.route_found()``, whose path
    parameters are only known per request: its simple parameters come from the claimed path
    parameters when present, else from the query.
    """
    qualname = getattr(function, "__qualname__", repr(function))
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as ex:
        raise ConfigurationError(f"cannot resolve the annotations of {qualname}: {ex}") from None
    parameters = list(inspect.signature(function).parameters.values())
    if skip_first:
        parameters = parameters[1:]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    if path_names:
        _check_placeholders(qualname, path_names, parameters, hints, takes_any)
    resolvers: list[tuple[str, Resolver]] = []
    parameters_read: list[ParameterInfo] = []
    # The query keys the query parameters read, filled in as they are compiled: a query model
    # that forbids unknown fields lets these through.
    claimed: set[str] = set()
    for parameter in parameters:
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise ConfigurationError(f"{qualname}: positional-only parameter {parameter.name!r}")
        annotation = hints.get(parameter.name, str)
        default = (
            parameter.default if parameter.default is not inspect.Parameter.empty else _MISSING
        )
        where = f"{qualname}, parameter {parameter.name!r}"
        resolver, info = _resolver(
            parameter.name, annotation, default, path_names, container, where, claimed
        )
        resolvers.append((parameter.name, resolver))
        parameters_read.append(info)
    if takes_any and path_names:
        # **kwargs takes the placeholders no parameter names, as the matched text.
        named = {name for name, _ in resolvers}
        for placeholder in path_names:
            if placeholder not in named:
                resolvers.append((placeholder, _path_resolver(placeholder, _identity)))
                parameters_read.append(
                    ParameterInfo(placeholder, "path", placeholder, str, _EMPTY, True)
                )
    return ParameterPlan(resolvers, tuple(parameters_read))


def _check_placeholders(
    qualname: str,
    path_names: tuple[str, ...],
    parameters: list[inspect.Parameter],
    hints: dict[str, Any],
    takes_any: bool,
) -> None:
    """Raise ``ConfigurationError`` for a path placeholder that no parameter reads.

    Without this check, ``{item_id}`` on ``def show(id: int)`` builds, and ``id`` becomes a
    query parameter that every request lacks (a 400 that never names the path).
    """
    named = {
        p.name: p
        for p in parameters
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }
    for placeholder in path_names:
        if placeholder not in named:
            if takes_any:
                continue
            listed = ", ".join(named) or "none"
            raise ConfigurationError(
                f"{qualname}: the path placeholder {{{placeholder}}} matches no parameter "
                f"(parameters: {listed}); name a parameter {placeholder!r}, or take **kwargs"
            )
        source = _unwrap(hints.get(placeholder, str))[1]
        if source is not None:
            raise ConfigurationError(
                f"{qualname}: the path placeholder {{{placeholder}}} is never read: parameter "
                f"{placeholder!r} reads the {source.kind} ({source!r})"
            )


def _resolver(
    name: str,
    annotation: Any,
    default: Any,
    path_names: tuple[str, ...] | None,
    container: Container,
    where: str,
    claimed: set[str],
) -> tuple[Resolver, ParameterInfo]:
    bare, source = _unwrap(annotation)

    def read(kind: str, wire_name: str = name) -> ParameterInfo:
        required = default is _MISSING
        plain = _without_sources(annotation)
        return ParameterInfo(
            name, kind, wire_name, plain, _EMPTY if required else default, required
        )

    if bare is object:
        raise ConfigurationError(
            f"{where}: `object` says nothing of what the parameter receives; annotate it with "
            f"a path, query, header, cookie or body type, HttpEvent, Request or a service"
        )
    if source is None and path_names is not None and name in path_names:
        return _path_resolver(name, _converter(annotation, where)), read("path")
    if source is None and isinstance(bare, type) and container.provides(bare):
        return container.accessor(bare, consumer=where, request_scope=True), read("injected")
    if isinstance(source, Body) or (source is None and _is_body_type(bare)):
        return _body_resolver(name, annotation, bare, default, where), read("body")
    if isinstance(source, Header):
        header = source.name or name.replace("_", "-")
        key = header.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        convert = _converter(annotation, where)
        resolver = _scalar_resolver(
            name, header, default, convert, lambda event: event.environ.get(key)
        )
        return resolver, read("header", header)
    if isinstance(source, Cookie):
        cookie = source.name or name
        convert = _converter(annotation, where)
        resolver = _scalar_resolver(
            name, cookie, default, convert, lambda event: _cookies(event).get(cookie)
        )
        return resolver, read("cookie", cookie)
    if isinstance(source, Query) and _is_model(bare):
        resolver = _query_model_resolver(name, annotation, bare, default, where, source, claimed)
        return resolver, read("query")
    query_name = source.name if isinstance(source, Query) and source.name else name
    claimed.add(query_name)
    from_query = _query_resolver(name, query_name, annotation, bare, default, where)
    if path_names is not None or source is not None:
        return from_query, read("query", query_name)
    from_path = _path_resolver(name, _converter(annotation, where))

    def from_path_or_query(event: HttpEvent) -> Any:
        return from_path(event) if name in event.path_params else from_query(event)

    return from_path_or_query, read("query", query_name)


def _unwrap(annotation: Any) -> tuple[Any, _Source | None]:
    """Return the annotation without ``Annotated``/``Optional``, and its source marker."""
    source = None
    if typing.get_origin(annotation) is Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, _Source):
                source = meta
            elif isinstance(meta, type) and issubclass(meta, _Source):
                source = meta()
        annotation = annotation.__origin__
    origin = typing.get_origin(annotation)
    if origin is typing.Union or _is_union_type(annotation):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            inner, inner_source = _unwrap(members[0])
            return inner, source or inner_source
    return annotation, source


def _is_union_type(annotation: Any) -> bool:
    return isinstance(annotation, types.UnionType)


def _is_model(annotation: Any) -> bool:
    """Return whether ``annotation`` is a dataclass, a ``msgspec.Struct`` or a ``TypedDict``."""
    return isinstance(annotation, type) and (
        dataclasses.is_dataclass(annotation)
        or issubclass(annotation, msgspec.Struct)
        or typing.is_typeddict(annotation)
    )


def _is_body_type(annotation: Any) -> bool:
    """Dataclasses, Structs and TypedDicts (or lists of them) come from the body."""
    if _is_model(annotation):
        return True
    if typing.get_origin(annotation) in (list, tuple, set, frozenset):
        return any(_is_body_type(arg) for arg in typing.get_args(annotation))
    return False


def _check_convertible(annotation: Any, where: str) -> None:
    """Raise ``ConfigurationError`` when msgspec cannot convert to ``annotation``."""
    try:
        info = msgspec_inspect.type_info(annotation)
    except Exception as ex:
        raise ConfigurationError(f"{where}: unsupported annotation {annotation!r}: {ex}") from None
    seen: set[int] = set()
    stack: list[Any] = [info]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, msgspec_inspect.CustomType):
            raise ConfigurationError(
                f"{where}: cannot resolve {node.cls.__qualname__}: not a path, query, header, "
                f"cookie or body type and no provider for it"
            )
        for field in getattr(node, "__struct_fields__", ()):
            value = getattr(node, field)
            values = value if isinstance(value, tuple) else (value,)
            stack.extend(v for v in values if isinstance(v, msgspec.Struct))


# -- conversion and error paths -------------------------------------------------------------

_AT = " - at `$"
# Errors about one field, reported at the field's own path.
_FIELD_ERROR = re.compile(r"^Object (?:missing required|contains unknown) field `([^`]*)`")


def _error_path(message: str, root: str) -> tuple[str, str]:
    """Turn msgspec's ``... - at `$.a[0].b``` into ``("a.0.b", "...")``."""
    location = ""
    # SECURITY: the message quotes the client's keys ("Object contains unknown field `...`");
    # a regex search for the location (r" - at `\$(.*)`$") retried at each " - at `$" of a
    # key ending in a newline, quadratic in the key. One rfind finds msgspec's own suffix.
    at = message.rfind(_AT)
    if at >= 0 and message.endswith("`") and "\n" not in message[at:]:
        location = message[at + len(_AT) : -1]
        message = message[:at]
    parts = [p for p in re.split(r"[.\[\]]+", location) if p]
    field = _FIELD_ERROR.match(message)
    if field:
        parts.append(field.group(1))
    return (".".join(parts) if parts else root), message


def _converter(annotation: Any, where: str) -> Callable[[Any], Any]:
    """Return a lax converter from strings to ``annotation`` (``msgspec.convert``).

    SECURITY: an integer anywhere in ``annotation`` (``int``, ``Annotated[int, Meta(...)]``,
    ``int | None``, ``list[int]``...) is parsed by :func:`~workflowhttp.numbers.parse_int`
    first, then handed to msgspec for the constraints: msgspec's own lax conversion takes
    ``"1e3"`` for 1000 and ``"1.0"`` for 1. A boolean is read by :func:`_client_bool`.
    """
    bare, _ = _unwrap(annotation)
    # Strip our source markers: msgspec does not know them.
    annotation = _without_sources(annotation)
    if bare is str and annotation is str:
        return _identity
    if bare is int and annotation is int:
        return _to_int
    if bare is bool and annotation is bool:
        return _to_bool
    _check_convertible(annotation, where)
    scalars = _scalars(annotation, set())
    if scalars is None:
        return lambda value: msgspec.convert(value, annotation, strict=False)
    return lambda value: msgspec.convert(scalars(value, "$"), annotation, strict=False)


def _without_sources(annotation: Any) -> Any:
    if typing.get_origin(annotation) is Annotated:
        kept = tuple(
            m
            for m in annotation.__metadata__
            if not (isinstance(m, _Source) or (isinstance(m, type) and issubclass(m, _Source)))
        )
        inner = _without_sources(annotation.__origin__)
        return Annotated[(inner, *kept)] if kept else inner
    return annotation


def _identity(value: Any) -> Any:
    return value


def _identity_at(value: Any, at: str) -> Any:
    return value


def _to_int(value: str) -> int:
    """Convert a client's string to an int: an optional sign and at most 64 ASCII digits."""
    # PERF: the common case is one C-level check before int(); int() alone would accept
    # " 1", "1_0" and "٣", and msgspec "1e3".
    if value.isdigit() and value.isascii() and len(value) <= MAX_DIGITS:
        return int(value)
    return _client_int(value, "$")


def _client_int(value: str, at: str) -> int:
    """Parse ``value`` with ``parse_int``, or raise msgspec's error for position ``at``."""
    try:
        return parse_int(value)
    except ValueError:
        if len(value) > MAX_DIGITS:
            message = f"Expected an integer of at most {MAX_DIGITS} digits"
        else:
            message = "Expected `int`, got `str`"
        raise msgspec.ValidationError(message if at == "$" else f"{message} - at `{at}`") from None


# What a client's string may say for a boolean: an HTML checkbox sends "on" (and nothing when it
# is unchecked), URLs say true/false, 1/0 or yes/no. Compared in lower case, ASCII only.
_BOOLEANS = {
    "true": True,
    "on": True,
    "1": True,
    "yes": True,
    "false": False,
    "off": False,
    "0": False,
    "no": False,
}
_LONGEST_BOOLEAN = max(map(len, _BOOLEANS))
_BOOLEAN_EXPECTED = "Expected a boolean (true/false, on/off, 1/0, yes/no)"


def _to_bool(value: str) -> bool:
    """Convert a client's string to a bool (see ``_BOOLEANS``)."""
    # PERF: the usual spellings are one dict lookup.
    result = _BOOLEANS.get(value)
    return _client_bool(value, "$") if result is None else result


def _client_bool(value: str, at: str) -> bool:
    """Read ``value`` as a boolean in any case, or raise msgspec's error for position ``at``."""
    # SECURITY: ASCII and at most five characters before lower(): no Unicode case mapping
    # makes one of the spellings out of other text, and a long value is refused unread.
    if len(value) <= _LONGEST_BOOLEAN and value.isascii():
        result = _BOOLEANS.get(value.lower())
        if result is not None:
            return result
    message = _BOOLEAN_EXPECTED
    raise msgspec.ValidationError(message if at == "$" else f"{message} - at `{at}`")


_Scalars = Callable[[Any, str], Any]
"""Replace a client's strings at the ``int`` and ``bool`` positions of a value (the second
argument is the position, msgspec-style: ``$``, ``$[1]``, ``$.age``)."""
_SEQUENCES = (
    list,
    tuple,
    set,
    frozenset,
    collections.abc.Collection,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Set,
    collections.abc.MutableSet,
)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _scalars(annotation: Any, seen: set[Any]) -> _Scalars | None:
    """Compile what parses the strings at the ``int`` and ``bool`` positions of ``annotation``.

    Returns ``None`` when ``annotation`` holds neither (nothing to do). A union that accepts
    ``str`` keeps its strings (msgspec never makes an int or a bool of them).
    """
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _scalars(annotation.__origin__, seen)
    if annotation is int:
        return _integer_leaf
    if annotation is bool:
        return _boolean_leaf
    if origin is typing.Union or _is_union_type(annotation):
        return _scalar_union(typing.get_args(annotation), seen)
    if origin in _SEQUENCES:
        arguments = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if origin is tuple and len(arguments) > 1:
            items = [_scalars(a, seen) for a in arguments]
            if not any(items):
                return None
            return functools.partial(_scalar_tuple, tuple(items))
        item = _scalars(arguments[0], seen) if arguments else None
        return functools.partial(_scalar_items, item) if item else None
    if origin in _MAPPINGS:
        arguments = list(typing.get_args(annotation))
        item = _scalars(arguments[1], seen) if len(arguments) == 2 else None
        return functools.partial(_scalar_values, item) if item else None
    if isinstance(annotation, type) and _is_body_type(annotation) and annotation not in seen:
        seen.add(annotation)  # a recursive type is walked once
        fields = {key: _scalars(hint, seen) for key, hint in _fields(annotation).items()}
        found = {key: item for key, item in fields.items() if item is not None}
        return functools.partial(_scalar_fields, found) if found else None
    return None


def _integer_leaf(value: Any, at: str) -> Any:
    return _client_int(value, at) if isinstance(value, str) else value


def _boolean_leaf(value: Any, at: str) -> Any:
    return _client_bool(value, at) if isinstance(value, str) else value


def _is_scalar(annotation: Any) -> bool:
    bare = _unwrap(annotation)[0]
    return bare is int or bare is bool


def _scalar_union(members: tuple[Any, ...], seen: set[Any]) -> _Scalars | None:
    plain = [_without_sources(m) for m in members]
    if any(_unwrap(m)[0] is str for m in plain):
        return None
    parsers = [
        _client_int if _unwrap(m)[0] is int else _client_bool for m in plain if _is_scalar(m)
    ]
    others = [m for m in plain if not _is_scalar(m)]
    containers = [item for item in (_scalars(m, seen) for m in others) if item is not None]
    if not parsers:
        if not containers:
            return None
        return containers[0]
    rest: Any = typing.Union[tuple(others)] if others else None  # noqa: UP007

    def parse(value: Any, at: str) -> Any:
        if not isinstance(value, str):
            return containers[0](value, at) if containers else value
        failure: msgspec.ValidationError | None = None
        for parser in parsers:
            try:
                return parser(value, at)
            except msgspec.ValidationError as error:
                failure = failure or error
        assert failure is not None
        if rest is None:
            raise failure
        # Neither an integer nor a boolean: the other members may take it ("null", a
        # float...); the error says what the first scalar member expected.
        try:
            return msgspec.convert(value, rest, strict=False)
        except msgspec.ValidationError:
            raise failure from None

    return parse


def _scalar_items(item: _Scalars, value: Any, at: str) -> Any:
    if not isinstance(value, list):
        return value
    return [item(element, f"{at}[{index}]") for index, element in enumerate(value)]


def _scalar_tuple(items: tuple[_Scalars | None, ...], value: Any, at: str) -> Any:
    if not isinstance(value, list):
        return value
    return [
        items[index](element, f"{at}[{index}]")  # type: ignore[misc]
        if index < len(items) and items[index] is not None
        else element
        for index, element in enumerate(value)
    ]


def _scalar_values(item: _Scalars, value: Any, at: str) -> Any:
    if not isinstance(value, dict):
        return value
    return {key: item(element, f"{at}[...]") for key, element in value.items()}


def _scalar_fields(fields: dict[str, _Scalars], value: Any, at: str) -> Any:
    if not isinstance(value, dict):
        return value
    return {
        key: fields[key](element, f"{at}.{key}") if key in fields else element
        for key, element in value.items()
    }


def _fields(cls: type) -> dict[str, Any]:
    """Return the annotations of a body type's fields, by the name the client sends."""
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception:  # msgspec resolved them already; nothing to add if Python cannot
        return {}
    if issubclass(cls, msgspec.Struct):
        names = zip(cls.__struct_fields__, cls.__struct_encode_fields__, strict=True)
        return {encoded: hints[name] for name, encoded in names}
    if dataclasses.is_dataclass(cls):
        return {field.name: hints[field.name] for field in dataclasses.fields(cls)}
    return {key: _without_required(hint) for key, hint in hints.items()}


_REQUIRED_MARKERS = (typing.Required, typing.NotRequired)


def _without_required(hint: Any) -> Any:
    """Return a TypedDict key's type without ``Required[...]``/``NotRequired[...]``.

    SECURITY: the markers hid the key's ``int`` from :func:`_scalars`, so a form's
    ``NotRequired[int]`` went to msgspec's lax conversion, which reads ``"1e3"`` as 1000.
    """
    if typing.get_origin(hint) is Annotated:
        inner = _without_required(hint.__origin__)
        return hint if inner is hint.__origin__ else Annotated[(inner, *hint.__metadata__)]
    while typing.get_origin(hint) in _REQUIRED_MARKERS:
        hint = typing.get_args(hint)[0]
    return hint


# -- every error at once (only when a conversion failed) -------------------------------------
#
# The successful request is converted by one msgspec call, which stops at the first error. Once
# it has failed, the value is walked field by field to find every error: models (Structs,
# dataclasses, TypedDicts) by field, variable-length sequences by item, `X | None` (in JSON)
# through its `X`; anything else is a leaf, converted whole by the same msgspec rules as the
# fast path, so the walk reports what msgspec would have reported, only all of it.

# SECURITY: the walk of a failed request is bounded, whatever the body: at most _MAX_ERRORS
# errors are reported, and at most _MAX_VISITS fields and items are visited (each one once, a
# leaf's value converted once), so a 1 MiB body of a million wrong items costs a bounded
# Python loop. The walk's recursion follows the document, whose depth max_json_depth bounds.
_MAX_ERRORS = 100
_MAX_VISITS = 10_000
# Constraints a msgspec.Meta may carry; a constrained type is checked whole (a leaf).
_CONSTRAINTS = ("gt", "ge", "lt", "le", "multiple_of", "pattern", "min_length", "max_length", "tz")


class _Findings:
    """The errors found so far by a field-by-field walk, and the visits left."""

    __slots__ = ("errors", "visits")

    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []
        self.visits = _MAX_VISITS

    def done(self) -> bool:
        return self.visits <= 0 or len(self.errors) >= _MAX_ERRORS

    def add(self, path: str, message: str) -> None:
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append({"path": path, "message": message})


_Check = Callable[[Any, str, _Findings], None]
"""Check a value found at a dotted path, adding its errors to the findings."""


class _Rules(NamedTuple):
    """How a kind of input is checked: its leaves' conversion, and its messages."""

    leaf: Callable[[Any], Callable[[Any], Any]]  # annotation -> a converter that may raise
    missing: str  # "... `{}`", the missing field's name
    unknown: str  # "... `{}`", the unknown key
    nullable: bool  # JSON: `X | None` is walked through X, None being null


# The generic decode of a failed JSON body keeps every number's text (a float as a Decimal,
# re-encoded as the same number), so a leaf re-decoded with its type meets exactly the JSON
# the fast path met.
_JSON_DOCUMENT = msgspec.json.Decoder(float_hook=decimal.Decimal)
_JSON_LEAF_TEXT = msgspec.json.Encoder(decimal_format="number")


def _json_leaf(annotation: Any) -> Callable[[Any], Any]:
    decoder = msgspec.json.Decoder(annotation)
    return lambda value: decoder.decode(_JSON_LEAF_TEXT.encode(value))


def _string_leaf(annotation: Any) -> Callable[[Any], Any]:
    scalars = _scalars(annotation, set()) or _identity_at
    return lambda value: msgspec.convert(scalars(value, "$"), annotation, strict=False)


_JSON_RULES = _Rules(
    _json_leaf, "Object missing required field `{}`", "Object contains unknown field `{}`", True
)
_FORM_RULES = _Rules(
    _string_leaf, "Object missing required field `{}`", "Object contains unknown field `{}`", False
)
_QUERY_RULES = _Rules(
    _string_leaf, "Missing required query parameter `{}`", "Unknown query parameter `{}`", False
)


def _every_error(
    check: _Check | None, value: Any, name: str, first: Exception
) -> list[dict[str, str]]:
    """Return every error of ``value`` (the document's root reported at ``name``).

    ``first`` is the error msgspec stopped at; it is the answer when the walk finds nothing
    of its own (a ``__post_init__`` that raised, a tagged union...).
    """
    findings = _Findings()
    if check is not None:
        check(value, "", findings)
    if not findings.errors:
        return _fail(name, first).errors
    return [{"path": e["path"] or name, "message": e["message"]} for e in findings.errors]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path and key else path or key


def _compile_check(annotation: Any, rules: _Rules, models: dict[Any, _Check]) -> _Check:
    """Compile the field-by-field check of ``annotation`` (``models`` memoises recursion)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        if any(_constrains(meta) for meta in annotation.__metadata__):
            return _leaf_check(rules.leaf(annotation))
        return _compile_check(annotation.__origin__, rules, models)
    if origin is typing.Union or _is_union_type(annotation):
        members = typing.get_args(annotation)
        if rules.nullable and len(members) == 2 and type(None) in members:
            inner = members[0] if members[1] is type(None) else members[1]
            return functools.partial(_nullable_check, _compile_check(inner, rules, models))
        return _leaf_check(rules.leaf(annotation))
    arguments = typing.get_args(annotation)
    if origin in _SEQUENCES and (
        (origin is not tuple and len(arguments) == 1)
        or (origin is tuple and len(arguments) == 2 and arguments[1] is Ellipsis)
    ):
        item = _compile_check(arguments[0], rules, models)
        return functools.partial(_sequence_check, item, _leaf_check(rules.leaf(annotation)))
    if _is_model(annotation):
        known = models.get(annotation)
        return known if known is not None else _model_check(annotation, rules, models)
    return _leaf_check(rules.leaf(annotation))


def _constrains(meta: Any) -> bool:
    return isinstance(meta, msgspec.Meta) and any(
        getattr(meta, constraint) is not None for constraint in _CONSTRAINTS
    )


def _model_info(model: type) -> Any:
    return msgspec_inspect.type_info(model)


def _model_check(model: type, rules: _Rules, models: dict[Any, _Check]) -> _Check:
    whole = _leaf_check(rules.leaf(model))
    info = _model_info(model)
    hints = _fields(model)
    if not hints or getattr(info, "array_like", False):
        models[model] = whole
        return whole
    fields: dict[str, _Check] = {}
    required = tuple(field.encode_name for field in info.fields if field.required)
    forbid = bool(getattr(info, "forbid_unknown_fields", False))
    tag_field = getattr(info, "tag_field", None)

    def check(value: Any, path: str, findings: _Findings) -> None:
        if not isinstance(value, dict):
            whole(value, path, findings)
            return
        for key, element in value.items():
            if findings.done():
                return
            findings.visits -= 1
            field = fields.get(key)
            if field is not None:
                field(element, _join(path, key), findings)
            elif forbid and key != tag_field:
                findings.add(_join(path, key), rules.unknown.format(key))
        for key in required:
            if key not in value:
                findings.add(_join(path, key), rules.missing.format(key))

    models[model] = check  # before the fields: a recursive model refers to itself
    for field in info.fields:
        hint = hints.get(field.encode_name)
        if hint is not None:
            fields[field.encode_name] = _compile_check(hint, rules, models)
    return check


def _leaf_check(convert: Callable[[Any], Any]) -> _Check:
    def check(value: Any, path: str, findings: _Findings) -> None:
        try:
            convert(value)
        except msgspec.ValidationError as ex:
            location, message = _error_path(str(ex), "")
            findings.add(_join(path, location), message)

    return check


def _nullable_check(inner: _Check, value: Any, path: str, findings: _Findings) -> None:
    if value is not None:
        inner(value, path, findings)


def _sequence_check(
    item: _Check, whole: _Check, value: Any, path: str, findings: _Findings
) -> None:
    if not isinstance(value, list):
        whole(value, path, findings)
        return
    for index, element in enumerate(value):
        if findings.done():
            return
        findings.visits -= 1
        item(element, _join(path, str(index)), findings)


def _fail(name: str, ex: Exception, *, under_name: bool = False) -> _Failure:
    """Report a conversion error at its location: inside the body document (the parameter
    name at the root), or ``under_name`` for a list from the query (``"tags.1"``)."""
    location, message = _error_path(str(ex), name)
    if under_name and location != name:
        location = f"{name}.{location}"
    return _Failure([{"path": location, "message": message}])


def _path_resolver(name: str, convert: Callable[[Any], Any]) -> Resolver:
    def resolve(event: HttpEvent) -> Any:
        try:
            return convert(event.path_params[name])
        except (msgspec.ValidationError, ValueError) as ex:
            raise _fail(name, ex) from None

    return resolve


def _scalar_resolver(
    name: str,
    label: str,
    default: Any,
    convert: Callable[[Any], Any],
    read: Callable[[HttpEvent], str | None],
) -> Resolver:
    def resolve(event: HttpEvent) -> Any:
        raw = read(event)
        if raw is None:
            if default is _MISSING:
                raise _Failure([{"path": name, "message": f"Missing required value `{label}`"}])
            return default
        try:
            return convert(raw)
        except (msgspec.ValidationError, ValueError) as ex:
            raise _fail(name, ex) from None

    return resolve


def _query_resolver(
    name: str, query_name: str, annotation: Any, bare: Any, default: Any, where: str
) -> Resolver:
    many = typing.get_origin(bare) in (list, tuple, set, frozenset)
    convert = _converter(annotation, where)
    # A repeated key's values are checked one by one once their conversion failed.
    check = _compile_check(_without_sources(annotation), _QUERY_RULES, {}) if many else None

    def resolve(event: HttpEvent) -> Any:
        values = query_of(event).get(query_name)
        if values is None:
            if default is _MISSING:
                raise _Failure(
                    [{"path": name, "message": f"Missing required query parameter `{query_name}`"}]
                )
            return default
        try:
            return convert(values if many else values[0])
        except (msgspec.ValidationError, ValueError) as ex:
            if check is None:
                raise _fail(name, ex, under_name=True) from None
            errors = _every_error(check, values, name, ex)
            for error in errors:  # "tags.1": the position under the parameter's name
                if error["path"] != name:
                    error["path"] = _join(name, error["path"])
            raise _Failure(errors) from None

    return resolve


def _query_model_resolver(
    name: str,
    annotation: Any,
    model: type,
    default: Any,
    where: str,
    source: Query,
    claimed: set[str],
) -> Resolver:
    """Build ``Annotated[Model, Query()]`` from the query parameters, one key per field.

    A list field takes every value of a repeated key; an unknown key is ignored unless the
    model forbids unknown fields (a key another query parameter of the controller reads is
    not unknown); a field missing from the query takes the model's default.
    """
    if source.name:
        raise ConfigurationError(
            f"{where}: a query model reads one query parameter per field; "
            f"Query({source.name!r}) cannot name it (write Query())"
        )
    annotation = _without_sources(annotation)
    _check_convertible(annotation, where)
    hints = _fields(model)
    info = _model_info(model)
    keys = frozenset(field.encode_name for field in info.fields)
    many: set[str] = set()
    for key in keys:
        field_type = _unwrap(hints.get(key, str))[0]
        origin = typing.get_origin(field_type)
        if _is_body_type(field_type) or origin in _MAPPINGS or field_type is dict:
            raise ConfigurationError(
                f"{where}: field {key!r} of the query model {model.__qualname__} cannot come "
                f"from the query: a query model's fields are simple values or lists of them"
            )
        if origin in (list, tuple, set, frozenset):
            many.add(key)
    claimed.update(keys)
    forbid = bool(getattr(info, "forbid_unknown_fields", False))
    # SECURITY: the query's strings are converted like every other query parameter's
    # (see _converter): integers by parse_int, booleans by _client_bool.
    scalars = _scalars(annotation, set()) or _identity_at
    check = _compile_check(model, _QUERY_RULES, {})

    def resolve(event: HttpEvent) -> Any:
        query = query_of(event)
        if default is not _MISSING and keys.isdisjoint(query):
            return default
        data = {
            key: values if key in many else values[0]
            for key, values in query.items()
            if key in keys or (forbid and key not in claimed)
        }
        try:
            return msgspec.convert(scalars(data, "$"), annotation, strict=False)
        except msgspec.ValidationError as ex:
            raise _Failure(_every_error(check, data, name, ex)) from None

    return resolve


# Text no cookie name or value may hold: control characters, and U+FFFD, which stands for a
# byte that was not UTF-8 (the header is decoded with errors="replace").
_BAD_COOKIE_TEXT = re.compile("[\x00-\x1f\x7f\ufffd]")


def _cookies(event: HttpEvent) -> Mapping[str, str]:
    """Return the request's cookies, without the malformed pairs.

    SECURITY: a cookie pair whose bytes are not UTF-8 or that holds a control character is
    dropped and the request goes on with the others: one bad cookie (forged, or set by
    another application on the domain) must not make every request of the site a 400.
    """
    header: str = event.environ.get("HTTP_COOKIE", "")
    if not header:
        return {}
    if not header.isascii():
        with contextlib.suppress(UnicodeEncodeError):  # else not latin-1 (WSGI): already text
            header = header.encode("latin-1").decode("utf-8", "replace")
    cookies = parse_cookie(header)
    # PERF: a clean header (no bad text, no escapes in quoted values) needs no second look.
    if _BAD_COOKIE_TEXT.search(header) is None and "\\" not in header:
        return cookies
    return MultiDict(
        (name, value)
        for name, value in cookies.items(multi=True)
        if _BAD_COOKIE_TEXT.search(name) is None and _BAD_COOKIE_TEXT.search(value) is None
    )


_JSON_TYPES = ("application/json",)
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _body_resolver(name: str, annotation: Any, bare: Any, default: Any, where: str) -> Resolver:
    annotation = _without_sources(annotation)
    raw = bare in (bytes, bytearray)
    text = bare is str
    if not (raw or text):
        _check_convertible(annotation, where)
    decoder = msgspec.json.Decoder(annotation) if not (raw or text) else None
    # SECURITY: form fields are strings, converted like the query's (see _converter).
    form_scalars = _scalars(annotation, set()) or _identity_at
    # The checks that find every error once a conversion failed (see _compile_check).
    json_check = form_check = None
    form_lists: frozenset[str] = frozenset()
    if not (raw or text):
        json_check = _compile_check(annotation, _JSON_RULES, {})
        form_check = _compile_check(annotation, _FORM_RULES, {})
        form_lists = _list_fields(bare)

    def resolve(event: HttpEvent) -> Any:
        content_type = event.environ.get("CONTENT_TYPE", "")
        mimetype = content_type.partition(";")[0].strip().lower()
        if mimetype in _FORM_TYPES and not (raw or text):
            form = event.request.form
            if not form and default is not _MISSING:
                return default
            data = {
                key: values if len(values) != 1 or key in form_lists else values[0]
                for key, values in form.lists()
            }
            try:
                return msgspec.convert(form_scalars(data, "$"), annotation, strict=False)
            except msgspec.ValidationError as ex:
                raise _Failure(_every_error(form_check, data, name, ex)) from None
        body = read_body(event)
        if not body:
            if default is not _MISSING:
                return default
            raise _Failure([{"path": name, "message": "Missing request body"}])
        if raw:
            return body
        if text:
            try:
                return body.decode("utf-8")
            except UnicodeDecodeError:
                raise _Failure([{"path": name, "message": "Body is not valid UTF-8"}]) from None
        # SECURITY: a JSON body must say so. A browser sends a cross-site POST with no
        # Content-Type (or text/plain) without asking the server first (no CORS preflight),
        # cookies included: decoding it would open cookie-authenticated routes to CSRF.
        if mimetype not in _JSON_TYPES and not mimetype.endswith("+json"):
            raise UnsupportedMediaType(
                f"Cannot decode {mimetype or 'a body without Content-Type'} into {name}"
            )
        check_json_depth(body, event.app.limits.max_json_depth)
        try:
            return decoder.decode(body)  # type: ignore[union-attr]
        except msgspec.ValidationError as ex:
            raise _json_failure(name, body, json_check, ex) from None
        except UnicodeDecodeError:
            raise BadRequest("Invalid JSON: not valid UTF-8") from None
        except (msgspec.DecodeError, RecursionError) as ex:
            raise BadRequest(_invalid_json(ex, body)) from None

    return resolve


def _list_fields(model: Any) -> frozenset[str]:
    """Return the keys of ``model``'s list fields, which take a form's one value as a list."""
    if not _is_model(model):
        return frozenset()
    return frozenset(
        key
        for key, hint in _fields(model).items()
        if typing.get_origin(_unwrap(hint)[0]) in (list, tuple, set, frozenset)
    )


def json_errors(annotation: Any, body: bytes) -> tuple[Any, list[dict[str, str]]]:
    """Decode the JSON ``body`` generically; return it and every error it has as ``annotation``.

    The errors are those a body parameter of that type reports (each problem, with its dotted
    path); none when the document is valid. For code that validates a document beyond its
    types and reports both kinds of problem together (the hooks' registrations).

    Raises:
        BadRequest: the document is malformed ("Invalid JSON", with the byte offset).
    """
    try:
        document = _JSON_DOCUMENT.decode(body)
    except UnicodeDecodeError:
        raise BadRequest("Invalid JSON: not valid UTF-8") from None
    except (msgspec.DecodeError, RecursionError) as ex:
        raise BadRequest(_invalid_json(ex, body)) from None
    decoder, check = _json_checker(annotation)
    try:
        decoder.decode(body)
    except msgspec.ValidationError as ex:
        return document, _every_error(check, document, "body", ex)
    return document, []


@functools.lru_cache(maxsize=64)
def _json_checker(annotation: Any) -> tuple[msgspec.json.Decoder[Any], _Check]:
    return msgspec.json.Decoder(annotation), _compile_check(annotation, _JSON_RULES, {})


def _json_failure(
    name: str, body: bytes, check: _Check | None, error: msgspec.ValidationError
) -> Exception:
    """Return the error for a JSON body that failed validation: every error in it, or a 400
    "Invalid JSON" when the document is malformed (a typed decode of a truncated document
    may fail on a field's type before it reaches the end)."""
    try:
        document = _JSON_DOCUMENT.decode(body)
    except UnicodeDecodeError:
        return BadRequest("Invalid JSON: not valid UTF-8")
    except (msgspec.DecodeError, RecursionError) as ex:
        return BadRequest(_invalid_json(ex, body))
    return _Failure(_every_error(check, document, name, error))


def _invalid_json(ex: Exception, body: bytes) -> str:
    """Say what is wrong with a malformed JSON document, and where (its byte offset)."""
    message = str(ex)
    if "byte" not in message:  # msgspec says where, except for a truncated document
        message = f"{message} (byte {len(body)})"
    return f"Invalid JSON: {message}"
