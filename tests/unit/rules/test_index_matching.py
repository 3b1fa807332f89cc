"""RuleIndex.matching: the indexed answer is exactly the naive one, rule by rule.

`matching(fact, now)` must return `[r for r in for_fact(...) if matches(r, fact, now)]`
(same rules, same order) for any rules and facts, after any adds, replacements and
removals; the property test below generates them, including the conditions the index
does not handle itself (negations, months, calendar days, refund amounts, end dates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules import FILTERS, Rule, RuleError, RuleIndex, matches, parse_rule
from rules.vocabulary import FIELD_FILTERS

pytestmark = pytest.mark.unit

NOW = 1_780_000_000
DAY = 86_400
ACCOUNTS = ("acme", "globex")
CURRENCIES = ("usd", "eur", "jpy", "kwd", "gbp")
PLANS = ("price_a", "price_b", "price_c")


@dataclass(frozen=True)
class Fact:
    fact_id: str
    filter: str
    account_id: str
    email: str
    occurred_at: int
    amount: int | None
    currency: str | None
    refund_amount: int | None
    plans: tuple[str, ...]
    start_date: int | None
    end_date: int | None


def naive(index: RuleIndex, fact: Fact, now: int) -> list[Rule]:
    return [r for r in index.for_fact(fact.account_id, fact.filter) if matches(r, fact, now)]


money = st.sampled_from(["0", "5", "10", "10.5", "49.99", "50", "100", "1000"])
days = st.dates(min_value=__import__("datetime").date(2026, 1, 1),
                max_value=__import__("datetime").date(2026, 7, 1)).map(lambda d: d.isoformat())


def _numeric(value: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[str, Any]]:
    return st.one_of(
        st.tuples(st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]), value),
        st.tuples(st.just("between"), st.lists(value, min_size=2, max_size=2).map(sorted)),
    )


def _set(values: tuple[str, ...]) -> st.SearchStrategy[tuple[str, Any]]:
    return st.one_of(
        st.tuples(st.sampled_from(["is", "is_not"]), st.sampled_from(values)),
        st.tuples(st.sampled_from(["in", "not_in"]),
                  st.lists(st.sampled_from(values), min_size=1, max_size=3, unique=True)),
    )


_date = st.one_of(
    st.tuples(st.sampled_from(["within_last", "more_than_ago"]),
              st.fixed_dictionaries({"count": st.integers(1, 40),
                                     "unit": st.sampled_from(["hours", "days", "weeks",
                                                              "months"])})),
    st.tuples(st.sampled_from(["on", "before", "after"]), days),
    st.tuples(st.just("between"), st.lists(days, min_size=2, max_size=2).map(sorted)),
)

OPS_VALUES: dict[str, st.SearchStrategy[tuple[str, Any]]] = {
    "amount": _numeric(money),
    "refund_amount": _numeric(money),
    "currency": _set(CURRENCIES),
    "plan": _set(PLANS),
    "date": _date,
    "start_date": _date,
    "end_date": _date,
    "occurrences": _numeric(st.sampled_from(["1", "2"])).map(
        lambda ov: (ov[0], [int(v) for v in ov[1]] if isinstance(ov[1], list) else int(ov[1]))),
}


@st.composite
def rule_docs(draw: st.DrawFn, number: int) -> dict[str, Any]:
    filter = draw(st.sampled_from(FILTERS))
    fields = [f for f, allowed in FIELD_FILTERS.items() if filter in allowed]
    conditions = []
    for field in draw(st.lists(st.sampled_from(fields), max_size=5)):
        op, value = draw(OPS_VALUES[field])
        conditions.append({"field": field, "op": op, "value": value})
    return {"id": f"r{draw(st.integers(0, 30))}", "account_id": draw(st.sampled_from(ACCOUNTS)),
            "name": f"rule {number}", "filter": filter, "conditions": conditions,
            "timezone": draw(st.sampled_from(["UTC", "Europe/Berlin"]))}


@st.composite
def facts(draw: st.DrawFn) -> Fact:
    filter = draw(st.sampled_from(FILTERS))
    currency = draw(st.none() | st.sampled_from(CURRENCIES))
    amount = draw(st.none() | st.integers(0, 200_000))
    instant = st.integers(NOW - 60 * DAY, NOW + DAY)
    return Fact(
        fact_id="f", filter=filter, account_id=draw(st.sampled_from(ACCOUNTS)),
        email="ann@example.com", occurred_at=draw(instant), amount=amount, currency=currency,
        refund_amount=draw(st.none() | st.integers(0, 200_000)),
        plans=tuple(draw(st.lists(st.sampled_from(PLANS), max_size=2))),
        start_date=draw(st.none() | instant), end_date=draw(st.none() | instant))


def _parse(doc: dict[str, Any]) -> Rule | None:
    try:
        return parse_rule(doc)
    except RuleError:  # e.g. a between whose two ends are equal
        return None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(st.integers(0, 10_000).flatmap(rule_docs), max_size=40),
       removals=st.lists(st.tuples(st.sampled_from(ACCOUNTS), st.integers(0, 30)), max_size=5),
       probes=st.lists(facts(), min_size=1, max_size=20),
       now=st.integers(NOW - DAY, NOW + DAY))
def test_matching_equals_naive_evaluation_of_every_rule(
    docs: list[dict[str, Any]], removals: list[tuple[str, int]], probes: list[Fact], now: int
) -> None:
    index = RuleIndex()
    for doc in docs:
        parsed = _parse(doc)
        if parsed is not None:
            index.add(parsed)
        for fact in probes[:2]:  # read between changes: compiled routes must be dropped
            assert index.matching(fact, now) == naive(index, fact, now)
    for account, number in removals:
        index.remove(account, f"r{number}")
    for fact in probes:
        assert index.matching(fact, now) == naive(index, fact, now)


def test_thresholds_are_bisected_per_currency_exponent() -> None:
    index = RuleIndex()
    for number, threshold in enumerate(("10", "20", "30.5")):
        index.add(parse_rule({"id": f"r{number}", "account_id": "acme", "name": "n",
                              "filter": "charge_succeeded",
                              "conditions": [{"field": "amount", "op": "gte",
                                              "value": threshold}]}))

    def ids(amount: int, currency: str | None) -> list[str]:
        fact = Fact("f", "charge_succeeded", "acme", "a@example.com", NOW, amount, currency,
                    None, (), None, None)
        return [rule.id for rule in index.matching(fact, NOW)]

    assert ids(1999, "usd") == ["r0"]
    assert ids(2000, "usd") == ["r0", "r1"]
    assert ids(3050, "usd") == ["r0", "r1", "r2"]
    assert ids(30, "jpy") == ["r0", "r1"]  # zero-decimal: 30 yen
    assert ids(31, "jpy") == ["r0", "r1", "r2"]
    assert ids(5000, None) == []  # an amount without a currency means nothing


def naive_affected(index: RuleIndex, fact: Fact, now: int) -> list[Rule]:
    """`affected` by its definition, condition by condition on every rule of the route."""
    def can_hold(rule: Rule) -> bool:
        if not all(c.holds(fact, 0) for c in rule.static_conditions):
            return False
        for condition in rule.relative_conditions:
            instant = getattr(fact, condition.attribute)
            if instant is None:
                return False
            if condition.op == "within_last" and condition.window_end(instant) <= now:
                return False
        return True
    return [r for r in index.for_fact(fact.account_id, fact.filter) if can_hold(r)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(st.integers(0, 10_000).flatmap(rule_docs), max_size=40),
       probes=st.lists(facts(), min_size=1, max_size=20),
       now=st.integers(NOW - DAY, NOW + DAY))
def test_affected_is_every_rule_the_fact_can_still_satisfy(
    docs: list[dict[str, Any]], probes: list[Fact], now: int
) -> None:
    """`affected` is its definition, and no rule it leaves out is satisfied by the fact
    at `now` or at any instant after (every instant a relative condition can flip at,
    and one past each)."""
    index = RuleIndex()
    for doc in docs:
        parsed = _parse(doc)
        if parsed is not None:
            index.add(parsed)
    for fact in probes:
        affected = index.affected(fact, now)
        assert affected == naive_affected(index, fact, now)
        matching = index.matching(fact, now)
        assert [r for r in affected if r in matching] == matching
        for rule in index.for_fact(fact.account_id, fact.filter):
            if rule in affected:
                continue
            instants = {now} | {i + d for c in rule.relative_conditions
                                for i in c.changes(fact) for d in (0, 1) if i + d >= now}
            assert not any(matches(rule, fact, t) for t in instants), rule


def test_affected_adds_the_rules_of_the_amended_version() -> None:
    index = RuleIndex()
    for number, threshold in enumerate(("10", "100")):
        index.add(parse_rule({"id": f"r{number}", "account_id": "acme", "name": "n",
                              "filter": "refunded",
                              "conditions": [{"field": "amount", "op": "gte",
                                              "value": threshold}]}))
    old = Fact("f", "refunded", "acme", "a@example.com", NOW, 20_000, "usd", None, (), None,
               None)
    new = Fact("f", "refunded", "acme", "a@example.com", NOW, 2_000, "usd", None, (), None,
               None)
    assert [r.id for r in index.affected(new, NOW)] == ["r0"]
    assert [r.id for r in index.affected(new, NOW, previous=old)] == ["r0", "r1"]
    with pytest.raises(ValueError, match="same account and filter"):
        index.affected(new, NOW, previous=Fact("f", "charge_failed", "acme", "a@example.com",
                                               NOW, 1, "usd", None, (), None, None))
