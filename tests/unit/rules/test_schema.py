"""rules/schema.json: generated from the parser's tables, and agreeing with the parser."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from rules import RuleError, parse_rule
from rules.schema import ALL_OPS, SCHEMA_PATH, render
from rules.vocabulary import FIELD_FILTERS, FIELDS, FILTERS, OPS, UNITS

pytestmark = pytest.mark.unit

SCHEMA = json.loads(SCHEMA_PATH.read_text())


def test_the_file_is_exactly_what_the_tables_generate() -> None:
    # Regenerate with: python -m rules.schema > rules/schema.json
    assert SCHEMA_PATH.read_text() == render()


def test_the_schema_lists_exactly_the_parsers_vocabulary() -> None:
    properties = SCHEMA["properties"]
    assert properties["filter"]["enum"] == list(FILTERS)
    condition = SCHEMA["$defs"]["condition"]
    assert condition["properties"]["field"]["enum"] == list(FIELDS)
    assert set(condition["properties"]["op"]["enum"]) == {op for ops in OPS.values() for op in ops}
    assert list(ALL_OPS) == condition["properties"]["op"]["enum"]
    by_field: dict[str, list[str]] = {}
    for branch in condition["allOf"]:
        for field in branch["if"]["properties"]["field"]["enum"]:
            by_field[field] = branch["then"]["properties"]["op"]["enum"]
    assert by_field == {field: list(OPS[kind]) for field, kind in FIELDS.items()}
    restricted = {
        branch["then"]["properties"]["conditions"]["items"]["properties"]["field"]["not"][
            "const"
        ]: branch["if"]["properties"]["filter"]["not"]["enum"]
        for branch in SCHEMA["allOf"]
    }
    assert restricted == {
        field: list(allowed)
        for field, allowed in FIELD_FILTERS.items()
        if set(allowed) != set(FILTERS)
    }
    assert UNITS == ("hours", "days", "weeks", "months")
    assert json.dumps(SCHEMA).count('"hours", "days", "weeks", "months"') == 1


def _base(*conditions: dict[str, Any], filter: str = "refunded") -> dict[str, Any]:
    return {
        "id": "seg",
        "account_id": "acme",
        "name": "n",
        "filter": filter,
        "conditions": list(conditions),
    }


INVALID_FOR_BOTH = [
    {"id": "seg"},
    {**_base(), "colour": "red"},
    {**_base(), "id": "has space"},
    {**_base(), "filter": "charged"},
    {**_base(), "version": 0},
    _base({"field": "colour", "op": "is", "value": "x"}),
    _base({"field": "amount", "op": "within_last", "value": "5"}),
    _base({"field": "amount", "op": "gt", "value": "-5"}),
    _base({"field": "amount", "op": "gt", "value": "5", "extra": 1}),
    _base({"field": "amount", "op": "between", "value": ["5"]}),
    _base({"field": "currency", "op": "in", "value": []}),
    _base({"field": "currency", "op": "is", "value": ["usd"]}),
    _base({"field": "date", "op": "on", "value": "2026-3-1"}),
    _base({"field": "date", "op": "within_last", "value": {"count": 0, "unit": "days"}}),
    _base({"field": "date", "op": "within_last", "value": {"count": 1, "unit": "years"}}),
    _base({"field": "occurrences", "op": "gte", "value": -1}),
    _base({"field": "start_date", "op": "on", "value": "2026-03-01"}),
    _base({"field": "plan", "op": "is", "value": "p"}, filter="charge_failed"),
    _base({"field": "refund_amount", "op": "gt", "value": "5"}, filter="charge_failed"),
]


@pytest.mark.parametrize("document", INVALID_FOR_BOTH)
def test_invalid_documents_are_invalid_for_schema_and_parser(document: dict[str, Any]) -> None:
    with pytest.raises(RuleError):
        parse_rule(document)
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(document)


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_valid_documents_pass_the_schema() -> None:
    # Every other rules test also checks its valid documents against the schema.
    document = _base(
        {"field": "refund_amount", "op": "between", "value": ["1", 49.99]},
        {"field": "currency", "op": "not_in", "value": ["USD"]},
        {"field": "date", "op": "more_than_ago", "value": {"count": 3, "unit": "months"}},
        {"field": "occurrences", "op": "between", "value": [1, 3]},
    )
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    parse_rule(document)
