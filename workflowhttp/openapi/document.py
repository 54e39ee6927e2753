"""The OpenAPI 3.1 document of an app's routes, built from their parameter plans.

What each part comes from:

* **operations**: one per route and method (``ANY`` is every method but ``HEAD``, ``OPTIONS``
  and ``TRACE``; the automatic ``HEAD`` and ``OPTIONS`` are not listed). ``operationId`` is
  the route name (``name.method`` when the route has several methods; a repeat gets ``.2``);
  the tag is the controller class, else the route's first group; the summary is the route's
  ``.description()``, the description the controller's docstring;
* **parameters**: the plan's path, query, header and cookie parameters
  (:class:`~workflowhttp.params.ParameterInfo`), required unless they have a default; a query
  model is one query parameter per field;
* **request bodies**: the body parameter: JSON, and forms too for a dataclass, Struct or
  TypedDict; ``text/plain`` for ``str``, ``application/octet-stream`` for ``bytes``. A route
  whose controller reads the raw body and validates it itself declares the type with
  ``.data("body", Type)`` (the hooks' registrations do);
* **schemas**: every type, nested ones included, is given to ``msgspec.json.schema_components``
  once; models become ``components/schemas``, constraints (``msgspec.Meta``) their keywords;
* **responses**: the return annotation (``None`` → 204, ``X | None`` → 200 and 204,
  ``tuple[X, Literal[201]]`` → 201, ``tuple[X, int]`` → ``2XX``, a ``Response`` → ``default``;
  ``.data("status", 201)`` on the route overrides the status; ``.data("responses", {409:
  "text"})`` adds the error answers it raises, with the kernel's error body), then the
  kernel's answers as ``components/responses``: 400 (with ``errors``) and 500 everywhere,
  404 where the path has parameters, 413 and 415 where there is a body, 403 in the groups an
  auth listener guards (``OpenAPI(guarded_groups=...)``), 502/503/504 on proxy routes. The
  405 is a component too; no operation lists it, since it answers the methods the path does
  not have.

A route with ``.data("openapi", False)`` is left out, as are the document's own routes.
"""

from __future__ import annotations

import collections.abc
import contextlib
import copy
import dataclasses
import http
import inspect
import types
import typing
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
import msgspec.inspect as msgspec_inspect

from ..params import ParameterInfo
from ..responses import HTMLResponse, JSONResponse, Response
from ..routing import ANY, Route
from ..routing.paths import PARAM

if TYPE_CHECKING:
    from . import OpenAPI

__all__ = ["build_document"]

OPENAPI_VERSION = "3.1.0"
_SCHEMAS = "#/components/schemas/"
_RESPONSES = "#/components/responses/"
# What ANY stands for in the document: the methods a client sends to an API.
_ANY_METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH")
_JSON = "application/json"
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


# -- the kernel's answers ------------------------------------------------------------------------

_ERROR = {
    "type": "object",
    "description": "The kernel's error answer.",
    "properties": {"message": {"type": "string"}},
    "required": ["message"],
}
_PARAMETER_ERROR = {
    "type": "object",
    "properties": {
        "path": {
            "type": "string",
            "description": "The parameter's name, or the dotted location in the body "
            '("user.age", "items.0.name").',
        },
        "message": {"type": "string"},
    },
    "required": ["path", "message"],
}


def _parameters_failed(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "A bad request; ``errors`` lists each parameter that failed.",
        "properties": {
            "message": {"type": "string"},
            "errors": {"type": "array", "items": {"$ref": _SCHEMAS + item}},
        },
        "required": ["message"],
    }


# (component name, status, description, schema): the answers the framework itself gives.
_KERNEL_ANSWERS = (
    ("BadRequest", 400, "Bad request: a parameter or the body failed (each at its path), "
     "or the request is malformed.", "ParametersFailed"),
    ("AccessDenied", 403, "Access denied (an auth listener refused the request).", "Error"),
    ("NotFound", 404, "Not found.", "Error"),
    ("MethodNotAllowed", 405, "The path has no such method; ``Allow`` lists those it has.",
     "Error"),
    ("PayloadTooLarge", 413, "The body is larger than the app's ``max_content_length``.",
     "Error"),
    ("UnsupportedMediaType", 415, "The body's ``Content-Type`` is not one the route decodes.",
     "Error"),
    ("InternalServerError", 500, "The server failed (logged).", "Error"),
)  # fmt: skip
_PROXY_ANSWERS = (
    ("BadGateway", 502, "The upstream refused the connection or answered garbage.", "Error"),
    ("ServiceUnavailable", 503, "No upstream is available.", "Error"),
    ("GatewayTimeout", 504, "The upstream did not answer in time.", "Error"),
)
_OUR_SCHEMAS = ("Error", "ParameterError", "ParametersFailed")


# -- the document --------------------------------------------------------------------------------


def build_document(routes: Iterable[Route], config: OpenAPI) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of ``routes`` (see the module docstring)."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, str] = {}
    operation_ids: set[str] = set()
    proxied = False
    declaring: list[tuple[dict[str, Any], Route]] = []
    for route in routes:
        marker = route.data.get("openapi")
        if marker is not None and marker is not True:
            continue  # left out (False), or the document's own routes (their OpenAPI)
        methods = _ANY_METHODS if ANY in route.methods else route.methods
        is_proxy = _is_proxy(route)
        proxied = proxied or is_proxy
        tag = _tag(route, tags)
        item = paths.setdefault(_openapi_path(route.path), {})
        for method in methods:
            operation: dict[str, Any] = {"tags": [tag]} if tag else {}
            operation["operationId"] = _unique(
                f"{route.name}.{method.lower()}" if len(methods) > 1 else route.name,
                operation_ids,
            )
            _describe_operation(operation, route, method, config, schemas, is_proxy)
            item[method.lower()] = operation
            declaring.append((operation, route))
    components = schemas.finish()
    names = _our_names(components)
    for operation, route in declaring:
        _declared_answers(operation, route, names["Error"])
    components.update(
        {
            names["Error"]: copy.deepcopy(_ERROR),  # the caller may change its document
            names["ParameterError"]: copy.deepcopy(_PARAMETER_ERROR),
            names["ParametersFailed"]: _parameters_failed(names["ParameterError"]),
        }
    )
    answers = (*_KERNEL_ANSWERS, *(_PROXY_ANSWERS if proxied else ()))
    responses = {
        name: {
            "description": description,
            "content": {_JSON: {"schema": {"$ref": _SCHEMAS + names[schema]}}},
            **({"headers": {"Allow": {"schema": {"type": "string"}}}} if status == 405 else {}),
        }
        for name, status, description, schema in answers
    }
    info: dict[str, Any] = {"title": config.title, "version": config.version}
    if config.description:
        info["description"] = config.description
    document: dict[str, Any] = {"openapi": OPENAPI_VERSION, "info": info}
    if config.servers:
        document["servers"] = [{"url": url} for url in config.servers]
    if tags:
        document["tags"] = [
            {"name": name, **({"description": text} if text else {})} for name, text in tags.items()
        ]
    document["paths"] = paths
    document["components"] = {
        "schemas": dict(sorted(components.items())),
        "responses": responses,
    }
    return document


def _our_names(components: dict[str, Any]) -> dict[str, str]:
    """Name the kernel's schemas, prefixed ``workflowhttp.`` where the app has one alike."""
    return {name: f"workflowhttp.{name}" if name in components else name for name in _OUR_SCHEMAS}


def _describe_operation(
    operation: dict[str, Any],
    route: Route,
    method: str,
    config: OpenAPI,
    schemas: _Schemas,
    is_proxy: bool,
) -> None:
    """Add the texts, parameters, body and responses of ``route``'s ``method`` operation."""
    summary, description = _texts(route)
    if summary:
        operation["summary"] = summary
    if description:
        operation["description"] = description
    parameters_read = route.plan.parameters if route.plan is not None else ()
    parameters = [
        parameter for info in parameters_read for parameter in _parameters(info, route, schemas)
    ]
    if parameters:
        operation["parameters"] = parameters
    body = _request_body(route, method, parameters_read, schemas, is_proxy)
    if body is not None:
        operation["requestBody"] = body
    responses = {} if is_proxy else _success(route, schemas)
    if is_proxy:
        responses["default"] = {"description": "The upstream's answer."}

    def answer(status: int, name: str) -> None:
        responses.setdefault(str(status), {"$ref": _RESPONSES + name})

    answer(400, "BadRequest")
    if set(route.groups) & set(config.guarded_groups):
        answer(403, "AccessDenied")
    if route.param_names:
        answer(404, "NotFound")
    if body is not None:
        answer(413, "PayloadTooLarge")
        if not is_proxy:
            answer(415, "UnsupportedMediaType")
    answer(500, "InternalServerError")
    if is_proxy:
        for name, status, _, _ in _PROXY_ANSWERS:
            answer(status, name)
    operation["responses"] = dict(sorted(responses.items(), key=_status_order))


def _declared_answers(operation: dict[str, Any], route: Route, error: str) -> None:
    """Add the error answers the route declares, ``.data("responses", {409: "text"})``: each
    with the kernel's ``{"message": ...}`` body (what an ``HTTPError`` the controller raises
    renders). The route's own answers and the kernel's of the same status are kept."""
    declared = route.data.get("responses")
    if not isinstance(declared, dict) or not declared:
        return
    responses = operation["responses"]
    for status, description in declared.items():
        responses.setdefault(
            str(status),
            {
                "description": str(description),
                "content": {_JSON: {"schema": {"$ref": _SCHEMAS + error}}},
            },
        )
    operation["responses"] = dict(sorted(responses.items(), key=_status_order))


def _status_order(item: tuple[str, Any]) -> tuple[int, str]:
    key = item[0]
    return (1, key) if key == "default" else (0, key)


# -- parameters ----------------------------------------------------------------------------------


def _parameters(info: ParameterInfo, route: Route, schemas: _Schemas) -> list[dict[str, Any]]:
    """Return the OpenAPI parameters of one controller parameter (several: a query model)."""
    source = info.source
    if source not in ("path", "query", "header", "cookie"):
        return []
    if source == "query" and _is_model(_optional_inner(info.annotation)):
        return _query_model(info, schemas)
    if source == "path" and info.name not in route.param_names:
        return []  # a claimed route's parameter; no path placeholder names it
    parameter: dict[str, Any] = {
        "name": info.name,
        "in": source,
        "required": source == "path" or info.required,
        "schema": _with_default(schemas.ref(_optional_inner(info.annotation)), info.default),
    }
    return [parameter]


def _query_model(info: ParameterInfo, schemas: _Schemas) -> list[dict[str, Any]]:
    """One query parameter per field of a query model (``Annotated[Model, Query()]``)."""
    model = _optional_inner(info.annotation)
    hints = _model_hints(model)
    parameters = []
    model_info: Any = msgspec_inspect.type_info(model)  # a Struct, dataclass or TypedDict type
    for field in model_info.fields:
        hint = hints.get(field.name, str)
        schema = schemas.ref(_optional_inner(hint))
        if field.default is not msgspec.NODEFAULT:
            _with_default(schema, field.default)
        elif field.default_factory is not msgspec.NODEFAULT:
            _with_default(schema, field.default_factory())
        parameters.append(
            {
                "name": field.encode_name,
                "in": "query",
                "required": info.required and field.required,
                "schema": schema,
            }
        )
    return parameters


def _model_hints(model: type) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(model, include_extras=True)
    except Exception:  # msgspec resolved them for the plan; only Python cannot here
        return {}
    return {name: _without_required(hint) for name, hint in hints.items()}


def _without_required(hint: Any) -> Any:
    while typing.get_origin(hint) in (typing.Required, typing.NotRequired):
        hint = typing.get_args(hint)[0]
    return hint


def _with_default(schema: dict[str, Any], default: Any) -> dict[str, Any]:
    """Add ``default`` to ``schema`` (a placeholder: in place) when it is a JSON value
    (``None`` says nothing)."""
    if default is inspect.Parameter.empty or default is None:
        return schema
    with contextlib.suppress(TypeError, ValueError):  # not a JSON value: no default shown
        schema["default"] = msgspec.to_builtins(default, str_keys=True)
    return schema


# -- bodies --------------------------------------------------------------------------------------


def _request_body(
    route: Route,
    method: str,
    parameters: tuple[ParameterInfo, ...],
    schemas: _Schemas,
    is_proxy: bool,
) -> dict[str, Any] | None:
    declared = route.data.get("body")
    if declared is not None:
        return {"required": True, "content": {_JSON: {"schema": schemas.ref(declared)}}}
    if is_proxy:
        if method in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return None
        return {"required": False, "content": {"*/*": {"schema": {}}}}
    info = next((p for p in parameters if p.source == "body"), None)
    if info is None:
        return None
    annotation = _optional_inner(info.annotation)
    bare = _bare(annotation)
    if bare in (bytes, bytearray):
        content: dict[str, Any] = {"application/octet-stream": {}}
    elif bare is str:
        content = {"text/plain": {"schema": {"type": "string"}}}
    else:
        content = {_JSON: {"schema": schemas.ref(annotation)}}
        if _is_model(bare):
            content.update({form: {"schema": schemas.ref(annotation)} for form in _FORMS})
    return {"required": info.required, "content": content}


# -- responses -----------------------------------------------------------------------------------


def _success(route: Route, schemas: _Schemas) -> dict[str, Any]:
    """Return the controller's own answers, from its return annotation."""
    try:
        hints = typing.get_type_hints(route.endpoint, include_extras=True)
    except Exception:
        hints = {}
    if "return" not in hints:
        return {"default": {"description": "The controller's answer."}}
    answers = _answers(hints["return"], schemas)
    declared = route.data.get("status")
    if isinstance(declared, int) and not isinstance(declared, bool):
        success = [key for key in answers if key != "204"]
        if success:
            answers = {str(declared): answers[success[0]]}
    return answers


def _answers(annotation: Any, schemas: _Schemas) -> dict[str, Any]:
    bare = _bare(annotation)
    if bare is None or bare is type(None):
        return {"204": {"description": "No Content"}}
    members = _union_members(bare)
    if members is not None and type(None) in members:
        rest = [m for m in members if m is not type(None)]
        inner: Any = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007
        return {**_answers(inner, schemas), "204": {"description": "No Content"}}
    if typing.get_origin(bare) is tuple:
        arguments = typing.get_args(bare)
        if len(arguments) >= 2 and arguments[1] is not Ellipsis:
            body = _content(arguments[0], schemas)
            statuses = _statuses(arguments[1])
            return {key: _described(key, body) for key in statuses}
    if isinstance(bare, type) and issubclass(bare, Response):
        content = _response_content(bare)
        return {"default": {"description": "The controller's answer.", **content}}
    if _is_werkzeug_response(bare):
        return {"default": {"description": "The controller's answer."}}
    return {"200": _described("200", _content(annotation, schemas))}


def _statuses(annotation: Any) -> list[str]:
    """Return the statuses a ``(body, status)`` annotation names: ``Literal`` ones, else 2XX."""
    if typing.get_origin(annotation) is Literal:
        found = [str(v) for v in typing.get_args(annotation) if isinstance(v, int)]
        if found:
            return found
    return ["2XX"]


def _described(key: str, content: dict[str, Any]) -> dict[str, Any]:
    if key.isdigit():
        try:
            description = http.HTTPStatus(int(key)).phrase
        except ValueError:
            description = "Success"
    else:
        description = "Success"
    return {"description": description, **content}


def _content(annotation: Any, schemas: _Schemas) -> dict[str, Any]:
    """Return the ``content`` of a body the renderer makes from a value of ``annotation``."""
    bare = _bare(annotation)
    if bare is str:
        return {"content": {"text/plain": {"schema": {"type": "string"}}}}
    if bare in (bytes, bytearray, memoryview):
        return {"content": {"application/octet-stream": {}}}
    if bare is None or bare is type(None):
        return {}
    if isinstance(bare, type) and issubclass(bare, Response):
        return _response_content(bare)
    if _is_werkzeug_response(bare):
        return {}
    if typing.get_origin(bare) in (
        collections.abc.Iterator,
        collections.abc.Iterable,
        collections.abc.Generator,
    ):
        return {"content": {"text/plain": {"schema": {"type": "string"}}}}
    return {"content": {_JSON: {"schema": schemas.ref(annotation)}}}


def _response_content(cls: type[Response]) -> dict[str, Any]:
    if issubclass(cls, HTMLResponse):
        return {"content": {"text/html": {"schema": {"type": "string"}}}}
    if issubclass(cls, JSONResponse):
        return {"content": {_JSON: {"schema": {}}}}
    return {}


def _is_werkzeug_response(annotation: Any) -> bool:
    from werkzeug.wrappers import Response as WerkzeugResponse

    return isinstance(annotation, type) and issubclass(annotation, WerkzeugResponse)


# -- schemas -------------------------------------------------------------------------------------


class _Schemas:
    """The schemas of a document: each ``ref()`` is a placeholder, filled by ``finish()``.

    Every type goes to ``msgspec.json.schema_components`` in one call, so a model used in
    several places is one component.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Any, dict[str, Any]]] = []

    def ref(self, annotation: Any) -> dict[str, Any]:
        """Return the schema of ``annotation`` (filled in by :meth:`finish`)."""
        placeholder: dict[str, Any] = {}
        try:  # one type msgspec cannot describe must not fail the others: it is "any value"
            msgspec.json.schema(annotation, schema_hook=_any_value)
        except (TypeError, ValueError):
            return placeholder
        self._pending.append((annotation, placeholder))
        return placeholder

    def finish(self) -> dict[str, Any]:
        """Fill every placeholder; return the components (the models)."""
        if not self._pending:
            return {}
        found, components = msgspec.json.schema_components(
            [annotation for annotation, _ in self._pending],
            schema_hook=_any_value,
            ref_template=_SCHEMAS + "{name}",
        )
        for (_, placeholder), schema in zip(self._pending, found, strict=True):
            default = placeholder.get("default")
            placeholder.clear()
            placeholder.update(schema)
            if default is not None:
                placeholder["default"] = default
        return dict(components)


def _any_value(cls: type) -> dict[str, Any]:
    """The schema of a type msgspec has none for (``object``, a class): any value."""
    return {"description": "any value" if cls is object else f"a {cls.__qualname__}"}


# -- annotations ---------------------------------------------------------------------------------


def _bare(annotation: Any) -> Any:
    """Return ``annotation`` without ``Annotated``."""
    while typing.get_origin(annotation) is Annotated:
        annotation = annotation.__origin__
    return annotation


def _union_members(annotation: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        return typing.get_args(annotation)
    return None


def _optional_inner(annotation: Any) -> Any:
    """Return ``X`` for ``X | None`` (a parameter that may be absent), else ``annotation``."""
    members = _union_members(_bare(annotation))
    if members is not None and type(None) in members:
        rest = [m for m in members if m is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _is_model(annotation: Any) -> bool:
    annotation = _bare(annotation)
    return isinstance(annotation, type) and (
        dataclasses.is_dataclass(annotation)
        or issubclass(annotation, msgspec.Struct)
        or typing.is_typeddict(annotation)
    )


# -- names and texts -----------------------------------------------------------------------------


def _openapi_path(template: str) -> str:
    """``/files/{rest:path}`` → ``/files/{rest}``: OpenAPI names a placeholder only."""
    return PARAM.sub(lambda match: "{" + match.group(1) + "}", template)


def _unique(name: str, taken: set[str]) -> str:
    candidate, count = name, 1
    while candidate in taken:
        count += 1
        candidate = f"{name}.{count}"
    taken.add(candidate)
    return candidate


def _tag(route: Route, tags: dict[str, str]) -> str | None:
    """Return the route's tag (its controller class, else its first group), noted in ``tags``
    with the class's docstring's first line."""
    if route.controller is not None:
        name = route.controller.__name__
        tags.setdefault(name, _first_line(inspect.getdoc(route.controller) or ""))
        return name
    if route.groups:
        tags.setdefault(route.groups[0], "")
        return route.groups[0]
    return None


def _texts(route: Route) -> tuple[str, str]:
    """Return the summary (the route's description, else the docstring's first paragraph) and
    the description (the docstring, or what follows its first paragraph)."""
    doc = inspect.getdoc(route.endpoint) or ""
    if route.description:
        return route.description, doc if doc != route.description else ""
    first, _, rest = doc.partition("\n\n")
    return first.replace("\n", " "), rest.strip()


def _first_line(text: str) -> str:
    return text.strip().split("\n\n", 1)[0].replace("\n", " ")


def _is_proxy(route: Route) -> bool:
    """Whether the route is a :class:`~workflowhttp.proxy.Proxy`'s."""
    from ..proxy import Proxy

    return isinstance(route.data.get("proxy"), Proxy)
