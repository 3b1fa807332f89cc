"""Rule documents: what parses, what is rejected and with which path and reason."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from rules import FieldError, Rule, RuleError, parse_rule, parse_rule_json
from rules.conditions import CurrencyCondition, MoneyCondition, RelativeCondition
from rules.schema import SCHEMA_PATH
from rules.vocabulary import FIELD_FILTERS, FIELDS, FILTERS, OPS, UNITS

pytestmark = pytest.mark.unit

#: Every valid rule used here must also pass the published schema.
SCHEMA = Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def load(doc: dict[str, Any]) -> Rule:
    """parse_rule, after checking the document against rules/schema.json."""
    SCHEMA.validate(doc)
    return parse_rule(doc)


def doc(filter: str = "charge_failed", *conditions: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "id": "seg-1",
        "account_id": "acme",
        "name": "A segment",
        "filter": filter,
        "conditions": list(conditions),
        **top,
    }


def cond(field: object, op: str, value: Any) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


def problems(document: object) -> list[tuple[str, str]]:
    with pytest.raises(RuleError) as caught:
        parse_rule(document)
    return [(error.path, error.reason) for error in caught.value.errors]


SPEC_EXAMPLE = {
    "id": "big-refunds",
    "account_id": "acme",
    "name": "Refunded over $50 this month",
    "filter": "refunded",
    "conditions": [
        {"field": "refund_amount", "op": "gt", "value": "50"},
        {"field": "currency", "op": "in", "value": ["usd", "eur"]},
        {"field": "date", "op": "within_last", "value": {"count": 30, "unit": "days"}},
    ],
    "timezone": "UTC",
}


def test_spec_example_parses_into_typed_conditions() -> None:
    rule = load(SPEC_EXAMPLE)
    assert (rule.id, rule.account_id, rule.filter, rule.timezone, rule.version) == (
        "big-refunds",
        "acme",
        "refunded",
        "UTC",
        1,
    )
    money, currency, window = rule.conditions
    assert isinstance(money, MoneyCondition)
    assert money.values == (Decimal("50"),)
    assert isinstance(currency, CurrencyCondition)
    assert currency.codes == ("usd", "eur")
    assert isinstance(window, RelativeCondition)
    assert (window.count, window.unit) == (30, "days")
    assert rule.time_dependent
    assert rule.key == ("acme", "big-refunds")


def test_defaults_and_canonical_form() -> None:
    rule = load(
        doc(
            "charge_succeeded",
            cond("amount", "between", ["49.990", 100]),
            cond("currency", "in", ["USD", "eur", "usd"]),
        )
    )
    assert rule.to_dict() == {
        "id": "seg-1",
        "account_id": "acme",
        "name": "A segment",
        "filter": "charge_succeeded",
        "conditions": [
            cond("amount", "between", ["49.99", "100"]),
            cond("currency", "in", ["usd", "eur"]),
        ],
        "timezone": "UTC",
        "version": 1,
    }


def test_json_text_keeps_decimal_numbers_exact() -> None:
    raw = json.dumps(doc("charge_failed", cond("amount", "gte", 1)))
    raw = raw.replace('"value": 1', '"value": 0.30000000000000004')
    with pytest.raises(RuleError, match="more than 3 decimal places"):
        parse_rule_json(raw)
    rule = parse_rule_json(
        b'{"id":"a","account_id":"b","name":"n","filter":"refunded",'
        b'"conditions":[{"field":"amount","op":"eq","value":49.99}]}'
    )
    assert rule.conditions[0].to_dict()["value"] == "49.99"


def test_json_text_that_is_not_json() -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule_json("{nope")
    assert caught.value.errors[0].path == ""
    assert caught.value.errors[0].reason.startswith("not JSON")


def test_a_rule_invalid_in_many_ways_reports_every_problem_with_its_path() -> None:
    document = {
        "id": "",
        "account_id": "a b",
        "name": 3,
        "filter": "charge_failed",
        "timezone": "Mars/Olympus",
        "version": 0,
        "colour": "red",
        "conditions": [
            cond("refund_amount", "gt", "-5"),
            cond("amount", "between", ["5", "1"]),
            cond("currency", "is", "usx"),
            cond("date", "on", "2026-02-30"),
            cond("amount", "within_last", {"count": 1, "unit": "days"}),
            cond("currency", "in", ["JPY"]),
            cond("amount", "eq", "0.5"),
            {"field": "date", "op": "within_last", "value": {"count": 0, "unit": "years"}},
            "not a condition",
            cond("plan", "is", "price_1"),
            {"field": "colour", "op": "is", "value": "red", "extra": 1},
        ],
    }
    assert problems(document) == [
        ("/id", "must not be empty"),
        ("/account_id", "may only contain letters, digits, '.', '_' and '-'"),
        ("/name", "must be a string, got number"),
        ("/timezone", 'unknown time zone "Mars/Olympus"'),
        ("/version", "must be a whole number >= 1"),
        ("/conditions/0/field", 'refund_amount is only allowed with filter "refunded"'),
        ("/conditions/0/value", "negative amount"),
        ("/conditions/1/value", '"between" needs two amounts, low <= high'),
        ("/conditions/2/value", 'unknown currency "usx"'),
        ("/conditions/3/value", "2026-02-30 is not a date"),
        (
            "/conditions/4/op",
            'op "within_last" not allowed for field "amount" '
            "(allowed: eq, ne, gt, gte, lt, lte, between)",
        ),
        ("/conditions/6/value", '"0.5" has more decimal places than JPY allows (0)'),
        ("/conditions/7/value/count", "must be a whole number >= 1"),
        (
            "/conditions/7/value/unit",
            'unknown unit "years" (expected hours, days, weeks, months)',
        ),
        ("/conditions/8", "must be an object with field, op and value, got string"),
        (
            "/conditions/9/field",
            "plan is only allowed with filters "
            '"subscription_created", "subscription_changed", "subscription_cancelled"',
        ),
        ("/conditions/10/extra", "unknown key (expected field, op, value)"),
        (
            "/conditions/10/field",
            'unknown field "colour" (expected amount, currency, date, start_date, end_date, '
            "refund_amount, plan, occurrences)",
        ),
        (
            "/colour",
            "unknown key (expected id, account_id, name, filter, conditions, timezone, version)",
        ),
    ]


def test_error_text_lists_every_problem() -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule({"filter": "nope"})
    text = str(caught.value)
    assert text.splitlines()[0] == "invalid rule: 5 problems:"
    for line in (
        "/id: is required",
        "/account_id: is required",
        "/name: is required",
        '/filter: unknown filter "nope"',
        "/conditions: is required",
    ):
        assert line in text
    assert caught.value.to_dict()["errors"][0] == {"path": "/id", "message": "is required"}
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("document", [None, [], "rule", 3])
def test_a_rule_must_be_an_object(document: object) -> None:
    [(path, reason)] = problems(document)
    assert path == ""
    assert reason.startswith("a rule must be a JSON object")


@pytest.mark.parametrize(
    ("changes", "path", "reason"),
    [
        ({"id": "x" * 129}, "/id", "must be at most 128 characters, got 129"),
        ({"id": 7}, "/id", "must be a string, got number"),
        ({"account_id": "acme/evil"}, "/account_id", "may only contain letters"),
        ({"account_id": None}, "/account_id", "must be a string, got null"),
        ({"name": "   "}, "/name", "must not be empty"),
        ({"name": "n" * 201}, "/name", "must be at most 200 characters"),
        ({"filter": "charged"}, "/filter", 'unknown filter "charged" (expected charge_failed,'),
        ({"filter": ["refunded"]}, "/filter", "must be a string, got array"),
        ({"timezone": "../../etc/passwd"}, "/timezone", "unknown time zone"),
        ({"timezone": ""}, "/timezone", 'unknown time zone ""'),
        ({"timezone": 1}, "/timezone", "must be an IANA time zone name"),
        ({"version": True}, "/version", "must be a whole number >= 1"),
        ({"version": "2"}, "/version", "must be a whole number >= 1"),
        ({"conditions": {}}, "/conditions", "must be a list, got object"),
        ({"conditions": [cond("date", "on", "2026-03-01")] * 51}, "/conditions", "at most 50"),
    ],
)
def test_top_level_problems(changes: dict[str, Any], path: str, reason: str) -> None:
    found = problems({**doc(), **changes})
    assert [p for p, _ in found] == [path]
    assert found[0][1].startswith(reason)


@pytest.mark.parametrize(
    ("filter", "condition", "path", "reason"),
    [
        ("refunded", {"op": "eq", "value": 1}, "/conditions/0/field", "is required"),
        ("refunded", cond(1, "eq", 1), "/conditions/0/field", "must be a string, got number"),
        ("refunded", cond("amount", "greater", 1), "/conditions/0/op", 'unknown op "greater"'),
        ("refunded", cond("amount", "is", "5"), "/conditions/0/op", 'op "is" not allowed'),
        ("refunded", cond("amount", "gt", "1e3"), "/conditions/0/value", '"1e3" is not an amount'),
        ("refunded", cond("amount", "gt", "4.9999"), "/conditions/0/value", "4.9999 has more"),
        ("refunded", cond("amount", "gt", True), "/conditions/0/value", "must be an amount"),
        ("refunded", cond("amount", "gt", float("nan")), "/conditions/0/value", "nan is not an"),
        ("refunded", cond("amount", "gt", -1), "/conditions/0/value", "negative amount"),
        ("refunded", cond("amount", "gt", "1" * 16), "/conditions/0/value", "amount too large"),
        ("refunded", cond("amount", "gt", ["1"]), "/conditions/0/value", 'op "gt" takes one'),
        ("refunded", cond("amount", "between", "5"), "/conditions/0/value", '"between" needs two'),
        ("refunded", cond("amount", "between", ["1", "-2"]), "/conditions/0/value/1", "negative"),
        ("refunded", cond("refund_amount", "lt", "0.001"), "", ""),
        ("refunded", cond("currency", "is", ["usd"]), "/conditions/0/value", 'use "in" for a'),
        ("refunded", cond("currency", "is_not", ["usd"]), "/conditions/0/value", 'use "not_in"'),
        (
            "refunded",
            cond("currency", "in", []),
            "/conditions/0/value",
            'op "in" needs a non-empty',
        ),
        ("refunded", cond("currency", "not_in", "usd"), "/conditions/0/value", "needs a non-empty"),
        ("refunded", cond("currency", "in", ["usd", 5]), "/conditions/0/value/1", "must be a cur"),
        ("refunded", cond("currency", "is", "us"), "/conditions/0/value", 'unknown currency "us"'),
        ("refunded", cond("date", "on", "2026-3-1"), "/conditions/0/value", "not a date in YYYY"),
        ("refunded", cond("date", "on", "1969-12-31"), "/conditions/0/value", "before 1970-01-01"),
        ("refunded", cond("date", "on", ["2026-03-01"]), "/conditions/0/value", "takes one date"),
        ("refunded", cond("date", "after", 20260301), "/conditions/0/value", "must be a date"),
        (
            "refunded",
            cond("date", "between", ["2026-03-02", "2026-03-01"]),
            "/conditions/0/value",
            '"between" needs two dates, first <= second',
        ),
        ("refunded", cond("date", "between", ["2026-03-02"]), "/conditions/0/value", '"between"'),
        (
            "refunded",
            cond("date", "between", ["2026-03-01", "2026-13-01"]),
            "/conditions/0/value/1",
            "2026-13-01 is not a date",
        ),
        ("refunded", cond("date", "within_last", 7), "/conditions/0/value", 'op "within_last" ne'),
        (
            "refunded",
            cond("date", "more_than_ago", {"count": 5, "unit": "days", "tz": "UTC"}),
            "/conditions/0/value/tz",
            "unknown key (expected count, unit)",
        ),
        (
            "refunded",
            cond("date", "within_last", {"count": 36526, "unit": "days"}),
            "/conditions/0/value/count",
            "at most 36525 days (100 years)",
        ),
        (
            "refunded",
            cond("date", "within_last", {"count": 2.5, "unit": "days"}),
            "/conditions/0/value/count",
            "must be a whole number >= 1",
        ),
        (
            "refunded",
            cond("date", "within_last", {"count": 2}),
            "/conditions/0/value/unit",
            "unknown unit null",
        ),
        ("refunded", cond("date", "gt", "2026-01-01"), "/conditions/0/op", 'op "gt" not allowed'),
        ("refunded", cond("start_date", "on", "2026-01-01"), "/conditions/0/field", "start_date"),
        ("charge_failed", cond("end_date", "on", "2026-01-01"), "/conditions/0/field", "end_date"),
        ("subscription_changed", cond("refund_amount", "gt", 5), "/conditions/0/field", "refund"),
        ("subscription_created", cond("plan", "is", ""), "/conditions/0/value", "must be a price"),
        ("subscription_created", cond("plan", "in", ["a", None]), "/conditions/0/value/1", "mu"),
        ("refunded", cond("occurrences", "gte", -1), "/conditions/0/value", "must be a whole"),
        ("refunded", cond("occurrences", "gte", 1.0), "/conditions/0/value", "must be a whole"),
        ("refunded", cond("occurrences", "between", [3, 2]), "/conditions/0/value", '"between"'),
        ("refunded", cond("occurrences", "between", [3]), "/conditions/0/value", "needs two cou"),
        ("refunded", cond("occurrences", "on", 3), "/conditions/0/op", 'op "on" not allowed'),
    ],
)
def test_condition_problems(filter: str, condition: Any, path: str, reason: str) -> None:
    if not path:  # a valid edge case, listed here next to its invalid neighbours
        load(doc(filter, condition))
        return
    found = problems(doc(filter, condition))
    assert found[0][0] == path, found
    assert reason in found[0][1], found


def test_missing_condition_keys_are_each_reported() -> None:
    assert problems(doc("refunded", {})) == [
        ("/conditions/0/field", "is required"),
        ("/conditions/0/op", "is required"),
        ("/conditions/0/value", "is required"),
    ]


@pytest.mark.parametrize(
    ("currency", "amount", "valid"),
    [
        (cond("currency", "is", "jpy"), "500", True),
        (cond("currency", "is", "JPY"), "0.5", False),
        (cond("currency", "in", ["usd", "jpy"]), "49.99", False),
        (cond("currency", "in", ["usd", "eur"]), "49.99", True),
        (cond("currency", "is", "usd"), "49.999", False),
        (cond("currency", "is", "bhd"), "49.999", True),
        (cond("currency", "is", "kwd"), "0.0005", False),
        # Not pinned to a currency: the value is compared exactly per fact currency.
        (cond("currency", "is_not", "jpy"), "49.99", True),
        (cond("currency", "not_in", ["usd"]), "49.999", True),
        (cond("currency", "in", ["bhd", "kwd"]), "1.234", True),
    ],
)
def test_amount_precision_against_pinned_currencies(
    currency: dict[str, Any], amount: str, valid: bool
) -> None:
    document = doc("charge_succeeded", currency, cond("amount", "gte", amount))
    if valid:
        load(document)
    else:
        [(path, reason)] = problems(document)
        assert path == "/conditions/1/value"
        assert "decimal places" in reason


def test_excluding_a_currency_unpins_its_precision() -> None:
    load(
        doc(
            "charge_succeeded",
            cond("currency", "in", ["usd", "jpy"]),
            cond("currency", "is_not", "jpy"),
            cond("amount", "between", ["0", "49.99"]),
        )
    )
    found = problems(
        doc(
            "charge_succeeded",
            cond("amount", "between", ["0.5", "49.99"]),
            cond("currency", "in", ["jpy"]),
        )
    )
    assert found == [
        ("/conditions/0/value/0", '"0.5" has more decimal places than JPY allows (0)'),
        ("/conditions/0/value/1", '"49.99" has more decimal places than JPY allows (0)'),
    ]


def test_validation_does_not_depend_on_assert() -> None:
    # python -O strips asserts; the parser must not rely on them.
    import ast
    import inspect

    import rules.parse

    tree = ast.parse(inspect.getsource(rules.parse))
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.Assert)]


# -- round trip ------------------------------------------------------------------------

_AMOUNTS = st.one_of(
    st.integers(0, 10**6),
    st.decimals(0, 10**6, places=2).map(str),
)
_DAYS = st.dates(min_value=date(1970, 1, 2)).map(lambda d: d.isoformat())
_CODES = st.sampled_from(["usd", "EUR", "gbp", "bhd", "chf"])
_PLANS = st.text("abcdefghij_0123456789", min_size=1, max_size=12)


def _value(kind: str, op: str) -> st.SearchStrategy[Any]:
    if kind == "money":
        if op == "between":
            return st.tuples(_AMOUNTS, _AMOUNTS).map(
                lambda pair: sorted(pair, key=lambda a: Decimal(str(a)))
            )
        return _AMOUNTS
    if kind == "count":
        if op == "between":
            return st.tuples(st.integers(0, 50), st.integers(0, 50)).map(sorted)
        return st.integers(0, 50)
    if kind in ("currency", "plan"):
        item = _CODES if kind == "currency" else _PLANS
        return st.lists(item, min_size=1, max_size=4) if op in ("in", "not_in") else item
    if op == "between":
        return st.tuples(_DAYS, _DAYS).map(sorted)
    if op in ("within_last", "more_than_ago"):
        return st.fixed_dictionaries({"count": st.integers(1, 500), "unit": st.sampled_from(UNITS)})
    return _DAYS


@st.composite
def valid_docs(draw: st.DrawFn) -> dict[str, Any]:
    filter = draw(st.sampled_from(FILTERS))
    fields = [name for name, allowed in FIELD_FILTERS.items() if filter in allowed]
    conditions = []
    for _ in range(draw(st.integers(0, 6))):
        field = draw(st.sampled_from(fields))
        op = draw(st.sampled_from(OPS[FIELDS[field]]))
        conditions.append(cond(field, op, draw(_value(FIELDS[field], op))))
    document = doc(filter, *conditions)
    if draw(st.booleans()):
        document["timezone"] = draw(
            st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
        )
    if draw(st.booleans()):
        document["version"] = draw(st.integers(1, 1000))
    return document


@settings(max_examples=300)
@given(valid_docs())
def test_round_trip_through_to_dict(document: dict[str, Any]) -> None:
    rule = load(document)
    canonical = rule.to_dict()
    again = load(canonical)
    assert again == rule
    assert again.to_dict() == canonical
    assert json.loads(json.dumps(canonical)) == canonical  # plain JSON types only


def test_field_error_str() -> None:
    assert str(FieldError("/filter", "is required")) == "/filter: is required"
    assert str(FieldError("", "not JSON")) == "(rule): not JSON"
