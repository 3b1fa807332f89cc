"""The parsed rule: a frozen value, built only by `rules.parse.parse_rule`.

The conditions are kept in the order the user wrote them (so `to_dict` round-trips),
and also split once by what evaluation needs: conditions on a fact that do not depend
on the clock, those that do (relative windows), and `occurrences` conditions on the
count of qualifying facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as slot
from typing import Any

from rules.conditions import Condition, CountCondition, FactCondition, RelativeCondition

#: Cheapest checks first: a fact usually fails on currency or plan before any arithmetic.
_COST_RANK = {"CurrencyCondition": 0, "PlanCondition": 1, "CalendarCondition": 2}


@dataclass(frozen=True, slots=True)
class Rule:
    """One segment definition: a filter plus conditions that must all hold."""

    id: str
    account_id: str
    name: str
    filter: str
    conditions: tuple[Condition, ...]
    timezone: str = "UTC"
    version: int = 1
    #: Conditions on one fact that do not depend on `now`, cheapest first.
    static_conditions: tuple[FactCondition, ...] = slot(init=False, repr=False, compare=False)
    #: Relative-window conditions: the only ones whose truth moves with the clock.
    relative_conditions: tuple[RelativeCondition, ...] = slot(init=False, repr=False, compare=False)
    #: Every condition on one fact: static first, then relative.
    fact_conditions: tuple[FactCondition, ...] = slot(init=False, repr=False, compare=False)
    count_conditions: tuple[CountCondition, ...] = slot(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        relative = tuple(c for c in self.conditions if isinstance(c, RelativeCondition))
        counts = tuple(c for c in self.conditions if isinstance(c, CountCondition))
        static = tuple(
            sorted(
                (
                    c
                    for c in self.conditions
                    if not isinstance(c, RelativeCondition | CountCondition)
                ),
                key=lambda c: _COST_RANK.get(type(c).__name__, len(_COST_RANK)),
            )
        )
        object.__setattr__(self, "static_conditions", static)
        object.__setattr__(self, "relative_conditions", relative)
        object.__setattr__(self, "fact_conditions", static + relative)
        object.__setattr__(self, "count_conditions", counts)

    @property
    def key(self) -> tuple[str, str]:
        """Rule ids are unique per account only: this pair is the global identity."""
        return (self.account_id, self.id)

    @property
    def time_dependent(self) -> bool:
        """Whether membership can change with the clock alone (timers are needed)."""
        return bool(self.relative_conditions)

    def to_dict(self) -> dict[str, Any]:
        """The canonical rule document; `parse_rule(rule.to_dict()) == rule`.

        Canonical means: every key present, currency codes lower-case, amounts as
        strings without trailing zeros ("49.9", "50"), dates as "YYYY-MM-DD".
        """
        return {
            "id": self.id,
            "account_id": self.account_id,
            "name": self.name,
            "filter": self.filter,
            "conditions": [condition.to_dict() for condition in self.conditions],
            "timezone": self.timezone,
            "version": self.version,
        }
