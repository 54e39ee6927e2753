"""The one parser of numbers that come from a client (lengths, ids, sizes, integer parameters).

SECURITY: ``int()`` and ``str.isdigit()`` accept far more than a decimal number: Unicode
digits (``"²"``, ``"٣"``), underscores (``"1_000"``), surrounding white space, and, through
msgspec's lax conversion, ``"1e3"``. Python also refuses to convert more than 4300 digits with
a ``ValueError`` that a careless caller turns into a 500. Every number read from a request goes
through :func:`parse_int`, which accepts exactly an optional sign and ASCII decimal digits, and
caps the number of digits *before* converting, so the work is bounded by the cap whatever the
input.
"""

from __future__ import annotations

__all__ = ["MAX_DIGITS", "parse_int"]

#: The most digits :func:`parse_int` converts by default: far beyond any 64-bit value, far
#: below Python's own 4300-digit limit.
MAX_DIGITS = 64


def parse_int(text: str, *, signed: bool = True, max_digits: int = MAX_DIGITS) -> int:
    """Return the integer ``text`` spells: an optional sign (when ``signed``), then ASCII digits.

    Args:
        text: The raw text from the client; no white space, underscores or exponents.
        signed: Whether a leading ``+`` or ``-`` is allowed.
        max_digits: The most digits accepted (the length is checked before converting).

    Raises:
        ValueError: ``text`` is not such a number, or has more than ``max_digits`` digits.
    """
    digits = text
    if signed and text[:1] in ("+", "-"):
        digits = text[1:]
    # PERF: isascii() and isdigit() run in C; together they mean "ASCII digits only".
    if not digits or not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"not a decimal integer: {text[:32]!r}")
    if len(digits) > max_digits:
        raise ValueError(f"integer with more than {max_digits} digits")
    return int(text)
