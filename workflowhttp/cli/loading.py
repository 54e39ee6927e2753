"""What a ``module:attribute`` target names: :func:`load_app`, and :class:`LoadError`.

Every command that needs the app (``serve``, ``dev``, ``routes``) gets it here, so a bad target
reads the same everywhere: one line, naming the file and line where it can.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any, cast

from ..app import App

__all__ = ["LoadError", "WSGIApplication", "load_app"]

WSGIApplication = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class LoadError(Exception):
    """A target that gives no app; the message is one line, for the command's stderr.

    Attributes:
        files: The source files the failure involves (the file with a syntax error, the
            frames of an import or a factory that raised): ``dev`` watches them, to reload
            once they are fixed.
    """

    def __init__(self, message: str, files: Iterable[str] = ()) -> None:
        super().__init__(" ".join(line.strip() for line in message.splitlines() if line.strip()))
        self.files = tuple(dict.fromkeys(files))

    def details(self) -> str:
        """Return the traceback of the cause, without the import machinery's frames.

        A syntax error's is its file, line and caret alone; no cause, no text.
        """
        cause = self.__cause__
        if cause is None:
            return ""
        if isinstance(cause, SyntaxError):
            return "".join(traceback.format_exception_only(cause))
        summary = traceback.TracebackException.from_exception(cause)
        summary.stack = traceback.StackSummary.from_list(
            [frame for frame in summary.stack if _is_source(frame.filename)]
        )
        return "".join(summary.format())


def load_app(target: str) -> WSGIApplication:
    """Import ``module:attribute`` and return the WSGI app it names.

    The attribute (``app`` when omitted) may be a workflowhttp :class:`~workflowhttp.App`,
    returned as it is; a factory that takes no arguments, called (``module:factory()`` says
    so explicitly); or any other WSGI callable ``(environ, start_response)``, returned as it
    is. The current directory is put on ``sys.path`` first.

    Raises:
        LoadError: the module is missing or fails to import (a syntax error names its file
            and line), the attribute is missing, the factory raises or returns no WSGI app,
            or the attribute is none of the above.
    """
    module_name, _, attribute = target.partition(":")
    attribute = attribute or "app"
    explicit_call = attribute.endswith("()")
    name = attribute.removesuffix("()")
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        module = module_name.removesuffix(".py").replace(os.sep, ".").replace("/", ".")
        raise LoadError(f"give a module, not a file: {module}:{attribute}, not {target}")
    if not module_name or not name.isidentifier():
        raise LoadError(f"expected module:app or module:factory(), got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = _import(module_name)
    where = f"{module_name}:{name}"
    try:
        found = getattr(module, name)
    except AttributeError:
        apps = [key for key, value in vars(module).items() if isinstance(value, App)]
        known = f" (its apps: {', '.join(apps)})" if apps else ""
        raise LoadError(f"module {module_name!r} has no attribute {name!r}{known}") from None
    if isinstance(found, App):
        if explicit_call:
            raise LoadError(f"{where} is an App, not a factory: drop the parentheses ({where})")
        return found
    if not callable(found):
        raise LoadError(
            f"{where} is an object of type {type(found).__name__}: expected an App, a WSGI "
            "callable or a factory without arguments"
        )
    if explicit_call or _is_factory(found):
        return _build(found, where)
    if not _accepts_two_arguments(found):
        raise LoadError(
            f"{where}{_signature(found) or ''} is neither a WSGI callable "
            f"(environ, start_response) nor a factory without arguments"
        )
    return cast(WSGIApplication, found)  # a plain WSGI callable: served as it is


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except SyntaxError as ex:  # IndentationError and TabError too
        filename = ex.filename or module_name
        raise LoadError(
            f"{_shown(filename)}:{ex.lineno}: syntax error: {ex.msg} (importing {module_name})",
            [filename, *_files_of(ex)],
        ) from ex
    except ModuleNotFoundError as ex:
        if ex.name and (module_name == ex.name or module_name.startswith(f"{ex.name}.")):
            raise LoadError(
                f"No module named {ex.name!r} (neither in the current directory, "
                f"{os.getcwd()}, nor elsewhere on sys.path)"
            ) from ex
        raise LoadError(f"importing {module_name} raised {_described(ex)}", _files_of(ex)) from ex
    except Exception as ex:
        raise LoadError(f"importing {module_name} raised {_described(ex)}", _files_of(ex)) from ex


def _build(factory: Callable[[], Any], where: str) -> WSGIApplication:
    """Call ``factory`` and check that it gave an app."""
    try:
        app = factory()
    except Exception as ex:
        raise LoadError(f"{where}() raised {_described(ex)}", _files_of(ex)) from ex
    if isinstance(app, App) or (callable(app) and _accepts_two_arguments(app)):
        return cast(WSGIApplication, app)
    raise LoadError(f"{where}() returned {type(app).__name__}, not an App or a WSGI callable")


def _signature(item: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(item)
    except (TypeError, ValueError):  # a builtin or an extension type: unknowable
        return None


def _is_factory(item: Any) -> bool:
    """Whether ``item`` can be called without arguments, and is not a ``*args`` wrapper."""
    signature = _signature(item)
    if signature is None:
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values()):
        return False  # (*args, **kwargs): a wrapper around a WSGI callable, most likely
    try:
        signature.bind()
    except TypeError:
        return False
    return True


def _accepts_two_arguments(item: Any) -> bool:
    signature = _signature(item)
    if signature is None:
        return True
    try:
        signature.bind(None, None)
    except TypeError:
        return False
    return True


def _described(ex: BaseException) -> str:
    """``Type: message (file:line)``, the line being the innermost one outside this module."""
    files = [
        frame for frame in traceback.extract_tb(ex.__traceback__) if _is_source(frame.filename)
    ]
    where = f" ({_shown(files[-1].filename)}:{files[-1].lineno})" if files else ""
    return f"{type(ex).__name__}: {ex}{where}"


def _files_of(ex: BaseException) -> list[str]:
    return [
        frame.filename
        for frame in traceback.extract_tb(ex.__traceback__)
        if _is_source(frame.filename)
    ]


_MACHINERY = {os.path.abspath(__file__), os.path.abspath(importlib.__file__ or "")}


def _is_source(filename: str) -> bool:
    """Whether ``filename`` is a real file, not the import machinery's or this module's."""
    return not filename.startswith("<") and os.path.abspath(filename) not in _MACHINERY


def _shown(filename: str) -> str:
    """``filename`` relative to the current directory when it is under it."""
    path = os.path.abspath(filename)
    here = os.getcwd()
    return os.path.relpath(path, here) if path.startswith(here + os.sep) else filename
