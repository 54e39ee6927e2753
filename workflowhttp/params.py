"""Parameter plans: how each controller argument is found, decided once per route at start-up.

For every parameter of a controller, in this order:

1. its name is a path parameter → the matched path value, converted to the annotation;
2. ``Annotated[T, Query("n")]``, ``Header("X-Key")``, ``Cookie("n")`` or ``Body()`` → that source;
3. ``HttpEvent``, ``Request`` or a provided service type → injected;
4. a dataclass, ``msgspec.Struct`` or ``TypedDict`` (or a list of them) → the request body,
   decoded from JSON (or converted from form data);
5. any other type ``msgspec`` can convert (``str``, ``int``, ``bool``, ``UUID``, ``date``,
   ``Literal``, ``list[int]`` for repeated keys, ...) → the query string.

A default makes a parameter optional. Conversion uses ``msgspec`` (strict for JSON, lax for
strings from the path, query, headers, cookies and forms), except that an integer from a string
is only ever an optional sign and decimal digits (:func:`~workflowhttp.numbers.parse_int`).
Every failure is collected into one :class:`~workflowhttp.errors.ParametersFailed` (400), each
error at its path: the parameter name, or the dotted location inside the body document
(``"user.age"``, ``"items.0.name"``).
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import msgspec.inspect as msgspec_inspect
from werkzeug.datastructures import MultiDict
from werkzeug.sansio.http import parse_cookie

from .errors import BadRequest, ConfigurationError, ParametersFailed, UnsupportedMediaType
from .numbers import MAX_DIGITS, parse_int
from .request import check_json_depth, query_of, read_body

if TYPE_CHECKING:
    from .di import Container
    from .events import HttpEvent

__all__ = ["Body", "Cookie", "Header", "ParameterPlan", "Query", "build_plan"]

_MISSING: Any = object()
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


class ParameterPlan:
    """The resolvers of one controller's parameters, in signature order."""

    __slots__ = ("resolvers", "names")

    def __init__(self, resolvers: list[tuple[str, Resolver]]) -> None:
        self.resolvers = tuple(resolvers)
        self.names = tuple(name for name, _ in resolvers)

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
    resolvers: list[tuple[str, Resolver]] = []
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
        resolvers.append(
            (
                parameter.name,
                _resolver(parameter.name, annotation, default, path_names, container, where),
            )
        )
    return ParameterPlan(resolvers)


def _resolver(
    name: str,
    annotation: Any,
    default: Any,
    path_names: tuple[str, ...] | None,
    container: Container,
    where: str,
) -> Resolver:
    bare, source = _unwrap(annotation)
    if bare is object:
        raise ConfigurationError(
            f"{where}: `object` says nothing of what the parameter receives; annotate it with "
            f"a path, query, header, cookie or body type, HttpEvent, Request or a service"
        )
    if source is None and path_names is not None and name in path_names:
        return _path_resolver(name, _converter(annotation, where))
    if source is None and isinstance(bare, type) and container.provides(bare):
        return container.accessor(bare, consumer=where, request_scope=True)
    if isinstance(source, Body) or (source is None and _is_body_type(bare)):
        return _body_resolver(name, annotation, bare, default, where)
    if isinstance(source, Header):
        header = source.name or name.replace("_", "-")
        key = header.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        convert = _converter(annotation, where)
        return _scalar_resolver(
            name, header, default, convert, lambda event: event.environ.get(key)
        )
    if isinstance(source, Cookie):
        cookie = source.name or name
        convert = _converter(annotation, where)
        return _scalar_resolver(
            name, cookie, default, convert, lambda event: _cookies(event).get(cookie)
        )
    query_name = source.name if isinstance(source, Query) and source.name else name
    from_query = _query_resolver(name, query_name, annotation, bare, default, where)
    if path_names is not None or source is not None:
        return from_query
    from_path = _path_resolver(name, _converter(annotation, where))

    def from_path_or_query(event: HttpEvent) -> Any:
        return from_path(event) if name in event.path_params else from_query(event)

    return from_path_or_query


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


def _is_body_type(annotation: Any) -> bool:
    """Dataclasses, Structs and TypedDicts (or lists of them) come from the body."""
    if isinstance(annotation, type) and (
        dataclasses.is_dataclass(annotation)
        or issubclass(annotation, msgspec.Struct)
        or typing.is_typeddict(annotation)
    ):
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
    ``"1e3"`` for 1000 and ``"1.0"`` for 1.
    """
    bare, _ = _unwrap(annotation)
    # Strip our source markers: msgspec does not know them.
    annotation = _without_sources(annotation)
    if bare is str and annotation is str:
        return _identity
    if bare is int and annotation is int:
        return _to_int
    _check_convertible(annotation, where)
    integers = _integers(annotation, set())
    if integers is None:
        return lambda value: msgspec.convert(value, annotation, strict=False)
    return lambda value: msgspec.convert(integers(value, "$"), annotation, strict=False)


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


_Integers = Callable[[Any, str], Any]
"""Replace a client's strings at the ``int`` positions of a value (the second argument is the
position, msgspec-style: ``$``, ``$[1]``, ``$.age``)."""
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


def _integers(annotation: Any, seen: set[Any]) -> _Integers | None:
    """Compile what parses the strings at the ``int`` positions of ``annotation``.

    Returns ``None`` when ``annotation`` holds no integer (nothing to do). A union that
    accepts ``str`` keeps its strings (msgspec never makes an int of them).
    """
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _integers(annotation.__origin__, seen)
    if annotation is int:
        return _integer_leaf
    if origin is typing.Union or _is_union_type(annotation):
        return _integer_union(typing.get_args(annotation), seen)
    if origin in _SEQUENCES:
        arguments = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if origin is tuple and len(arguments) > 1:
            items = [_integers(a, seen) for a in arguments]
            if not any(items):
                return None
            return functools.partial(_integer_tuple, tuple(items))
        item = _integers(arguments[0], seen) if arguments else None
        return functools.partial(_integer_items, item) if item else None
    if origin in _MAPPINGS:
        arguments = list(typing.get_args(annotation))
        item = _integers(arguments[1], seen) if len(arguments) == 2 else None
        return functools.partial(_integer_values, item) if item else None
    if isinstance(annotation, type) and _is_body_type(annotation) and annotation not in seen:
        seen.add(annotation)  # a recursive type is walked once
        fields = {key: _integers(hint, seen) for key, hint in _fields(annotation).items()}
        found = {key: item for key, item in fields.items() if item is not None}
        return functools.partial(_integer_fields, found) if found else None
    return None


def _integer_leaf(value: Any, at: str) -> Any:
    return _client_int(value, at) if isinstance(value, str) else value


def _integer_union(members: tuple[Any, ...], seen: set[Any]) -> _Integers | None:
    plain = [_without_sources(m) for m in members]
    if any(_unwrap(m)[0] is str for m in plain):
        return None
    integers = [m for m in plain if _unwrap(m)[0] is int]
    others = [m for m in plain if _unwrap(m)[0] is not int]
    containers = [item for item in (_integers(m, seen) for m in others) if item is not None]
    if not integers:
        if not containers:
            return None
        return containers[0]
    rest: Any = typing.Union[tuple(others)] if others else None  # noqa: UP007

    def parse(value: Any, at: str) -> Any:
        if not isinstance(value, str):
            return containers[0](value, at) if containers else value
        try:
            return _client_int(value, at)
        except msgspec.ValidationError as error:
            if rest is None:
                raise
            failure = error
        # Not an integer: the other members may take it ("null", a float...), int may not.
        try:
            return msgspec.convert(value, rest, strict=False)
        except msgspec.ValidationError:
            raise failure from None

    return parse


def _integer_items(item: _Integers, value: Any, at: str) -> Any:
    if not isinstance(value, list):
        return value
    return [item(element, f"{at}[{index}]") for index, element in enumerate(value)]


def _integer_tuple(items: tuple[_Integers | None, ...], value: Any, at: str) -> Any:
    if not isinstance(value, list):
        return value
    return [
        items[index](element, f"{at}[{index}]")  # type: ignore[misc]
        if index < len(items) and items[index] is not None
        else element
        for index, element in enumerate(value)
    ]


def _integer_values(item: _Integers, value: Any, at: str) -> Any:
    if not isinstance(value, dict):
        return value
    return {key: item(element, f"{at}[...]") for key, element in value.items()}


def _integer_fields(fields: dict[str, _Integers], value: Any, at: str) -> Any:
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
    return dict(hints)


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
            raise _fail(name, ex, under_name=True) from None

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
    form_integers = _integers(annotation, set()) or _identity_at

    def resolve(event: HttpEvent) -> Any:
        content_type = event.environ.get("CONTENT_TYPE", "")
        mimetype = content_type.partition(";")[0].strip().lower()
        if mimetype in _FORM_TYPES and not (raw or text):
            form = event.request.form
            if not form and default is not _MISSING:
                return default
            data = {key: values[0] if len(values) == 1 else values for key, values in form.lists()}
            try:
                return msgspec.convert(form_integers(data, "$"), annotation, strict=False)
            except msgspec.ValidationError as ex:
                raise _fail(name, ex) from None
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
            raise _fail(name, ex) from None
        except UnicodeDecodeError:
            raise BadRequest("Invalid JSON: not valid UTF-8") from None
        except (msgspec.DecodeError, RecursionError) as ex:
            raise BadRequest(f"Invalid JSON: {ex}") from None

    return resolve
