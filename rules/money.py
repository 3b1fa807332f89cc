"""Exact money: major-unit amounts from rules, integer minor units from facts.

Rules say "49.99"; facts carry 4999 (USD) or 4999 (JPY, meaning 4999 yen). Floats never
appear: values are parsed with `Decimal`, and each comparison is compiled, per currency
exponent, into an integer range once at load time, so evaluation is integer compares.

When a rule's amount has more decimal places than a fact's currency has (a rule "gt
49.99" that is not pinned to one currency, against a JPY fact), the comparison is still
exact: "gt 49.99" holds for 50 yen and not for 49. `eq` with such a value never holds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Final

_AMOUNT_TEXT: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?")
#: Integer digits allowed in a major-unit amount; far above any real charge, and keeps
#: every scaled value well inside Decimal's default 28-digit precision.
MAX_INTEGER_DIGITS: Final = 15
#: No currency has more than three minor-unit digits.
MAX_PLACES: Final = 3


def parse_major(value: object) -> Decimal:
    """A major-unit amount from a rule: a string such as "49.99" or a JSON number.

    JSON numbers arrive as int, float (read back through its shortest repr) or, from
    `parse_rule_json`, as Decimal, which keeps "49.99" exact from the start.

    Raises ValueError with the reason. Rejects booleans, NaN and infinities, negative
    amounts, exponent notation in strings, and more than three decimal places.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError('must be an amount such as "49.99" or 50')
    if isinstance(value, str):
        if not _AMOUNT_TEXT.fullmatch(value):
            raise ValueError(f'"{value}" is not an amount such as "49.99"')
        amount = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not an amount")
        # repr() of a float is its shortest round-tripping decimal: 49.99, not 49.98999.
        amount = Decimal(repr(value))
    else:
        amount = Decimal(value)
        if not amount.is_finite():
            raise ValueError(f"{value} is not an amount")
    if amount < 0:
        raise ValueError("negative amount")
    if amount.adjusted() >= MAX_INTEGER_DIGITS:
        raise ValueError(f"amount too large (at most {MAX_INTEGER_DIGITS} digits before the point)")
    if places(amount) > MAX_PLACES:
        raise ValueError(
            f"{format_major(amount)} has more than {MAX_PLACES} decimal places; "
            "no currency has minor units that small"
        )
    return amount


def places(amount: Decimal) -> int:
    """Decimal places the value needs (trailing zeros do not count: "50.00" needs 0)."""
    exp = amount.normalize().as_tuple().exponent
    if not isinstance(exp, int):  # NaN or infinity: parse_major never lets one through
        raise ValueError(f"{amount} is not a finite amount")
    return max(0, -exp)


def format_major(amount: Decimal) -> str:
    """Canonical text of a major amount: no exponent, no trailing zeros ("49.9", "50")."""
    return format(amount.normalize(), "f")


@dataclass(frozen=True, slots=True)
class IntRange:
    """An inclusive integer interval (None = unbounded), optionally negated.

    Every numeric operator on integers is one of these, which keeps evaluation to at
    most two integer comparisons.
    """

    lo: int | None
    hi: int | None
    negate: bool = False

    def contains(self, value: int) -> bool:
        inside = (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)
        return inside != self.negate


_EMPTY_LO: Final = 1
_EMPTY_HI: Final = 0


def integer_range(op: str, values: tuple[Decimal, ...], scale: int) -> IntRange:
    """Compile `x <op> values` for integer x, after scaling values by 10**scale.

    Exact for non-integral scaled values: over the integers, x > 49.5 is x >= 50 and
    x == 49.5 never holds.
    """
    scaled = [value.scaleb(scale) for value in values]
    low, high = scaled[0], scaled[-1]
    if op in ("eq", "ne"):
        negate = op == "ne"
        if low != low.to_integral_value():
            return IntRange(_EMPTY_LO, _EMPTY_HI, negate)
        return IntRange(int(low), int(low), negate)
    if op == "gt":
        return IntRange(_floor(low) + 1, None)
    if op == "gte":
        return IntRange(_ceil(low), None)
    if op == "lt":
        return IntRange(None, _ceil(low) - 1)
    if op == "lte":
        return IntRange(None, _floor(low))
    if op == "between":
        return IntRange(_ceil(low), _floor(high))
    raise ValueError(f"not a numeric operator: {op}")


def _floor(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


def _ceil(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_CEILING))
