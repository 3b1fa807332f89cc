"""Fuzzing the rule validator: anything JSON can carry gives a `Rule` or a `RuleError`.

Three campaigns, each counted: arbitrary JSON-like values (numbers as int, float and
Decimal, deep nesting, odd keys); valid rules with one part replaced by an arbitrary
value (so the fuzz reaches deep into conditions, not only the top-level checks); and
arbitrary text and bytes through `parse_rule_json`. Every accepted rule must round-trip
through `to_dict` and evaluate without raising.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from rules import FieldError, Rule, RuleError, is_member, next_change, parse_rule, parse_rule_json
from rules.vocabulary import FIELDS, FILTERS, OPS, UNITS

pytestmark = pytest.mark.reliability

EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "1000"))
TRIED: Counter[str] = Counter()
FUZZ = hsettings(max_examples=EXAMPLES, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

WORDS = st.sampled_from([
    *FILTERS, *FIELDS, *(op for ops in OPS.values() for op in ops), *UNITS,
    "id", "account_id", "name", "filter", "conditions", "timezone", "version", "value",
    "op", "field", "count", "unit", "UTC", "Europe/Berlin", "../../etc/passwd", "", " ",
    "usd", "JPY", "eur", "49.99", "50", "-1", "1e400", "NaN", "2026-02-30", "2026-03-29",
    "0000-01-01", "9999-12-31", "price_1", "\x00", "Ω", "a" * 300,
])
NUMBERS = st.one_of(
    st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2**63, 10**400, Decimal("1e-400"), Decimal("1E+5000")]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=40), WORDS)
KEYS = st.one_of(WORDS, st.text(max_size=12))
JSONISH: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=6),
                            st.dictionaries(KEYS, inner, max_size=6)),
    max_leaves=40,
)

VALID: list[dict[str, Any]] = [
    {"id": "big-refunds", "account_id": "acme", "name": "Refunded over $50", "filter": "refunded",
     "conditions": [
         {"field": "refund_amount", "op": "gt", "value": "50"},
         {"field": "currency", "op": "in", "value": ["usd", "eur"]},
         {"field": "date", "op": "within_last", "value": {"count": 30, "unit": "days"}}],
     "timezone": "UTC"},
    {"id": "subs", "account_id": "acme", "name": "Plan changers", "filter": "subscription_changed",
     "conditions": [
         {"field": "plan", "op": "is", "value": "price_1"},
         {"field": "start_date", "op": "between", "value": ["2026-01-01", "2026-12-31"]},
         {"field": "amount", "op": "between", "value": ["10", "99.99"]},
         {"field": "end_date", "op": "more_than_ago", "value": {"count": 2, "unit": "months"}}],
     "timezone": "Europe/Berlin", "version": 3},
    {"id": "dunning", "account_id": "acme", "name": "Failed twice", "filter": "charge_failed",
     "conditions": [
         {"field": "occurrences", "op": "gte", "value": 2},
         {"field": "date", "op": "within_last", "value": {"count": 30, "unit": "days"}},
         {"field": "currency", "op": "is", "value": "JPY"},
         {"field": "amount", "op": "gt", "value": "500"}]},
]


def paths(doc: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document that a mutation can replace or remove."""
    found = [here]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths(value, (*here, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += paths(value, (*here, index))
    return found


@st.composite
def mutated_rules(draw: st.DrawFn) -> Any:
    doc: Any = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(paths(doc)))
        if not where:
            if draw(st.booleans()):
                doc = draw(JSONISH)
            continue
        parent = doc
        for step in where[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "remove", "word", "number"]))
        if action == "remove" and isinstance(parent, dict):
            del parent[where[-1]]
        elif action == "word":
            parent[where[-1]] = draw(WORDS)
        elif action == "number":
            parent[where[-1]] = draw(NUMBERS)
        else:
            parent[where[-1]] = draw(JSONISH)
    if isinstance(doc, dict) and draw(st.booleans()):
        doc[draw(KEYS)] = draw(JSONISH)
    return doc


NOW = 1_780_000_000


class _Fact:
    """A fact of every filter at once: enough for evaluation to touch each condition."""

    def __init__(self, rule: Rule, occurred_at: int) -> None:
        self.fact_id = f"f{occurred_at}"
        self.filter = rule.filter
        self.account_id = rule.account_id
        self.email = "ann@example.com"
        self.occurred_at = occurred_at
        self.amount = 5_000
        self.currency = "usd"
        self.refund_amount = 2_500
        self.plans = ("price_1",)
        self.start_date = occurred_at
        self.end_date = occurred_at + 86_400


def check_error(exc: RuleError) -> None:
    """A RuleError names at least one problem, each with a path and a reason."""
    problems = exc.errors
    if not problems or not all(isinstance(e, FieldError) and isinstance(e.path, str)
                               and e.reason for e in problems):
        raise AssertionError(f"malformed RuleError: {problems!r}")
    str(exc)  # the message renders
    exc.to_dict()


def check(doc: Any, campaign: str) -> None:
    TRIED[campaign] += 1
    try:
        rule = parse_rule(doc)
    except RuleError as exc:
        check_error(exc)
        return
    TRIED[f"{campaign}: accepted"] += 1
    assert parse_rule(rule.to_dict()) == rule
    facts = [_Fact(rule, NOW - 3 * 86_400), _Fact(rule, NOW - 40 * 86_400)]
    is_member(rule, facts, NOW)
    next_change(rule, facts, NOW)


@FUZZ
@given(JSONISH)
def test_arbitrary_json_values(doc: Any) -> None:
    check(doc, "arbitrary JSON values")


@FUZZ
@given(mutated_rules())
def test_valid_rules_with_parts_replaced(doc: Any) -> None:
    check(doc, "valid rules, parts replaced")


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 st.integers(1, 5000).map(lambda n: "[" * n + "]" * n),
                 st.integers(1, 5000).map(lambda n: '{"a":' * n + "1" + "}" * n)))
def test_arbitrary_text(raw: str | bytes) -> None:
    TRIED["arbitrary text and bytes"] += 1
    try:
        parse_rule_json(raw)
    except RuleError as exc:
        check_error(exc)


def test_zz_report_counts() -> None:
    """Print how many inputs each campaign tried (the numbers in docs/reliability.md)."""
    print("rule validator fuzz, inputs tried:", dict(TRIED), "total", sum(TRIED.values()))
    if TRIED:
        assert all(n >= min(EXAMPLES, 100) for k, n in TRIED.items() if ":" not in k), TRIED
