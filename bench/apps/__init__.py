"""The benchmarked applications, one module per framework.

Every module exposes ``make_app(kind)`` returning a WSGI callable for one of :data:`APP_KINDS`:

- ``"main"``: ``GET /hello``, ``GET /users/{id}``, ``GET /search``, ``POST /items``;
- ``"many_routes"``: :data:`MANY_ROUTES_STATIC` static routes ``/static/{i}`` and as many
  parametrised routes ``/param{i}/{id}`` (see :func:`routes_app_paths`).

The routes behave identically in every framework; ``bench/endpoints.py`` holds the expected
answers and the harness checks them once before timing.
"""

from __future__ import annotations

from dataclasses import dataclass

APP_KINDS = ("main", "many_routes")

#: Half of the 200 routes of the ``many_routes`` app.
MANY_ROUTES_STATIC = 100


@dataclass
class Item:
    """The JSON body of ``POST /items``."""

    name: str
    price: float


def static_text(index: int) -> str:
    """Return the body of ``GET /static/{index}``."""
    return f"static {index}"


def param_text(index: int, id: int) -> str:
    """Return the body of ``GET /param{index}/{id}``."""
    return f"param {index} {id}"


def routes_app_paths(total: int) -> tuple[str, str]:
    """Return the paths of the last static and last parametrised route of a ``total``-route app.

    A ``total``-route app has ``total // 2`` static routes ``/static/{i}`` and as many
    parametrised routes ``/param{i}/{id}``, declared in that order.
    """
    last = total // 2 - 1
    return f"/static/{last}", f"/param{last}/42"
