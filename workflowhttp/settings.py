"""Checks of the settings an app and its parts are built with: each failure is a
:class:`~workflowhttp.errors.ConfigurationError` at start-up, never a fault at a request.

One place says what a positive int, a positive number and a priority are, so ``Limits``,
``Stream``, ``Proxy``, ``Hooks``, middlewares and listeners refuse the same values with the same
words (``True`` is an ``int`` to Python, and is refused everywhere).
"""

from __future__ import annotations

from .errors import ConfigurationError

__all__ = ["check_positive_ints", "check_positive_numbers", "check_priority"]


def check_positive_ints(owner: str, **values: object) -> None:
    """Refuse any of ``values`` that is not an int of at least 1.

    Raises:
        ConfigurationError: ``"<owner> <name> must be a positive int, not <value>"``.
    """
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigurationError(f"{owner} {name} must be a positive int, not {value!r}")


def check_positive_numbers(owner: str, **values: object) -> None:
    """Refuse any of ``values`` that is not an int or float above 0 (a duration, say).

    Raises:
        ConfigurationError: ``"<owner> <name> must be a positive number, not <value>"``.
    """
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigurationError(f"{owner} {name} must be a positive number, not {value!r}")


def check_priority(owner: str, priority: object) -> int:
    """Return ``priority`` when it is an int (lower runs first; negative is allowed).

    Raises:
        ConfigurationError: ``"<owner> priority must be an int, not <value>"``.
    """
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ConfigurationError(f"{owner} priority must be an int, not {priority!r}")
    return priority
