"""Route declarations (``http.GET(...)``) and the compiled router.

Decorators only *describe* routes: they attach a :class:`RouteSpec` to the function and return
it unchanged. Nothing is registered globally, so several apps can share controllers.

Paths are templates with ``{name}`` segments (one non-empty segment) and ``{name:path}`` (the
rest of the path, one or more segments; only static segments may follow it, as in
``/{resource:path}/edit``). A segment may mix text and parameters
(``/files/{name}.{ext}``): every parameter but the last ends at the first occurrence of the
text that follows it, so it never contains that text; the last one takes everything up to the
segment's fixed ending (``{a}-{b}.txt`` matches ``x-y-z.txt`` with ``a="x"``, ``b="y-z"``).
This is matched left to right in one pass (linear in the segment).

Trailing-slash policy: a trailing slash is insignificant. ``/users`` and ``/users/`` are the same
route, both when declared and when requested (like Falcon's ``strip_url_path_trailing_slash``);
declaring both is a duplicate route. Only the root ``/`` keeps its slash.

Matching (compiled once; its cost grows with the path's depth, not with the number of routes):

1. A fully static path is one dict lookup.
2. Otherwise a segment tree is walked. At each segment a static child beats a mixed-segment
   pattern, which beats a ``{name}`` parameter, which beats ``{name:path}``; the walk backtracks
   when a branch leads nowhere. So ``/users/admin`` wins over ``/users/{id}`` whatever the
   declaration order.
   Every edge of the tree consumes one segment, so the search visits each node once at most:
   its cost is bounded by the size of the tree, whatever the path.
3. The first route found that accepts the method wins. When routes match the path but none
   the method, the request is a 405 with their methods in ``Allow``. ``HEAD`` is served by
   ``GET`` routes; ``OPTIONS`` without an explicit route is answered 204 with ``Allow``.

SECURITY: no parameter value may be ``..`` (a ``{name:path}`` value may contain no ``..``
segment), nor contain a backslash (a separator on Windows) or a NUL byte; such a path matches
nothing (404), so a path parameter cannot climb out of a directory it is joined to, nor
truncate a file name.

Mounting: ``http.mount("/v1", [UserController, hello], name="v1")`` (a :class:`Mount`) puts
controllers under a prefix; the app compiles it into ordinary routes (prefixed paths, groups
and names), so matching is the same.

The package: :mod:`.paths` (templates and the trailing-slash policy), :mod:`.declarations`
(the decorators and mounts), :mod:`.controllers` (controllers and mounts compiled into routes)
and :mod:`.router` (the compiled router).
"""

from __future__ import annotations

from .declarations import ControllerSpec, Mount, RouteSpec, controller_spec, http, route_specs
from .paths import ANY, METHODS, join_paths, normalize_path
from .router import NO_ROUTE, Match, Miss, Route, Router

__all__ = [
    "ANY",
    "METHODS",
    "NO_ROUTE",
    "ControllerSpec",
    "Match",
    "Miss",
    "Mount",
    "Route",
    "RouteSpec",
    "Router",
    "controller_spec",
    "http",
    "join_paths",
    "normalize_path",
    "route_specs",
]
