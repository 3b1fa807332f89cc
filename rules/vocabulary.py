"""The words a rule may use: filters, fields, operators, units, and which go together.

These tables are the single source of truth: the parser validates against them, the
evaluator dispatches on them, and `rules/schema.py` derives the JSON Schema from them,
so the UI's schema cannot drift from what the engine accepts.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from common.ids import ID_PATTERN as ID_PATTERN  # re-exported: `common.ids` owns it

#: The six filters of SPEC, in the article's order; facts and rules both use these ids.
FilterId = Literal[
    "charge_failed",
    "refunded",
    "charge_succeeded",
    "subscription_created",
    "subscription_changed",
    "subscription_cancelled",
]
FILTERS: Final[tuple[FilterId, ...]] = get_args(FilterId)
SUBSCRIPTION_FILTERS: Final[tuple[str, ...]] = (
    "subscription_created",
    "subscription_changed",
    "subscription_cancelled",
)

Kind = Literal["money", "currency", "date", "plan", "count"]

#: Field name -> the kind of value it holds (which decides its operators and values).
FIELDS: Final[dict[str, Kind]] = {
    "amount": "money",
    "currency": "currency",
    "date": "date",
    "start_date": "date",
    "end_date": "date",
    "refund_amount": "money",
    "plan": "plan",
    "occurrences": "count",
}

#: Field name -> the filters it may be used with (SPEC, "Conditions").
FIELD_FILTERS: Final[dict[str, tuple[str, ...]]] = {
    "amount": FILTERS,
    "currency": FILTERS,
    "date": FILTERS,
    "occurrences": FILTERS,
    "refund_amount": ("refunded",),
    "start_date": SUBSCRIPTION_FILTERS,
    "end_date": SUBSCRIPTION_FILTERS,
    "plan": SUBSCRIPTION_FILTERS,
}

NUMERIC_OPS: Final[tuple[str, ...]] = ("eq", "ne", "gt", "gte", "lt", "lte", "between")
SET_OPS: Final[tuple[str, ...]] = ("is", "is_not", "in", "not_in")
CALENDAR_OPS: Final[tuple[str, ...]] = ("on", "before", "after", "between")
RELATIVE_OPS: Final[tuple[str, ...]] = ("within_last", "more_than_ago")

#: Kind -> the operators allowed on it.
OPS: Final[dict[Kind, tuple[str, ...]]] = {
    "money": NUMERIC_OPS,
    "count": NUMERIC_OPS,
    "currency": SET_OPS,
    "plan": SET_OPS,
    "date": CALENDAR_OPS + RELATIVE_OPS,
}

#: Set operators whose value is a list (the others take a single string).
LIST_OPS: Final[tuple[str, ...]] = ("in", "not_in")

UNITS: Final[tuple[str, ...]] = ("hours", "days", "weeks", "months")
#: Fixed-length units in seconds; "months" is calendar arithmetic in the rule's zone.
UNIT_SECONDS: Final[dict[str, int]] = {"hours": 3600, "days": 86_400, "weeks": 604_800}
#: The longest relative window accepted, per unit (100 years), so that window ends stay
#: inside the calendar and a typo such as 36500 weeks is caught.
MAX_COUNT: Final[dict[str, int]] = {
    "hours": 876_600,
    "days": 36_525,
    "weeks": 5_218,
    "months": 1_200,
}

#: Date field -> the fact attribute holding its instant.
DATE_ATTRIBUTES: Final[dict[str, str]] = {
    "date": "occurred_at",
    "start_date": "start_date",
    "end_date": "end_date",
}

TOP_LEVEL_KEYS: Final[tuple[str, ...]] = (
    "id",
    "account_id",
    "name",
    "filter",
    "conditions",
    "timezone",
    "version",
)
REQUIRED_KEYS: Final[tuple[str, ...]] = ("id", "account_id", "name", "filter", "conditions")
CONDITION_KEYS: Final[tuple[str, ...]] = ("field", "op", "value")

MAX_NAME_LENGTH: Final[int] = 200
MAX_CONDITIONS: Final[int] = 50
MAX_PLAN_ID_LENGTH: Final[int] = 255
DEFAULT_TIMEZONE: Final[str] = "UTC"
