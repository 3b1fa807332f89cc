"""Parsed conditions: frozen, pre-compiled, and each able to test one fact.

Every condition is built once by `rules.parse` and then only read. Whatever can be
computed without a fact is computed then (integer ranges per currency exponent, instant
bounds of calendar days), so `holds` is a getattr and one or two integer compares.

Missing values never satisfy a condition: a fact without the attribute a condition
reads (amount None, no plans, no end date) fails it whatever the operator, including the
negative ones (`ne`, `is_not`, `not_in`). "Amount is not 50" therefore selects charges
with an amount other than 50, never facts that have no amount at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as slot
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from rules.currencies import DEFAULT_EXPONENT, EXPONENT_OF
from rules.dates import add_months, calendar_bounds
from rules.fact import FactView
from rules.money import IntRange, format_major, integer_range
from rules.vocabulary import DATE_ATTRIBUTES, LIST_OPS, UNIT_SECONDS

_NEGATIVE_SET_OPS = ("is_not", "not_in")


def _one_or_list(op: str, values: tuple[Any, ...]) -> Any:
    return list(values) if op in LIST_OPS or op == "between" else values[0]


@dataclass(frozen=True, slots=True)
class MoneyCondition:
    """`amount` or `refund_amount` against major-unit values, in the fact's currency.

    The value is kept as Decimal (for display and round trips) and compiled into one
    integer range per currency exponent (index = exponent), so "gt 50" means 5000 for a
    USD fact and 50 for a JPY fact. A fact with an amount but no currency fails: without
    a currency its minor units mean nothing.
    """

    field: str
    op: str
    values: tuple[Decimal, ...]
    ranges: tuple[IntRange, ...] = slot(init=False, repr=False, compare=False)
    time_dependent: ClassVar[bool] = False

    def __post_init__(self) -> None:
        ranges = tuple(integer_range(self.op, self.values, scale) for scale in range(4))
        object.__setattr__(self, "ranges", ranges)

    def holds(self, fact: FactView, now: int) -> bool:
        value: int | None = getattr(fact, self.field)
        currency = fact.currency
        if value is None or currency is None:
            return False
        accepted = self.ranges[EXPONENT_OF.get(currency, DEFAULT_EXPONENT)]
        lo, hi = accepted.lo, accepted.hi  # IntRange.contains, inlined: hot path
        inside = (lo is None or value >= lo) and (hi is None or value <= hi)
        return inside != accepted.negate

    def to_dict(self) -> dict[str, Any]:
        shown = tuple(format_major(value) for value in self.values)
        return {"field": self.field, "op": self.op, "value": _one_or_list(self.op, shown)}


@dataclass(frozen=True, slots=True)
class CurrencyCondition:
    """`currency is / is_not / in / not_in` over lower-case ISO codes."""

    op: str
    codes: tuple[str, ...]
    code_set: frozenset[str] = slot(init=False, repr=False, compare=False)
    negate: bool = slot(init=False, repr=False, compare=False)
    field: ClassVar[str] = "currency"
    time_dependent: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "code_set", frozenset(self.codes))
        object.__setattr__(self, "negate", self.op in _NEGATIVE_SET_OPS)

    def holds(self, fact: FactView, now: int) -> bool:
        currency = fact.currency
        if currency is None:
            return False
        return (currency in self.code_set) != self.negate

    def to_dict(self) -> dict[str, Any]:
        return {"field": "currency", "op": self.op, "value": _one_or_list(self.op, self.codes)}


@dataclass(frozen=True, slots=True)
class PlanCondition:
    """`plan is / is_not / in / not_in` over the price, plan and product ids of a fact.

    `is`/`in` hold when any of the fact's ids is listed; `is_not`/`not_in` hold when the
    fact has ids and none of them is listed.
    """

    op: str
    plan_ids: tuple[str, ...]
    id_set: frozenset[str] = slot(init=False, repr=False, compare=False)
    negate: bool = slot(init=False, repr=False, compare=False)
    field: ClassVar[str] = "plan"
    time_dependent: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "id_set", frozenset(self.plan_ids))
        object.__setattr__(self, "negate", self.op in _NEGATIVE_SET_OPS)

    def holds(self, fact: FactView, now: int) -> bool:
        plans = fact.plans
        if not plans:
            return False
        return self.id_set.isdisjoint(plans) == self.negate

    def to_dict(self) -> dict[str, Any]:
        return {"field": "plan", "op": self.op, "value": _one_or_list(self.op, self.plan_ids)}


@dataclass(frozen=True, slots=True)
class CalendarCondition:
    """`on / before / after / between` calendar days of the rule's zone, on a date field.

    Compiled to the half-open instant range `[lo, hi)` (None = unbounded) at parse time,
    so it does not depend on `now` and DST is settled once.
    """

    field: str
    op: str
    days: tuple[date, ...]
    zone: ZoneInfo
    lo: int | None = slot(init=False, compare=False)
    hi: int | None = slot(init=False, compare=False)
    attribute: str = slot(init=False, repr=False, compare=False)
    time_dependent: ClassVar[bool] = False

    def __post_init__(self) -> None:
        lo, hi = calendar_bounds(self.op, self.days, self.zone)
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        object.__setattr__(self, "attribute", DATE_ATTRIBUTES[self.field])

    def holds(self, fact: FactView, now: int) -> bool:
        instant: int | None = getattr(fact, self.attribute)
        if instant is None:
            return False
        return (self.lo is None or instant >= self.lo) and (self.hi is None or instant < self.hi)

    def to_dict(self) -> dict[str, Any]:
        shown = tuple(day.isoformat() for day in self.days)
        return {"field": self.field, "op": self.op, "value": _one_or_list(self.op, shown)}


@dataclass(frozen=True, slots=True)
class RelativeCondition:
    """`within_last` / `more_than_ago` N units, on a date field; depends on `now`.

    With t the fact's instant and end = t + window (calendar months in the rule's zone):
    `within_last` holds iff t <= now < end, `more_than_ago` iff end <= now (see
    `rules.dates` for why the boundary second belongs to `more_than_ago`).
    """

    field: str
    op: str
    count: int
    unit: str
    zone: ZoneInfo
    attribute: str = slot(init=False, repr=False, compare=False)
    seconds: int | None = slot(init=False, repr=False, compare=False)
    time_dependent: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "attribute", DATE_ATTRIBUTES[self.field])
        unit_seconds = UNIT_SECONDS.get(self.unit)
        seconds = None if unit_seconds is None else unit_seconds * self.count
        object.__setattr__(self, "seconds", seconds)

    def window_end(self, instant: int) -> int:
        if self.seconds is not None:
            return instant + self.seconds
        return add_months(instant, self.count, self.zone)

    def holds(self, fact: FactView, now: int) -> bool:
        instant: int | None = getattr(fact, self.attribute)
        if instant is None:
            return False
        if self.op == "within_last":
            return instant <= now < self.window_end(instant)
        return self.window_end(instant) <= now

    def changes(self, fact: FactView) -> tuple[int, ...]:
        """Every instant at which the passage of time alone flips `holds` for this fact."""
        instant: int | None = getattr(fact, self.attribute)
        if instant is None:
            return ()
        if self.op == "within_last":
            return (instant, self.window_end(instant))
        return (self.window_end(instant),)

    def to_dict(self) -> dict[str, Any]:
        window = {"count": self.count, "unit": self.unit}
        return {"field": self.field, "op": self.op, "value": window}


@dataclass(frozen=True, slots=True)
class CountCondition:
    """`occurrences <op> N`: how many of a contact's facts satisfy the other conditions."""

    op: str
    values: tuple[int, ...]
    accepted: IntRange = slot(init=False, repr=False, compare=False)
    field: ClassVar[str] = "occurrences"

    def __post_init__(self) -> None:
        values = tuple(Decimal(value) for value in self.values)
        object.__setattr__(self, "accepted", integer_range(self.op, values, 0))

    def holds_on(self, count: int) -> bool:
        return self.accepted.contains(count)

    def to_dict(self) -> dict[str, Any]:
        return {"field": "occurrences", "op": self.op, "value": _one_or_list(self.op, self.values)}


#: A condition on one fact.
FactCondition = (
    MoneyCondition | CurrencyCondition | PlanCondition | CalendarCondition | RelativeCondition
)
#: Any condition of a rule.
Condition = FactCondition | CountCondition
