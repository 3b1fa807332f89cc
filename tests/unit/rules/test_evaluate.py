"""Evaluation: one fact (`matches`), one contact (`is_member`), and the clock
(`next_change`), with exact money and DST-correct calendar days."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from rules import FactView, Rule, evaluate, is_member, matches, next_change, parse_rule
from rules.currencies import exponent
from rules.schema import SCHEMA_PATH

pytestmark = pytest.mark.unit

#: Every valid rule used here must also pass the published schema.
SCHEMA = Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))

HOUR, DAY = 3600, 86_400
T0 = 1_780_000_000  # 2026-05-28T20:26:40Z


@dataclass(frozen=True)
class Fact:
    """The smallest FactView: the engine must not need stream.facts.Fact."""

    fact_id: str = "f1"
    filter: str = "charge_failed"
    account_id: str = "acme"
    email: str = "ann@example.com"
    occurred_at: int = T0
    amount: int | None = None
    currency: str | None = None
    refund_amount: int | None = None
    plans: tuple[str, ...] = ()
    start_date: int | None = None
    end_date: int | None = None


def _is_fact_view(fact: FactView) -> FactView:
    return fact


_is_fact_view(Fact())  # mypy-checked: the local dataclass satisfies the protocol


def rule(filter: str, *conditions: tuple[str, str, Any], timezone: str = "UTC") -> Rule:
    doc = {
        "id": "seg",
        "account_id": "acme",
        "name": "test segment",
        "filter": filter,
        "conditions": [{"field": f, "op": o, "value": v} for f, o, v in conditions],
        "timezone": timezone,
    }
    SCHEMA.validate(doc)
    return parse_rule(doc)


def at(text: str, zone: str = "UTC") -> int:
    """Epoch seconds of a local wall time such as "2026-03-29 00:00"."""
    naive = datetime.fromisoformat(text)
    return int(naive.replace(tzinfo=ZoneInfo(zone)).timestamp())


# -- money -----------------------------------------------------------------------------


def test_major_units_follow_each_facts_currency() -> None:
    five = rule("charge_failed", ("amount", "gte", "5"))
    assert matches(five, Fact(amount=500, currency="usd"), T0)  # 5.00 USD
    assert not matches(five, Fact(amount=499, currency="usd"), T0)
    assert matches(five, Fact(amount=5, currency="jpy"), T0)  # 5 JPY
    assert not matches(five, Fact(amount=4, currency="jpy"), T0)
    assert matches(five, Fact(amount=5000, currency="bhd"), T0)  # 5.000 BHD
    assert not matches(five, Fact(amount=4999, currency="bhd"), T0)

    yen = rule("charge_failed", ("currency", "is", "jpy"), ("amount", "eq", "500"))
    assert matches(yen, Fact(amount=500, currency="jpy"), T0)
    assert not matches(yen, Fact(amount=500, currency="usd"), T0)  # 5.00 USD is not 500 JPY
    assert not matches(yen, Fact(amount=50000, currency="jpy"), T0)


def test_fractional_rule_values_compare_exactly_in_zero_decimal_currencies() -> None:
    assert matches(
        rule("charge_failed", ("amount", "gt", "49.99")), Fact(amount=50, currency="jpy"), 0
    )
    assert not matches(
        rule("charge_failed", ("amount", "gt", "49.99")), Fact(amount=49, currency="jpy"), 0
    )
    assert not matches(
        rule("charge_failed", ("amount", "eq", "49.5")), Fact(amount=49, currency="jpy"), 0
    )
    assert matches(
        rule("charge_failed", ("amount", "ne", "49.5")), Fact(amount=49, currency="jpy"), 0
    )
    assert matches(
        rule("charge_failed", ("amount", "lt", "49.5")), Fact(amount=49, currency="jpy"), 0
    )
    assert matches(
        rule("charge_failed", ("amount", "lte", 49.5)), Fact(amount=49, currency="jpy"), 0
    )


_OPS = {
    "eq": lambda a, v: a == v,
    "ne": lambda a, v: a != v,
    "gt": lambda a, v: a > v,
    "gte": lambda a, v: a >= v,
    "lt": lambda a, v: a < v,
    "lte": lambda a, v: a <= v,
}
_CURRENCIES = st.sampled_from(["usd", "jpy", "bhd", "eur", "krw", "kwd", "xyz"])
_RULE_AMOUNTS = st.decimals(0, 100_000, places=3)


@given(
    op=st.sampled_from(sorted(_OPS)),
    value=_RULE_AMOUNTS,
    amount=st.integers(0, 10**8),
    currency=_CURRENCIES,
)
def test_every_numeric_op_agrees_with_decimal_arithmetic(
    op: str, value: Decimal, amount: int, currency: str
) -> None:
    compiled = rule("charge_failed", ("amount", op, str(value)))
    major = Decimal(amount).scaleb(-exponent(currency))
    expected = _OPS[op](major, value)
    assert matches(compiled, Fact(amount=amount, currency=currency), T0) == expected


@given(
    low=_RULE_AMOUNTS,
    high=_RULE_AMOUNTS,
    amount=st.integers(0, 10**8),
    currency=_CURRENCIES,
    field=st.sampled_from(["amount", "refund_amount"]),
)
def test_between_is_gte_low_and_lte_high(
    low: Decimal, high: Decimal, amount: int, currency: str, field: str
) -> None:
    low, high = min(low, high), max(low, high)
    fact = Fact(filter="refunded", amount=amount, refund_amount=amount, currency=currency)
    between = rule("refunded", (field, "between", [str(low), str(high)]))
    both = rule("refunded", (field, "gte", str(low)), (field, "lte", str(high)))
    assert matches(between, fact, T0) == matches(both, fact, T0)


def test_refund_amount_is_this_refunds_amount() -> None:
    big = rule("refunded", ("refund_amount", "gt", "50"))
    charge = Fact(filter="refunded", amount=10_000, refund_amount=2_500, currency="usd")
    assert not matches(big, charge, T0)
    assert matches(big, replace(charge, refund_amount=5_001), T0)


# -- missing values and the other condition kinds --------------------------------------


@pytest.mark.parametrize(
    ("condition", "fact"),
    [
        (("amount", "ne", "50"), Fact(amount=None, currency="usd")),
        (("amount", "gte", "0"), Fact(amount=0, currency=None)),
        (("currency", "is_not", "usd"), Fact(currency=None)),
        (("currency", "not_in", ["usd"]), Fact(currency=None)),
        (("refund_amount", "lt", "5"), Fact(filter="refunded", refund_amount=None, currency="usd")),
        (("plan", "not_in", ["p1"]), Fact(filter="subscription_created", plans=())),
        (("plan", "is_not", "p1"), Fact(filter="subscription_created", plans=())),
        (("end_date", "before", "2030-01-01"), Fact(filter="subscription_cancelled")),
        (
            ("start_date", "within_last", {"count": 1, "unit": "days"}),
            Fact(filter="subscription_changed"),
        ),
    ],
)
def test_a_missing_value_satisfies_no_condition(
    condition: tuple[str, str, Any], fact: Fact
) -> None:
    assert not matches(rule(fact.filter, condition), fact, T0)


def test_currency_codes_in_rules_are_case_insensitive() -> None:
    euro = rule("charge_failed", ("currency", "in", ["EUR", "Chf"]))
    assert matches(euro, Fact(currency="eur"), T0)
    assert matches(euro, Fact(currency="chf"), T0)
    assert not matches(euro, Fact(currency="usd"), T0)
    assert matches(rule("charge_failed", ("currency", "not_in", ["EUR"])), Fact(currency="usd"), 0)


def test_plan_matches_if_any_of_the_facts_ids_matches() -> None:
    fact = Fact(filter="subscription_changed", plans=("price_a", "prod_x"))
    assert matches(rule("subscription_changed", ("plan", "is", "prod_x")), fact, T0)
    assert matches(rule("subscription_changed", ("plan", "in", ["nope", "price_a"])), fact, T0)
    assert not matches(rule("subscription_changed", ("plan", "is_not", "price_a")), fact, T0)
    assert matches(rule("subscription_changed", ("plan", "not_in", ["price_b"])), fact, T0)


def test_matches_needs_the_rules_account_and_filter() -> None:
    any_failure = rule("charge_failed")
    assert matches(any_failure, Fact(), T0)
    assert not matches(any_failure, Fact(filter="charge_succeeded"), T0)
    assert not matches(any_failure, Fact(account_id="other"), T0)


# -- calendar days and DST -------------------------------------------------------------


def test_on_a_spring_forward_day_in_berlin_is_23_hours() -> None:
    on = rule("charge_failed", ("date", "on", "2026-03-29"), timezone="Europe/Berlin")
    start, end = at("2026-03-29 00:00", "Europe/Berlin"), at("2026-03-30 00:00", "Europe/Berlin")
    assert end - start == 23 * HOUR
    assert start == at("2026-03-28 23:00")  # midnight CET is 23:00 UTC
    for instant, expected in [(start - 1, False), (start, True), (end - 1, True), (end, False)]:
        assert matches(on, Fact(occurred_at=instant), T0) is expected


def test_between_across_the_fall_back_in_new_york_includes_the_25_hour_day() -> None:
    between = rule(
        "charge_succeeded",
        ("date", "between", ["2026-10-31", "2026-11-01"]),
        timezone="America/New_York",
    )
    start = at("2026-10-31 04:00")  # 00:00 EDT
    end = at("2026-11-02 05:00")  # 00:00 EST, 49 hours later
    assert end - start == 49 * HOUR
    fact = Fact(filter="charge_succeeded")
    assert not matches(between, replace(fact, occurred_at=start - 1), T0)
    assert matches(between, replace(fact, occurred_at=start), T0)
    assert matches(between, replace(fact, occurred_at=end - 1), T0)
    assert not matches(between, replace(fact, occurred_at=end), T0)


def test_before_and_after_are_exclusive_of_the_named_day() -> None:
    zone = "America/New_York"
    before = rule("refunded", ("date", "before", "2026-03-08"), timezone=zone)
    after = rule("refunded", ("date", "after", "2026-03-08"), timezone=zone)
    day_start, next_day = at("2026-03-08 00:00", zone), at("2026-03-09 00:00", zone)
    assert next_day - day_start == 23 * HOUR
    fact = Fact(filter="refunded")
    assert matches(before, replace(fact, occurred_at=day_start - 1), T0)
    assert not matches(before, replace(fact, occurred_at=day_start), T0)
    assert not matches(after, replace(fact, occurred_at=next_day - 1), T0)
    assert matches(after, replace(fact, occurred_at=next_day), T0)


def test_the_same_date_is_a_different_instant_range_per_zone() -> None:
    utc = rule("charge_failed", ("date", "on", "2026-07-01"))
    tokyo = rule("charge_failed", ("date", "on", "2026-07-01"), timezone="Asia/Tokyo")
    late_utc = Fact(occurred_at=at("2026-07-01 20:00"))  # already July 2 in Tokyo
    assert matches(utc, late_utc, T0)
    assert not matches(tokyo, late_utc, T0)


def test_subscription_end_dates_use_calendar_days_too() -> None:
    ends_in_july = rule(
        "subscription_cancelled", ("end_date", "between", ["2026-07-01", "2026-07-31"])
    )
    fact = Fact(filter="subscription_cancelled", end_date=at("2026-07-31 23:59:59"))
    assert matches(ends_in_july, fact, T0)
    assert not matches(ends_in_july, replace(fact, end_date=at("2026-08-01 00:00")), T0)


# -- relative windows ------------------------------------------------------------------

WEEK_WINDOW = ("date", "within_last", {"count": 7, "unit": "days"})


def test_within_last_holds_from_the_fact_until_exactly_the_window_later() -> None:
    weekly = rule("charge_failed", WEEK_WINDOW)
    fact = Fact(occurred_at=T0)
    assert not matches(weekly, fact, T0 - 1)  # not yet happened
    assert matches(weekly, fact, T0)
    assert matches(weekly, fact, T0 + 7 * DAY - 1)
    assert not matches(weekly, fact, T0 + 7 * DAY)
    assert next_change(weekly, [fact], T0) == T0 + 7 * DAY
    assert next_change(weekly, [fact], T0 - 100) == T0  # joins when the fact's time comes
    assert next_change(weekly, [fact], T0 + 7 * DAY) is None


def test_more_than_ago_joins_exactly_the_window_after_the_fact() -> None:
    lapsed = rule("charge_succeeded", ("date", "more_than_ago", {"count": 30, "unit": "days"}))
    fact = Fact(filter="charge_succeeded", occurred_at=T0)
    join = T0 + 30 * DAY
    assert not is_member(lapsed, [fact], join - 1)
    assert is_member(lapsed, [fact], join)
    assert next_change(lapsed, [fact], T0) == join
    assert next_change(lapsed, [fact], join - 1) == join
    assert next_change(lapsed, [fact], join) is None
    older = replace(fact, fact_id="f0", occurred_at=T0 - 5 * DAY)
    assert next_change(lapsed, [fact, older], T0) == join - 5 * DAY  # the oldest joins first


@settings(max_examples=200)
@given(
    offsets=st.lists(st.integers(0, 20 * DAY), min_size=1, max_size=8),
    window_days=st.integers(1, 14),
)
def test_within_last_next_change_is_the_window_after_the_newest_qualifying_fact(
    offsets: list[int], window_days: int
) -> None:
    now = T0
    window = window_days * DAY
    recent = rule("charge_failed", ("date", "within_last", {"count": window_days, "unit": "days"}))
    facts = [Fact(fact_id=f"f{i}", occurred_at=now - offset) for i, offset in enumerate(offsets)]
    qualifying = [fact.occurred_at for fact in facts if now - window < fact.occurred_at <= now]
    assert is_member(recent, facts, now) == bool(qualifying)
    expected = max(qualifying) + window if qualifying else None
    assert next_change(recent, facts, now) == expected
    assert evaluate(recent, facts, now) == (bool(qualifying), expected)


@settings(max_examples=300)
@given(
    offsets=st.lists(st.integers(-3 * DAY, 40 * DAY), min_size=1, max_size=6),
    amounts=st.lists(st.integers(0, 20_000), min_size=6, max_size=6),
    at_least=st.integers(1, 3),
    kind=st.sampled_from(["within_last", "more_than_ago"]),
    counted=st.booleans(),
)
def test_evaluate_is_is_member_and_next_change(offsets: list[int], amounts: list[int],
                                               at_least: int, kind: str,
                                               counted: bool) -> None:
    conditions: list[tuple[str, str, Any]] = [
        ("amount", "gt", "50"), ("date", kind, {"count": 10, "unit": "days"})]
    if counted:
        conditions.append(("occurrences", "gte", at_least))
    segment = rule("charge_failed", *conditions)
    facts = [Fact(fact_id=f"f{i}", occurred_at=T0 - offset, amount=amounts[i], currency="usd")
             for i, offset in enumerate(offsets)]
    for now in (T0, T0 + 5 * DAY, T0 + 30 * DAY):
        assert evaluate(segment, facts, now) == (is_member(segment, facts, now),
                                                 next_change(segment, facts, now))


def test_months_are_calendar_months_in_the_rules_zone() -> None:
    zone = "Europe/Berlin"
    monthly = rule(
        "refunded", ("date", "within_last", {"count": 1, "unit": "months"}), timezone=zone
    )
    end_of_january = Fact(filter="refunded", occurred_at=at("2026-01-31 12:00", zone))
    assert next_change(monthly, [end_of_january], end_of_january.occurred_at) == at(
        "2026-02-28 12:00", zone
    )  # clamped to the month's last day
    across_dst = Fact(filter="refunded", occurred_at=at("2026-03-15 12:00", zone))
    leaves = next_change(monthly, [across_dst], across_dst.occurred_at)
    assert leaves == at("2026-04-15 12:00", zone)
    assert leaves == across_dst.occurred_at + 31 * DAY - HOUR  # one hour lost to DST


def test_future_end_dates_enter_a_window_when_they_arrive() -> None:
    ended = rule(
        "subscription_cancelled", ("end_date", "within_last", {"count": 2, "unit": "weeks"})
    )
    scheduled = Fact(filter="subscription_cancelled", end_date=T0 + DAY)
    assert not is_member(ended, [scheduled], T0)
    assert next_change(ended, [scheduled], T0) == T0 + DAY
    assert next_change(ended, [scheduled], T0 + DAY) == T0 + DAY + 14 * DAY


def test_no_relative_condition_means_no_timer() -> None:
    assert next_change(rule("charge_failed", ("amount", "gt", 1)), [Fact()], T0) is None
    assert next_change(rule("charge_failed", WEEK_WINDOW), [], T0) is None


# -- occurrences -----------------------------------------------------------------------

TWICE_IN_30_DAYS = (
    ("occurrences", "gte", 2),
    ("date", "within_last", {"count": 30, "unit": "days"}),
)


def test_failed_twice_in_30_days_leaves_when_the_older_failure_expires() -> None:
    dunning = rule("charge_failed", *TWICE_IN_30_DAYS)
    first = Fact(fact_id="ch_1:failed", occurred_at=T0)
    second = Fact(fact_id="ch_2:failed", occurred_at=T0 + 10 * DAY)
    now = T0 + 11 * DAY
    assert not is_member(dunning, [first], now)
    assert is_member(dunning, [first, second], now)
    assert next_change(dunning, [first, second], now) == T0 + 30 * DAY
    assert not is_member(dunning, [first, second], T0 + 30 * DAY)
    # After that, one failure remains in the window: nothing more to change.
    assert next_change(dunning, [first, second], T0 + 30 * DAY) is None


def test_occurrences_count_distinct_facts_of_the_filter_that_pass_the_other_conditions() -> None:
    dunning = rule("charge_failed", *TWICE_IN_30_DAYS, ("currency", "is", "usd"))
    failure = Fact(fact_id="ch_1:failed", currency="usd", occurred_at=T0)
    duplicate = replace(failure)  # the same occurrence announced twice
    other_filter = replace(failure, fact_id="ch_2:succeeded", filter="charge_succeeded")
    other_account = replace(failure, fact_id="ch_3:failed", account_id="globex")
    euro = replace(failure, fact_id="ch_4:failed", currency="eur")
    assert not is_member(dunning, [failure, duplicate, other_filter, other_account, euro], T0)
    assert is_member(dunning, [failure, replace(failure, fact_id="ch_5:failed")], T0)


def test_at_most_two_failures_joins_when_the_oldest_of_three_expires() -> None:
    calm = rule(
        "charge_failed",
        ("occurrences", "lte", 2),
        ("date", "within_last", {"count": 30, "unit": "days"}),
    )
    facts = [Fact(fact_id=f"f{i}", occurred_at=T0 + i * DAY) for i in range(3)]
    now = T0 + 3 * DAY
    assert not is_member(calm, facts, now)
    assert next_change(calm, facts, now) == T0 + 30 * DAY
    assert is_member(calm, facts, T0 + 30 * DAY)
    assert next_change(calm, facts, T0 + 30 * DAY) == T0 + 2 * DAY + 30 * DAY  # the last leaves


def test_occurrences_between() -> None:
    some = rule("refunded", ("occurrences", "between", [2, 3]))
    facts = [Fact(fact_id=f"r{i}", filter="refunded") for i in range(4)]
    assert [is_member(some, facts[:n], T0) for n in range(5)] == [
        False,
        False,
        True,
        True,
        False,
    ]


# -- next_change is exact, whatever the rule ------------------------------------------

_WINDOWS = st.fixed_dictionaries(
    {"count": st.integers(1, 5), "unit": st.sampled_from(["hours", "days", "months"])}
)


@st.composite
def timed_rules(draw: st.DrawFn) -> Rule:
    conditions: list[tuple[str, str, Any]] = []
    for _ in range(draw(st.integers(1, 2))):
        field = draw(st.sampled_from(["date", "end_date"]))
        op = draw(st.sampled_from(["within_last", "more_than_ago"]))
        conditions.append((field, op, draw(_WINDOWS)))
    if draw(st.booleans()):
        op = draw(st.sampled_from(["gte", "lte", "eq", "ne", "between"]))
        count = [1, draw(st.integers(1, 4))] if op == "between" else draw(st.integers(0, 4))
        conditions.append(("occurrences", op, count))
    zone = draw(st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]))
    return rule("subscription_cancelled", *conditions, timezone=zone)


_OFFSETS = st.integers(-90 * DAY, 90 * DAY)


@settings(max_examples=300, deadline=None)
@given(
    compiled=timed_rules(),
    times=st.lists(st.tuples(_OFFSETS, st.none() | _OFFSETS), min_size=0, max_size=5),
    probes=st.lists(st.integers(1, 400 * DAY), max_size=6),
)
def test_next_change_is_the_first_instant_membership_flips(
    compiled: Rule, times: list[tuple[int, int | None]], probes: list[int]
) -> None:
    now = T0
    facts = [
        Fact(
            fact_id=f"s{i}",
            filter="subscription_cancelled",
            occurred_at=now + occurred,
            end_date=None if ended is None else now + ended,
        )
        for i, (occurred, ended) in enumerate(times)
    ]
    before = is_member(compiled, facts, now)
    change = next_change(compiled, facts, now)
    if change is not None:
        assert change > now
        assert is_member(compiled, facts, change) != before
        assert is_member(compiled, facts, change - 1) == before
        quiet = [now + 1, (now + change) // 2] + [now + p for p in probes]
        quiet = [instant for instant in quiet if instant < change]
    else:
        horizon = now + 500 * DAY
        quiet = [now + 1, horizon] + [now + p for p in probes]
        # every instant a fact's window can open or close, and either side of it
        for condition in compiled.relative_conditions:
            for fact in facts:
                for instant in condition.changes(fact):
                    quiet += [instant - 1, instant, instant + 1]
    for instant in quiet:
        if instant > now:
            assert is_member(compiled, facts, instant) == before, instant


@given(offset=st.integers(-40 * DAY, 40 * DAY))
def test_within_last_and_more_than_ago_are_complements_for_past_facts(offset: int) -> None:
    assume(offset <= 0)
    fact = Fact(occurred_at=T0 + offset)
    window = {"count": 10, "unit": "days"}
    inside = matches(rule("charge_failed", ("date", "within_last", window)), fact, T0)
    outside = matches(rule("charge_failed", ("date", "more_than_ago", window)), fact, T0)
    assert inside != outside


def test_epoch_helper_sanity() -> None:
    assert (
        at("2026-05-28 20:26:40")
        == T0
        == int(datetime(2026, 5, 28, 20, 26, 40, tzinfo=UTC).timestamp())
    )
