"""Condition values: one parser per kind of field, each reporting precise reasons.

Split from `rules.parse` (which handles the document's shape) because each kind has its
own value syntax: amounts, counts, currency codes, plan ids, calendar dates and relative
windows. Each function returns the built condition, or None after appending one
`FieldError` per problem, so a bad value never hides the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

from rules.conditions import (
    CalendarCondition,
    Condition,
    CountCondition,
    CurrencyCondition,
    MoneyCondition,
    PlanCondition,
    RelativeCondition,
)
from rules.currencies import ISO_4217, exponent
from rules.dates import parse_date
from rules.errors import FieldError, pointer
from rules.money import format_major, parse_major, places
from rules.vocabulary import LIST_OPS, MAX_COUNT, MAX_PLAN_ID_LENGTH, RELATIVE_OPS, UNITS

Errors = list[FieldError]
#: Validates one string of a set operator's value: the canonical string, or None after
#: appending the error.
_Check = Callable[[object, str, Errors], str | None]


def currency_condition(op: str, value: object, path: str, errors: Errors) -> Condition | None:
    """ISO codes in any case, stored lower-case (the case facts carry)."""
    codes = _strings(op, value, path, "currency code", _currency_code, errors)
    return None if codes is None else CurrencyCondition(op, codes)


def plan_condition(op: str, value: object, path: str, errors: Errors) -> Condition | None:
    """Price, plan or product ids, matched exactly (Stripe ids are case-sensitive)."""
    ids = _strings(op, value, path, "plan id", _plan_id, errors)
    return None if ids is None else PlanCondition(op, ids)


def date_condition(
    field: str, op: str, value: object, path: str, zone: ZoneInfo, errors: Errors
) -> Condition | None:
    """A calendar condition (bounds fixed now, in `zone`) or a relative window."""
    if op in RELATIVE_OPS:
        return _relative(field, op, value, path, zone, errors)
    return _calendar(field, op, value, path, zone, errors)


def _pair(value: object) -> tuple[object, object] | None:
    if isinstance(value, list) and len(value) == 2:
        return value[0], value[1]
    return None


def money_condition(
    field: str, op: str, value: object, path: str, errors: Errors
) -> MoneyCondition | None:
    if op == "between":
        pair = _pair(value)
        if pair is None:
            errors.append(FieldError(path, '"between" needs two amounts, low <= high'))
            return None
        low, high = (_amount(pair[0], pointer(path, 0), errors),
                     _amount(pair[1], pointer(path, 1), errors))
        if low is None or high is None:
            return None
        if low > high:
            errors.append(FieldError(path, '"between" needs two amounts, low <= high'))
            return None
        return MoneyCondition(field, op, (low, high))
    if isinstance(value, list):
        errors.append(FieldError(path, f'op "{op}" takes one amount; use "between" for a range'))
        return None
    amount = _amount(value, path, errors)
    return None if amount is None else MoneyCondition(field, op, (amount,))


def _amount(value: object, path: str, errors: Errors) -> Decimal | None:
    try:
        return parse_major(value)
    except ValueError as exc:
        errors.append(FieldError(path, str(exc)))
        return None


def pinned_currencies(conditions: list[Condition]) -> frozenset[str] | None:
    """The currencies a fact can have and still pass the rule's currency conditions.

    None when no `is`/`in` condition restricts them (any currency may match).
    """
    pinned: frozenset[str] | None = None
    excluded: set[str] = set()
    for condition in conditions:
        if isinstance(condition, CurrencyCondition):
            if condition.negate:
                excluded |= condition.code_set
            else:
                codes = condition.code_set
                pinned = codes if pinned is None else pinned & codes
    return None if pinned is None else pinned - excluded


def check_money_places(
    money: list[tuple[str, MoneyCondition]], pinned: frozenset[str] | None, errors: Errors
) -> None:
    """Amounts finer than a pinned currency's minor unit ("0.5" JPY) are mistakes."""
    if not pinned:
        return
    code = min(pinned, key=lambda c: (exponent(c), c))
    digits = exponent(code)
    for path, condition in money:
        between = len(condition.values) > 1
        for index, amount in enumerate(condition.values):
            if places(amount) > digits:
                where = pointer(path, index) if between else path
                reason = (
                    f'"{format_major(amount)}" has more decimal places than '
                    f"{code.upper()} allows ({digits})"
                )
                errors.append(FieldError(where, reason))


def count_condition(op: str, value: object, path: str, errors: Errors) -> CountCondition | None:
    if op == "between":
        pair = _pair(value)
        if pair is None:
            errors.append(FieldError(path, '"between" needs two counts, low <= high'))
            return None
        low, high = (_whole(pair[0], pointer(path, 0), errors),
                     _whole(pair[1], pointer(path, 1), errors))
        if low is None or high is None:
            return None
        if low > high:
            errors.append(FieldError(path, '"between" needs two counts, low <= high'))
            return None
        return CountCondition(op, (low, high))
    count = _whole(value, path, errors)
    return None if count is None else CountCondition(op, (count,))


def _whole(value: object, path: str, errors: Errors) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        errors.append(FieldError(path, "must be a whole number >= 0"))
        return None
    return value


def _strings(
    op: str,
    value: object,
    path: str,
    noun: str,
    check: _Check,
    errors: Errors,
) -> tuple[str, ...] | None:
    """The value of a set operator: one string (is, is_not) or a non-empty list."""
    if op in LIST_OPS:
        if not isinstance(value, list) or not value:
            errors.append(FieldError(path, f'op "{op}" needs a non-empty list of {noun}s'))
            return None
        items = [check(item, pointer(path, index), errors) for index, item in enumerate(value)]
    elif isinstance(value, list):
        listed = "in" if op == "is" else "not_in"
        errors.append(FieldError(path, f'op "{op}" takes one {noun}; use "{listed}" for a list'))
        return None
    else:
        items = [check(value, path, errors)]
    valid = [item for item in items if item is not None]
    if len(valid) != len(items):
        return None
    return tuple(dict.fromkeys(valid))  # duplicates dropped, order kept


def _currency_code(value: object, path: str, errors: Errors) -> str | None:
    if not isinstance(value, str):
        errors.append(
            FieldError(path, f'must be a currency code such as "usd", got {json_kind(value)}')
        )
        return None
    code = value.lower()
    if code not in ISO_4217:
        errors.append(FieldError(path, f'unknown currency "{code}"'))
        return None
    return code


def _plan_id(value: object, path: str, errors: Errors) -> str | None:
    if not isinstance(value, str) or not value or len(value) > MAX_PLAN_ID_LENGTH:
        reason = f"must be a price, plan or product id (1-{MAX_PLAN_ID_LENGTH} characters)"
        errors.append(FieldError(path, reason))
        return None
    return value


def _calendar(
    field: str, op: str, value: object, path: str, zone: ZoneInfo, errors: Errors
) -> CalendarCondition | None:
    if op == "between":
        pair = _pair(value)
        if pair is None:
            errors.append(FieldError(path, '"between" needs two dates, first <= second'))
            return None
        first, second = (_day(pair[0], pointer(path, 0), errors),
                         _day(pair[1], pointer(path, 1), errors))
        if first is None or second is None:
            return None
        if first > second:
            errors.append(FieldError(path, '"between" needs two dates, first <= second'))
            return None
        return CalendarCondition(field, op, (first, second), zone)
    if isinstance(value, list):
        errors.append(FieldError(path, f'op "{op}" takes one date; use "between" for a range'))
        return None
    day = _day(value, path, errors)
    return None if day is None else CalendarCondition(field, op, (day,), zone)


def _day(value: object, path: str, errors: Errors) -> date | None:
    try:
        return parse_date(value)
    except ValueError as exc:
        errors.append(FieldError(path, str(exc)))
        return None


def _relative(
    field: str, op: str, value: object, path: str, zone: ZoneInfo, errors: Errors
) -> RelativeCondition | None:
    if not isinstance(value, Mapping):
        reason = f'op "{op}" needs {{"count": N, "unit": "days"}}, got {json_kind(value)}'
        errors.append(FieldError(path, reason))
        return None
    for key in value:
        if key not in ("count", "unit"):
            reason = "unknown key (expected count, unit)"
            errors.append(FieldError(pointer(path, str(key)), reason))
    count, unit = value.get("count"), value.get("unit")
    valid = True
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        errors.append(FieldError(pointer(path, "count"), "must be a whole number >= 1"))
        valid = False
    if not isinstance(unit, str) or unit not in UNITS:
        shown = f'"{unit}"' if isinstance(unit, str) else json_kind(unit)
        reason = f"unknown unit {shown} (expected {listing(UNITS)})"
        errors.append(FieldError(pointer(path, "unit"), reason))
        valid = False
    if not valid or not isinstance(count, int) or not isinstance(unit, str):
        return None
    if count > MAX_COUNT[unit]:
        reason = f"at most {MAX_COUNT[unit]} {unit} (100 years)"
        errors.append(FieldError(pointer(path, "count"), reason))
        return None
    return RelativeCondition(field, op, count, unit, zone)


def listing(names: tuple[str, ...]) -> str:
    return ", ".join(names)


def json_kind(value: object) -> str:
    """The JSON type name of a decoded value, for "must be X, got Y" reasons."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__
