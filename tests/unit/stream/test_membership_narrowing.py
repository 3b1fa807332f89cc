"""Narrowing (`stream.membership.hold_affected`): re-deciding only the rules a fact can
affect publishes exactly what re-deciding every rule of its route does.

The property test replays random contact histories twice, step by step, over random
rules (several per filter: thresholds, currencies, plans, relative windows, calendar
days, occurrences): once as the fact path did before narrowing (`hold`, then `on_fact`
on every rule of the route) and once narrowed (`hold_affected`, then `on_fact` on what it
returns), with the pipeline's housekeeping (`prune`) before each fact, amendments (a
fact id seen again, another amount or date), retractions, and the per-contact cap both
off and tiny. Before each step the clock advances and due timers fire (`on_time`), as
the stream's ticks do; at every step both give the same changes and the same state.

Timers that are due but not yet fired when a fact arrives are the one place the two
differ by design: see `test_a_window_that_ended_is_left_by_its_timer_not_by_a_fact`.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules import Rule, RuleError, RuleIndex, parse_rule
from stream import membership
from stream.facts import Fact
from stream.membership import (
    DAY,
    ContactState,
    history_horizon,
    hold,
    hold_affected,
    on_fact,
    on_retract,
    on_rule,
    on_time,
    prunable,
    prune,
)

pytestmark = pytest.mark.unit

START = 1_800_000_000
HOUR = 3600
FILTERS = ("charge_failed", "refunded", "subscription_changed")
PLANS = ("price_a", "price_b", "price_c")


def _numeric(values: list[str]) -> st.SearchStrategy[tuple[str, Any]]:
    return st.one_of(
        st.tuples(st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]),
                  st.sampled_from(values)),
        st.tuples(st.just("between"),
                  st.lists(st.sampled_from(values), min_size=2, max_size=2, unique=True)
                  .map(lambda v: sorted(v, key=float))))


_relative = st.tuples(
    st.sampled_from(["within_last", "more_than_ago"]),
    st.one_of(st.fixed_dictionaries({"count": st.integers(1, 72), "unit": st.just("hours")}),
              st.fixed_dictionaries({"count": st.integers(1, 20),
                                     "unit": st.sampled_from(["days", "weeks"])}),
              st.fixed_dictionaries({"count": st.integers(1, 2), "unit": st.just("months")})))
_calendar = st.tuples(st.sampled_from(["after", "before"]),
                      st.sampled_from(["2027-01-10", "2027-01-20", "2027-02-01"]))
_set = st.one_of(st.tuples(st.sampled_from(["is", "is_not"]), st.sampled_from(PLANS)),
                 st.tuples(st.sampled_from(["in", "not_in"]),
                           st.lists(st.sampled_from(PLANS), min_size=1, max_size=2,
                                    unique=True)))
CONDITIONS: dict[str, st.SearchStrategy[tuple[str, Any]]] = {
    "amount": _numeric(["10", "20", "50", "80", "100"]),
    "currency": st.one_of(
        st.tuples(st.sampled_from(["is", "is_not"]), st.sampled_from(["usd", "eur", "jpy"])),
        st.tuples(st.sampled_from(["in", "not_in"]),
                  st.lists(st.sampled_from(["usd", "eur", "jpy"]), min_size=1, max_size=2,
                           unique=True))),
    "date": st.one_of(_relative, _relative, _calendar),
    "occurrences": _numeric(["1", "2", "3"]).map(
        lambda ov: (ov[0], [int(v) for v in ov[1]] if isinstance(ov[1], list)
                    else int(ov[1]))),
    "refund_amount": _numeric(["5", "20", "50"]),
    "plan": _set,
    "end_date": _relative,
}
FIELDS = {
    "charge_failed": ("amount", "currency", "date", "occurrences"),
    "refunded": ("amount", "currency", "date", "occurrences", "refund_amount"),
    "subscription_changed": ("amount", "currency", "date", "occurrences", "plan",
                             "end_date"),
}


@st.composite
def rule(draw: st.DrawFn, number: int, version: int = 1) -> Rule | None:
    filter_id = draw(st.sampled_from(FILTERS))
    conditions = []
    for field in draw(st.lists(st.sampled_from(FIELDS[filter_id]), max_size=4)):
        op, value = draw(CONDITIONS[field])
        conditions.append({"field": field, "op": op, "value": value})
    try:
        return parse_rule({
            "id": f"r{number}", "account_id": "acme", "name": f"r{number}",
            "filter": filter_id, "conditions": conditions,
            "timezone": draw(st.sampled_from(["UTC", "Europe/Berlin"])), "version": version})
    except RuleError:  # e.g. occurrences "lt 1", which nothing can satisfy
        return None


@st.composite
def rules(draw: st.DrawFn) -> list[Rule]:
    drawn = [draw(rule(number)) for number in range(draw(st.integers(1, 12)))]
    return [r for r in drawn if r is not None]


@st.composite
def edits(draw: st.DrawFn) -> dict[int, Rule]:
    """Rule changes between facts: step -> a new version of rule r0..r3 (maybe on
    another filter), published as the pipeline does (`on_rule` on every contact)."""
    out = {}
    for step in draw(st.lists(st.integers(0, 24), max_size=3, unique=True)):
        edited = draw(rule(draw(st.integers(0, 3)), version=10 + step))
        if edited is not None:
            out[step] = edited
    return out


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[int, Fact]]:
    """(seconds the clock advances first, fact); fact ids come from a small pool per
    filter, so many facts amend an earlier one (and some retract one)."""
    out = []
    for _ in range(draw(st.integers(1, 25))):
        advance = draw(st.sampled_from([0, 1, HOUR, 5 * HOUR, DAY, 3 * DAY, 12 * DAY]))
        filter_id = draw(st.sampled_from(FILTERS))
        currency = draw(st.sampled_from(["usd", "eur", "jpy", None]))
        amount = draw(st.none() | st.sampled_from([500, 1000, 2000, 5000, 8000, 10_000,
                                                   20_000]))
        # When it happened, relative to the clock at that step (late facts and, rarely,
        # a future-dated one), to be added to the clock.
        offset = draw(st.sampled_from([0, -HOUR, -DAY, -5 * DAY, -20 * DAY, -40 * DAY, HOUR]))
        end = draw(st.none() | st.sampled_from([-10 * DAY, -DAY, 0, DAY, 30 * DAY]))
        out.append((advance, Fact(
            fact_id=f"{filter_id[:3]}_{draw(st.integers(0, 4))}", filter=filter_id,  # type: ignore[arg-type]
            account_id="acme", connection_id="conn", email="ann@example.com",
            occurred_at=offset, amount=amount, currency=currency,
            refund_amount=(draw(st.sampled_from([0, 500, 2000, 5000]))
                           if filter_id == "refunded" else None),
            plans=(tuple(draw(st.lists(st.sampled_from(PLANS), max_size=2, unique=True)))
                   if filter_id == "subscription_changed" else ()),
            start_date=offset if filter_id == "subscription_changed" else None,
            end_date=end if filter_id == "subscription_changed" else None,
            retracted=draw(st.integers(0, 9)) == 0)))
    return out


def _at(fact: Fact, now: int) -> Fact:
    """The step's fact with its instants made absolute (the strategy draws offsets)."""
    return replace(fact, occurred_at=now + fact.occurred_at,
                   start_date=None if fact.start_date is None else now + fact.start_date,
                   end_date=None if fact.end_date is None else now + fact.end_date)


def _fact_path(state: ContactState, fact: Fact, index: RuleIndex, all_rules: dict[str, Rule],
               now: int, since: dict[str, int], *, narrowed: bool) -> list[Any]:
    """`Pipeline._fact` without the pipeline: housekeeping, then the fact."""
    horizon = history_horizon(all_rules.values())
    if prunable(state, now, horizon):
        prune(state, now, horizon, all_rules)
    route = index.for_fact(fact.account_id, fact.filter)
    if fact.retracted:
        return on_retract(state, fact, route, now, since)
    if narrowed:
        decide, _ = hold_affected(state, fact, index, now)
    else:
        hold(state, fact, route, now)
        decide = route
    return on_fact(state, fact, decide, now, since)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rule_set=rules(), history=steps(), changes=edits(), cap=st.sampled_from([1000, 2]),
       since=st.sampled_from([0, START, START + 10 * DAY]))
def test_narrowed_fact_path_publishes_what_every_rule_would(
    rule_set: list[Rule], history: list[tuple[int, Fact]], changes: dict[int, Rule],
    cap: int, since: int
) -> None:
    index = RuleIndex(rule_set)
    all_rules = {rule.id: rule for rule in rule_set}
    rule_since = {rule.id: since for rule in rule_set}
    full = ContactState("acme", "ann@example.com", 0)
    narrow = copy.deepcopy(full)
    now = START
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(membership, "MAX_FACTS_PER_CONTACT", cap)
        for step, (advance, drawn) in enumerate(history):
            now += advance
            # The stream's tick: due timers fire before the fact (see the module doc).
            assert on_time(narrow, all_rules, now) == on_time(full, all_rules, now)
            assert narrow == full
            edited = changes.get(step)
            if edited is not None:
                old = index.add(edited)
                all_rules[edited.id] = edited
                rule_since[edited.id] = now
                assert (on_rule(narrow, old, edited, now)
                        == on_rule(full, old, edited, now))
            fact = _at(drawn, now)
            expected = _fact_path(full, fact, index, all_rules, now, rule_since,
                                  narrowed=False)
            got = _fact_path(narrow, fact, index, all_rules, now, rule_since, narrowed=True)
            assert got == expected
            assert narrow == full
            assert narrow.to_bytes() == full.to_bytes()  # the changelog record too


def _rule(rule_id: str, conditions: list[dict[str, Any]]) -> Rule:
    return parse_rule({"id": rule_id, "account_id": "acme", "name": rule_id,
                       "filter": "refunded", "conditions": conditions})


def _refund(fact_id: str, at: int, amount: int) -> Fact:
    return Fact(fact_id, "refunded", "acme", "conn", "ann@example.com", at, amount=amount,
                currency="usd")


def test_an_amendment_redecides_the_rules_of_the_version_it_replaces() -> None:
    """A refund whose amount drops leaves the big-refunds segment although the new
    version matches no rule there (the rule set of the amended version is needed)."""
    big = _rule("big", [{"field": "amount", "op": "gte", "value": "100"}])
    small = _rule("small", [{"field": "amount", "op": "lt", "value": "10"}])
    index = RuleIndex([big, small])
    state = ContactState("acme", "ann@example.com", 0)
    decide, _ = hold_affected(state, _refund("re_1", START, 20_000), index, START)
    assert [r.id for r in decide] == ["big"]
    assert [c.change for c in on_fact(state, _refund("re_1", START, 20_000), decide,
                                      START)] == ["joined"]
    amended = _refund("re_1", START, 5_000)  # matches neither rule now
    decide, _ = hold_affected(state, amended, index, START + 10)
    assert [r.id for r in decide] == ["big"]
    changes = on_fact(state, amended, decide, START + 10)
    assert [(c.segment_id, c.change) for c in changes] == [("big", "left")]


def test_a_window_that_ended_is_left_by_its_timer_not_by_a_fact() -> None:
    """Narrowing's one visible difference, by decision: a change the clock alone caused
    (a window that ended) whose timer has not fired yet when an unrelated fact of the
    same filter arrives is published by the timer (`cause` "time", `at` the instant the
    window ended), as SPEC says ("emitted on time (timers)"; `cause` "time" is "a
    relative window moved"), no longer by that fact (`cause` "fact", the unrelated
    fact's id, and its event time, possibly before the window even ended)."""
    recent = _rule("recent", [{"field": "amount", "op": "gte", "value": "10"},
                              {"field": "date", "op": "within_last",
                               "value": {"count": 1, "unit": "days"}}])
    index = RuleIndex([recent])
    state = ContactState("acme", "ann@example.com", 0)
    first = _refund("re_1", START, 2_000)
    on_fact(state, first, hold_affected(state, first, index, START)[0], START)
    assert state.due == {"recent": START + DAY}
    now = START + DAY + 60  # the window ended a minute ago; the tick has not come yet
    late = _refund("re_2", START + DAY - HOUR, 500)  # too small for the rule
    decide, _ = hold_affected(state, late, index, now)
    assert decide == []
    assert on_fact(state, late, decide, now) == []
    [left] = on_time(state, {"recent": recent}, now)
    assert (left.change, left.cause, left.fact_id) == ("left", "time", None)
    assert left.at == "2027-01-16T08:00:00Z"  # START + DAY: when the window ended


def test_a_trimmed_history_redecides_every_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(membership, "MAX_FACTS_PER_CONTACT", 1)
    any_refund = _rule("any", [])
    big = _rule("big", [{"field": "amount", "op": "gte", "value": "100"}])
    index = RuleIndex([any_refund, big])
    state = ContactState("acme", "ann@example.com", 0)
    decide, dropped = hold_affected(state, _refund("re_1", START, 20_000), index, START)
    assert (len(decide), dropped) == (2, 0)
    decide, dropped = hold_affected(state, _refund("re_2", START + 1, 500), index, START + 1)
    assert (sorted(r.id for r in decide), dropped) == (["any", "big"], 1)


def test_prunable_says_whether_a_fact_is_past_the_horizon() -> None:
    """The fact path skips gathering rules for `prune` when nothing is old enough."""
    horizon = 10 * DAY
    state = ContactState("acme", "ann@example.com", 0)
    hold(state, _refund("re_1", START - horizon, 500), (), START)
    assert not prunable(state, START, horizon)  # exactly at the cutoff: kept whole
    subscription = Fact("sub_1", "subscription_changed", "acme", "conn", "ann@example.com",
                        START - horizon - 1, end_date=START + DAY)
    hold(state, subscription, (), START)
    assert not prunable(state, START, horizon)  # its end date is still ahead
    hold(state, _refund("re_2", START - horizon - 1, 500), (), START)
    assert prunable(state, START, horizon)
