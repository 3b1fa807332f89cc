"""Rule documents in, frozen `Rule` values out, with every problem reported at once.

A rule is parsed once, when it is loaded (from the CLI, the HTTP API or the rules
topic), into pre-compiled conditions; evaluation never re-validates. Validation does not
stop at the first problem: each check appends a `FieldError` naming the path and the
reason, and a single `RuleError` lists them all, so the user fixes a rule in one pass.
Nothing here uses `assert`: validation must survive `python -O`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Final
from zoneinfo import ZoneInfo

from common.ids import valid_id
from rules.conditions import Condition, MoneyCondition
from rules.dates import load_zone
from rules.errors import FieldError, RuleError, pointer
from rules.model import Rule
from rules.values import (
    Errors,
    check_money_places,
    count_condition,
    currency_condition,
    date_condition,
    json_kind,
    listing,
    money_condition,
    pinned_currencies,
    plan_condition,
)
from rules.vocabulary import (
    CONDITION_KEYS,
    DEFAULT_TIMEZONE,
    FIELD_FILTERS,
    FIELDS,
    FILTERS,
    MAX_CONDITIONS,
    MAX_NAME_LENGTH,
    OPS,
    TOP_LEVEL_KEYS,
)

_ALL_OPS: Final = tuple(dict.fromkeys(op for ops in OPS.values() for op in ops))
_UTC: Final = ZoneInfo("UTC")


def parse_rule(doc: object) -> Rule:
    """Validate a rule document (a decoded JSON object) and build the `Rule`.

    Raises `RuleError` listing every problem found. `timezone` defaults to "UTC" and
    `version` to 1.
    """
    if not isinstance(doc, Mapping):
        raise RuleError([FieldError("", f"a rule must be a JSON object, got {json_kind(doc)}")])
    errors: Errors = []
    rule_id = _identifier(doc, "id", errors)
    account_id = _identifier(doc, "account_id", errors)
    name = _name(doc, errors)
    filter_ = _filter(doc, errors)
    zone_name, zone = _timezone(doc, errors)
    version = _version(doc, errors)
    conditions = _conditions(doc, filter_, zone, errors)
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            reason = f"unknown key (expected {listing(TOP_LEVEL_KEYS)})"
            errors.append(FieldError(pointer("", str(key)), reason))
    if errors or filter_ is None:
        raise RuleError(errors)
    return Rule(rule_id, account_id, name, filter_, conditions, zone_name, version)


def parse_rule_json(raw: str | bytes) -> Rule:
    """`parse_rule` for JSON text; numbers are read as Decimal so 49.99 stays exact."""
    try:
        doc = json.loads(raw, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:
        raise RuleError([FieldError("", f"not JSON: {exc}")]) from None
    return parse_rule(doc)


# -- top level -------------------------------------------------------------------------


def _identifier(doc: Mapping[str, object], key: str, errors: Errors) -> str:
    where = pointer("", key)
    if key not in doc:
        errors.append(FieldError(where, "is required"))
        return ""
    value = doc[key]
    if not isinstance(value, str):
        errors.append(FieldError(where, f"must be a string, got {json_kind(value)}"))
        return ""
    if not value:
        errors.append(FieldError(where, "must not be empty"))
    elif len(value) > 128:
        errors.append(FieldError(where, f"must be at most 128 characters, got {len(value)}"))
    elif not valid_id(value):
        errors.append(FieldError(where, "may only contain letters, digits, '.', '_' and '-'"))
    return value


def _name(doc: Mapping[str, object], errors: Errors) -> str:
    if "name" not in doc:
        errors.append(FieldError("/name", "is required"))
        return ""
    value = doc["name"]
    if not isinstance(value, str):
        errors.append(FieldError("/name", f"must be a string, got {json_kind(value)}"))
        return ""
    if not value.strip():
        errors.append(FieldError("/name", "must not be empty"))
    elif len(value) > MAX_NAME_LENGTH:
        errors.append(FieldError("/name", f"must be at most {MAX_NAME_LENGTH} characters"))
    return value


def _filter(doc: Mapping[str, object], errors: Errors) -> str | None:
    if "filter" not in doc:
        errors.append(FieldError("/filter", "is required"))
        return None
    value = doc["filter"]
    if not isinstance(value, str):
        errors.append(FieldError("/filter", f"must be a string, got {json_kind(value)}"))
        return None
    if value not in FILTERS:
        errors.append(
            FieldError("/filter", f'unknown filter "{value}" (expected {listing(FILTERS)})')
        )
        return None
    return value


def _timezone(doc: Mapping[str, object], errors: Errors) -> tuple[str, ZoneInfo]:
    value = doc.get("timezone", DEFAULT_TIMEZONE)
    try:
        zone = load_zone(value)
    except ValueError as exc:
        errors.append(FieldError("/timezone", str(exc)))
        return DEFAULT_TIMEZONE, _UTC
    return str(value), zone


def _version(doc: Mapping[str, object], errors: Errors) -> int:
    value = doc.get("version", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        errors.append(FieldError("/version", "must be a whole number >= 1"))
        return 1
    return value


# -- conditions ------------------------------------------------------------------------


def _conditions(
    doc: Mapping[str, object], filter_: str | None, zone: ZoneInfo, errors: Errors
) -> tuple[Condition, ...]:
    if "conditions" not in doc:
        errors.append(FieldError("/conditions", "is required"))
        return ()
    items = doc["conditions"]
    if not isinstance(items, list):
        errors.append(FieldError("/conditions", f"must be a list, got {json_kind(items)}"))
        return ()
    if len(items) > MAX_CONDITIONS:
        errors.append(FieldError("/conditions", f"at most {MAX_CONDITIONS} conditions"))
    parsed: list[Condition] = []
    money: list[tuple[str, MoneyCondition]] = []
    found: Errors = []
    for index, item in enumerate(items):
        path = pointer("", "conditions", index)
        condition = _condition(item, path, filter_, zone, found)
        if condition is not None:
            parsed.append(condition)
            if isinstance(condition, MoneyCondition):
                money.append((pointer(path, "value"), condition))
    check_money_places(money, pinned_currencies(parsed), found)
    # Precision is checked after all conditions are read (it depends on the currency
    # conditions); a stable sort puts its errors back under their own condition.
    found.sort(key=lambda error: _condition_index(error.path))
    errors.extend(found)
    return tuple(parsed)


def _condition_index(path: str) -> int:
    """N of a path "/conditions/N/..." (0 for the list itself)."""
    parts = path.split("/")
    is_condition = len(parts) > 2 and parts[1] == "conditions" and parts[2].isdigit()
    return int(parts[2]) if is_condition else 0


def _condition(
    item: object, path: str, filter_: str | None, zone: ZoneInfo, errors: Errors
) -> Condition | None:
    if not isinstance(item, Mapping):
        reason = f"must be an object with field, op and value, got {json_kind(item)}"
        errors.append(FieldError(path, reason))
        return None
    for key in item:
        if key not in CONDITION_KEYS:
            reason = "unknown key (expected field, op, value)"
            errors.append(FieldError(pointer(path, str(key)), reason))
    for key in CONDITION_KEYS:
        if key not in item:
            errors.append(FieldError(pointer(path, str(key)), "is required"))
    field = _field(item, path, filter_, errors)
    op = _op(item, path, field, errors)
    if field is None or op is None or "value" not in item:
        return None
    value, value_path = item["value"], pointer(path, "value")
    kind = FIELDS[field]
    if kind == "money":
        return money_condition(field, op, value, value_path, errors)
    if kind == "count":
        return count_condition(op, value, value_path, errors)
    if kind == "currency":
        return currency_condition(op, value, value_path, errors)
    if kind == "plan":
        return plan_condition(op, value, value_path, errors)
    return date_condition(field, op, value, value_path, zone, errors)


def _field(
    item: Mapping[str, object], path: str, filter_: str | None, errors: Errors
) -> str | None:
    if "field" not in item:
        return None
    field = item["field"]
    if not isinstance(field, str):
        reason = f"must be a string, got {json_kind(field)}"
        errors.append(FieldError(pointer(path, "field"), reason))
        return None
    if field not in FIELDS:
        reason = f'unknown field "{field}" (expected {listing(tuple(FIELDS))})'
        errors.append(FieldError(pointer(path, "field"), reason))
        return None
    allowed = FIELD_FILTERS[field]
    if filter_ is not None and filter_ not in allowed:
        noun = "filter" if len(allowed) == 1 else "filters"
        quoted = ", ".join(f'"{name}"' for name in allowed)
        reason = f"{field} is only allowed with {noun} {quoted}"
        errors.append(FieldError(pointer(path, "field"), reason))
    return field


def _op(item: Mapping[str, object], path: str, field: str | None, errors: Errors) -> str | None:
    if "op" not in item:
        return None
    op = item["op"]
    if not isinstance(op, str):
        errors.append(FieldError(pointer(path, "op"), f"must be a string, got {json_kind(op)}"))
        return None
    if op not in _ALL_OPS:
        errors.append(FieldError(pointer(path, "op"), f'unknown op "{op}"'))
        return None
    if field is None:
        return None
    allowed = OPS[FIELDS[field]]
    if op not in allowed:
        reason = f'op "{op}" not allowed for field "{field}" (allowed: {listing(allowed)})'
        errors.append(FieldError(pointer(path, "op"), reason))
        return None
    return op
