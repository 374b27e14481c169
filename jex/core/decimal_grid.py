"""Exact decimal-string <-> integer grid conversion (core room, edge helper).

A grid is a positive decimal step such as a tick ``"0.01"`` or a lot
``"1"``. Values are parsed with integer arithmetic only (no float, no
Decimal on the hot path), so ``"100.05"`` on a ``"0.01"`` grid is exactly
10005 ticks and ``"100.055"`` is refused as off the grid.
"""

from __future__ import annotations

import re
from typing import Final

_DECIMAL_RE: Final = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")  # fullmatch: ASCII digits, no trailing newline
DIGITS_MAX: Final = 30  # longest decimal string (digits) accepted anywhere
CACHE_ENTRIES_MAX: Final = 4096  # per grid and direction; a full cache is emptied, not evicted entry by entry


class GridError(ValueError):
    """A value is malformed or off its grid. ``str()`` is one line."""


def parse_decimal(text: str) -> tuple[int, int]:
    """Parse ``text`` into (mantissa, exponent) with value = mantissa * 10**exponent."""
    if len(text) > DIGITS_MAX + 2:
        raise GridError(f"{text[:20]!r}... is too long")
    m = _DECIMAL_RE.fullmatch(text)
    if m is None:
        raise GridError(f"{text[:40]!r} is not a plain decimal number")
    sign, whole, frac = m.groups()
    frac = frac or ""
    mantissa = int(whole + frac)
    if sign:
        mantissa = -mantissa
    return mantissa, -len(frac)


class Grid:
    """A decimal step, e.g. tick 0.01 or lot 1, with exact conversions."""

    __slots__ = ("text", "mantissa", "exponent", "_units", "_texts")

    def __init__(self, text: str) -> None:
        mantissa, exponent = parse_decimal(text)
        if mantissa <= 0:
            raise GridError(f"grid step {text!r} must be positive")
        # Normalise trailing zeros of the mantissa into the exponent.
        while mantissa % 10 == 0 and exponent < 0:
            mantissa //= 10
            exponent += 1
        self.text = text
        self.mantissa = mantissa
        self.exponent = exponent
        # Prices and sizes repeat: remember recent conversions (valid ones
        # only; a refused value is parsed, and refused, every time).
        self._units: dict[str, int] = {}
        self._texts: dict[int, str] = {}

    def to_units(self, value: str | int) -> int:
        """Exact number of grid steps in ``value``; GridError if off the grid."""
        if type(value) is str:
            cached = self._units.get(value)
            if cached is not None:
                return cached
            units = self._to_units(value)
            if len(self._units) >= CACHE_ENTRIES_MAX:
                self._units.clear()
            self._units[value] = units
            return units
        return self._to_units(value)

    def _to_units(self, value: str | int) -> int:
        if isinstance(value, bool):
            raise GridError("expected a decimal string, got a boolean")
        if isinstance(value, int):
            mantissa, exponent = value, 0
        elif isinstance(value, str):
            mantissa, exponent = parse_decimal(value)
        else:
            raise GridError(f"expected a decimal string, got {type(value).__name__}")
        # value / step = (m * 10**e) / (sm * 10**se)
        shift = exponent - self.exponent
        if shift >= 0:
            numerator = mantissa * 10**shift
            denominator = self.mantissa
        else:
            numerator = mantissa
            denominator = self.mantissa * 10**-shift
        units, rest = divmod(numerator, denominator)
        if rest:
            raise GridError(f"{value} is not a multiple of {self.text}")
        return units

    def format_fraction(self, value, decimals: int = 10) -> str:
        """A Fraction of steps as a decimal string with ``decimals`` places."""
        numerator = value.numerator * self.mantissa
        denominator = value.denominator
        if self.exponent >= 0:
            numerator *= 10**self.exponent
        else:
            denominator *= 10**-self.exponent
        return format_ratio(numerator, denominator, decimals)

    def format(self, units: int) -> str:
        """Decimal string of ``units`` steps, with the step's number of decimals."""
        text = self._texts.get(units)
        if text is None:
            text = self._format(units)
            if len(self._texts) >= CACHE_ENTRIES_MAX:
                self._texts.clear()
            self._texts[units] = text
        return text

    def _format(self, units: int) -> str:
        value = units * self.mantissa
        exponent = self.exponent
        if exponent >= 0:
            return str(value * 10**exponent)
        sign = "-" if value < 0 else ""
        digits = str(-value if value < 0 else value).rjust(1 - exponent, "0")
        return f"{sign}{digits[:exponent]}.{digits[exponent:]}"


def format_ratio(numerator: int, denominator: int, digits: int = 10) -> str:
    """``numerator/denominator`` as a decimal string with ``digits`` decimals,
    rounded half-up, computed with integers only (used for ratios in stats)."""
    if denominator == 0:
        raise ZeroDivisionError("ratio with zero denominator")
    negative = (numerator < 0) != (denominator < 0)
    n, d = abs(numerator), abs(denominator)
    scaled, rest = divmod(n * 10**digits, d)
    if rest * 2 >= d:
        scaled += 1
    text = str(scaled).rjust(digits + 1, "0")
    out = f"{text[:-digits]}.{text[-digits:]}" if digits else text
    return f"-{out}" if negative and scaled else out
