"""Retention of facts (`stream.membership`, "Retention"): what `prune` forgets never
changes a membership or a due instant, at any instant from the pruning on, whatever
the rules; and it keeps only a few facts per rule past the horizon."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.windows import HISTORY_FLOOR_SECONDS, history_floor_seconds
from rules import Rule, evaluate, parse_rule
from stream.facts import Fact
from stream.membership import (
    DAY,
    MAX_FACTS_PER_CONTACT,
    ContactState,
    history_horizon,
    hold,
    prune,
)

pytestmark = pytest.mark.unit

NOW = 1_800_000_000
HOUR = 3600


def fact(i: int, at: int, amount: int) -> Fact:
    return Fact(f"ch_{i}:failed", "charge_failed", "acme", "conn1", "ann@example.com", at,
                amount=amount, currency="usd")


def make_rule(i: int, conditions: list[dict[str, Any]]) -> Rule:
    return parse_rule({"id": f"r{i}", "account_id": "acme", "name": f"r{i}",
                       "filter": "charge_failed", "conditions": conditions,
                       "timezone": "UTC", "version": 1})


relative = st.fixed_dictionaries({
    "field": st.just("date"),
    "op": st.sampled_from(["within_last", "more_than_ago"]),
    "value": st.one_of(
        st.fixed_dictionaries({"count": st.integers(1, 60),
                               "unit": st.sampled_from(["hours", "days"])}),
        st.fixed_dictionaries({"count": st.integers(1, 8), "unit": st.just("weeks")}),
        st.fixed_dictionaries({"count": st.integers(1, 3), "unit": st.just("months")})),
})
amount = st.fixed_dictionaries({"field": st.just("amount"),
                                "op": st.sampled_from(["gt", "lte"]),
                                "value": st.sampled_from(["20", "50", "80"])})
occurrences = st.one_of(
    st.fixed_dictionaries({"field": st.just("occurrences"),
                           "op": st.sampled_from(["gte", "lte", "eq", "gt", "lt"]),
                           "value": st.integers(1, 4)}),
    st.fixed_dictionaries({"field": st.just("occurrences"), "op": st.just("between"),
                           "value": st.lists(st.integers(1, 4), min_size=2, max_size=2)
                           .map(sorted)}),
)
conditions = st.tuples(st.lists(relative, max_size=2), st.lists(amount, max_size=1),
                       st.lists(occurrences, max_size=1)).map(lambda t: [*t[0], *t[1], *t[2]])
#: Ages spread evenly over 400 days (integers() would favour the newest, within the horizon).
ages = st.sampled_from(range(0, 400 * DAY, 5 * HOUR + 17))
histories = st.lists(st.tuples(ages, st.sampled_from([1_000, 5_000, 9_000])), max_size=25)


@settings(max_examples=300, deadline=None)
@given(rule_conditions=st.lists(conditions, min_size=1, max_size=3), history=histories,
       floor_days=st.sampled_from([1, 33]), later=st.lists(st.integers(0, 900 * DAY),
                                                           max_size=4))
def test_pruning_changes_no_membership_and_no_due_instant_from_then_on(
        rule_conditions: list[list[dict[str, Any]]], history: list[tuple[int, int]],
        floor_days: int, later: list[int]) -> None:
    rules = [make_rule(i, c) for i, c in enumerate(rule_conditions)]
    before = ContactState("acme", "ann@example.com", 0)
    for i, (age, cents) in enumerate(history):
        f = fact(i, NOW - age, cents)
        before.facts.setdefault(f.filter, {})[f.fact_id] = f
    after = copy.deepcopy(before)
    horizon = history_horizon(rules, floor_days * DAY)

    prune(after, NOW, horizon, {r.id: r for r in rules})

    old = [f for f in after.facts_for("charge_failed") if f.occurred_at < NOW - horizon]
    assert len(old) <= sum(1 + 4 * bool(r.count_conditions) for r in rules)
    for rule in rules:
        instants = {NOW, NOW + 1, *(NOW + d for d in later)}
        _, due = evaluate(rule, before.facts_for("charge_failed"), NOW)
        while due is not None and len(instants) < 40:  # every instant the clock flips it
            instants.add(due)
            _, due = evaluate(rule, before.facts_for("charge_failed"), due)
        for t in sorted(instants):
            assert evaluate(rule, after.facts_for("charge_failed"), t) == \
                evaluate(rule, before.facts_for("charge_failed"), t), (rule, t)


def test_past_the_horizon_only_the_newest_qualifying_fact_per_rule_stays() -> None:
    lapsed = make_rule(0, [{"field": "date", "op": "more_than_ago",
                            "value": {"count": 30, "unit": "days"}},
                           {"field": "amount", "op": "gt", "value": "20"}])
    twice = make_rule(1, [{"field": "date", "op": "more_than_ago",
                           "value": {"count": 30, "unit": "days"}},
                          {"field": "occurrences", "op": "gte", "value": 2}])
    state = ContactState("acme", "ann@example.com", 0)
    ages = [40, 50, 60, 70, 80]  # days; the 50-day one is too small for `lapsed`
    for i, age in enumerate(ages):
        f = fact(i, NOW - age * DAY, 1_000 if age == 50 else 5_000)
        state.facts.setdefault(f.filter, {})[f.fact_id] = f
    recent = fact(9, NOW - 2 * DAY, 5_000)
    state.facts["charge_failed"][recent.fact_id] = recent

    forgotten = prune(state, NOW, history_horizon([lapsed, twice]), {"r0": lapsed, "r1": twice})

    # lapsed: the newest qualifying (40 days); twice: up to 3 (gte 2, plus one): 40, 50, 60.
    assert sorted(state.facts["charge_failed"]) == ["ch_0:failed", "ch_1:failed",
                                                     "ch_2:failed", "ch_9:failed"]
    assert forgotten == 2
    assert prune(state, NOW, history_horizon([lapsed]), {"r0": lapsed}) == 2
    assert sorted(state.facts["charge_failed"]) == ["ch_0:failed", "ch_9:failed"]
    # Without rules, nothing past the horizon is needed.
    assert prune(state, NOW, history_horizon([]), {}) == 1
    assert list(state.facts["charge_failed"]) == ["ch_9:failed"]


def test_the_cap_drops_the_oldest_facts_no_rule_keeps() -> None:
    big = make_rule(0, [{"field": "amount", "op": "gt", "value": "80"}])
    state = ContactState("acme", "ann@example.com", 0)
    assert hold(state, fact(0, NOW - 20 * DAY, 9_000), [big], NOW) == 0  # the only big one
    for i in range(1, MAX_FACTS_PER_CONTACT):
        hold(state, fact(i, NOW - 10 * DAY + i, 1_000), [big], NOW)
    assert len(state.facts["charge_failed"]) == MAX_FACTS_PER_CONTACT

    assert hold(state, fact(5000, NOW, 1_000), [big], NOW) == 1

    held = state.facts["charge_failed"]
    assert len(held) == MAX_FACTS_PER_CONTACT
    assert "ch_0:failed" in held  # the oldest, but the rule keeps it
    assert "ch_1:failed" not in held  # the oldest that no rule keeps went


def test_history_floor_from_the_environment() -> None:
    assert history_floor_seconds({}) == HISTORY_FLOOR_SECONDS == 33 * DAY
    assert history_floor_seconds({"SEGMENTS_HISTORY_DAYS": " 90 "}) == 90 * DAY
    for bad in ("0", "-3", "1.5", "a month"):
        with pytest.raises(ValueError, match="SEGMENTS_HISTORY_DAYS"):
            history_floor_seconds({"SEGMENTS_HISTORY_DAYS": bad})
