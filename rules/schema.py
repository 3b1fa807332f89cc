"""The JSON Schema (draft 2020-12) of a rule document, derived from the vocabulary.

Center's UI uses `rules/schema.json` to build and pre-check rules. The file is
generated from the same tables the parser validates against, and a unit test compares
the two, so the schema cannot drift from the engine. Regenerate it with
`python -m rules.schema > rules/schema.json`.

The schema is a guide for editors, not the authority: some checks need context a
schema cannot express well (a real calendar date, a known IANA zone, an ISO currency,
amount precision against a pinned currency, low <= high); `parse_rule` makes those.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from rules.vocabulary import (
    CALENDAR_OPS,
    FIELD_FILTERS,
    FIELDS,
    FILTERS,
    ID_PATTERN,
    LIST_OPS,
    MAX_CONDITIONS,
    MAX_NAME_LENGTH,
    MAX_PLAN_ID_LENGTH,
    OPS,
    RELATIVE_OPS,
    REQUIRED_KEYS,
    SET_OPS,
    UNITS,
    Kind,
)

SCHEMA_PATH: Final = Path(__file__).with_name("schema.json")
ALL_OPS: Final = tuple(dict.fromkeys(op for ops in OPS.values() for op in ops))

_AMOUNT: Final[dict[str, Any]] = {
    "description": 'Major units, e.g. "49.99" (strings keep decimals exact)',
    "anyOf": [
        {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
        {"type": "number", "minimum": 0},
    ],
}
_COUNT: Final[dict[str, Any]] = {"type": "integer", "minimum": 0}
_DAY: Final[dict[str, Any]] = {
    "type": "string",
    "format": "date",
    "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
}
_WINDOW: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["count", "unit"],
    "additionalProperties": False,
    "properties": {"count": {"type": "integer", "minimum": 1}, "unit": {"enum": list(UNITS)}},
}
_CURRENCY: Final[dict[str, Any]] = {"type": "string", "pattern": "^[A-Za-z]{3}$"}
_PLAN: Final[dict[str, Any]] = {"type": "string", "minLength": 1, "maxLength": MAX_PLAN_ID_LENGTH}


def _pair(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "prefixItems": [item, item], "minItems": 2, "items": False}


def _when_op(ops: tuple[str, ...], value: dict[str, Any]) -> dict[str, Any]:
    return {
        "if": {"properties": {"op": {"enum": list(ops)}}},
        "then": {"properties": {"value": value}},
    }


def _numeric(item: dict[str, Any]) -> list[dict[str, Any]]:
    single = tuple(op for op in OPS["money"] if op != "between")
    return [_when_op(("between",), _pair(item)), _when_op(single, item)]


def _set(item: dict[str, Any]) -> list[dict[str, Any]]:
    single = tuple(op for op in SET_OPS if op not in LIST_OPS)
    listed = {"type": "array", "minItems": 1, "items": item}
    return [_when_op(LIST_OPS, listed), _when_op(single, item)]


def _date() -> list[dict[str, Any]]:
    single = tuple(op for op in CALENDAR_OPS if op != "between")
    return [
        _when_op(("between",), _pair(_DAY)),
        _when_op(single, _DAY),
        _when_op(RELATIVE_OPS, _WINDOW),
    ]


_VALUES: Final[dict[Kind, list[dict[str, Any]]]] = {
    "money": _numeric(_AMOUNT),
    "count": _numeric(_COUNT),
    "currency": _set(_CURRENCY),
    "plan": _set(_PLAN),
    "date": _date(),
}


def _condition() -> dict[str, Any]:
    by_kind = []
    for kind, ops in OPS.items():
        fields = [name for name, field_kind in FIELDS.items() if field_kind == kind]
        then = {"properties": {"op": {"enum": list(ops)}}, "allOf": _VALUES[kind]}
        by_kind.append({"if": {"properties": {"field": {"enum": fields}}}, "then": then})
    return {
        "type": "object",
        "required": ["field", "op", "value"],
        "additionalProperties": False,
        "properties": {
            "field": {"enum": list(FIELDS)},
            "op": {"enum": list(ALL_OPS)},
            "value": {},
        },
        "allOf": by_kind,
    }


def _filter_restrictions() -> list[dict[str, Any]]:
    """A field limited to some filters must not appear in a rule of another filter."""
    restrictions = []
    for field, allowed in FIELD_FILTERS.items():
        if set(allowed) == set(FILTERS):
            continue
        forbidden = {"properties": {"field": {"not": {"const": field}}}}
        restrictions.append(
            {
                "if": {"properties": {"filter": {"not": {"enum": list(allowed)}}}},
                "then": {"properties": {"conditions": {"items": forbidden}}},
            }
        )
    return restrictions


def build_schema() -> dict[str, Any]:
    identifier = {"type": "string", "pattern": ID_PATTERN}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:stripe-segments:rule",
        "title": "Segment rule",
        "description": "One filter plus conditions that must all hold (stripe-segments).",
        "type": "object",
        "required": list(REQUIRED_KEYS),
        "additionalProperties": False,
        "properties": {
            "id": {**identifier, "description": "Unique within the account"},
            "account_id": identifier,
            "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH},
            "filter": {"enum": list(FILTERS)},
            "conditions": {
                "type": "array",
                "maxItems": MAX_CONDITIONS,
                "items": {"$ref": "#/$defs/condition"},
            },
            "timezone": {
                "type": "string",
                "description": "IANA zone for calendar dates and months",
                "default": "UTC",
            },
            "version": {"type": "integer", "minimum": 1, "default": 1},
        },
        "allOf": _filter_restrictions(),
        "$defs": {"condition": _condition()},
    }


def render() -> str:
    return json.dumps(build_schema(), indent=2) + "\n"


if __name__ == "__main__":
    print(render(), end="")
