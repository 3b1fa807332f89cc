"""`failed_conditions`: which of a rule's conditions one fact fails (the "why" of
explain), in the rule's own order, and always the complement of `matches`."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules import failed_conditions, matches
from tests.unit.rules.test_evaluate import DAY, T0, Fact, rule

pytestmark = pytest.mark.unit

BIG_RECENT_USD = rule(
    "refunded",
    ("refund_amount", "gt", "50"),
    ("currency", "in", ["usd", "eur"]),
    ("occurrences", "gte", 2),
    ("date", "within_last", {"count": 7, "unit": "days"}),
)


def refund(**kw: object) -> Fact:
    base = Fact(filter="refunded", occurred_at=T0 - DAY, amount=10_000, currency="usd",
                refund_amount=6_000)
    return replace(base, **kw)  # type: ignore[arg-type]


def test_a_qualifying_fact_fails_nothing() -> None:
    assert failed_conditions(BIG_RECENT_USD, refund(), T0) == ()


def test_indexes_are_those_of_the_rule_as_written_never_occurrences() -> None:
    small_gbp_old = refund(refund_amount=100, currency="gbp", occurred_at=T0 - 30 * DAY)
    # refund_amount (0) fails: gbp has a currency but 1.00 is not > 50; currency (1)
    # fails; occurrences (2) is about the contact, never listed; the date (3) fails.
    assert failed_conditions(BIG_RECENT_USD, small_gbp_old, T0) == (0, 1, 3)


def test_time_alone_changes_the_answer() -> None:
    fact = refund()
    # 7 days from T0 - 1 day: the window's last second is T0 + 6 days - 1.
    assert failed_conditions(BIG_RECENT_USD, fact, T0 + 6 * DAY - 1) == ()
    assert failed_conditions(BIG_RECENT_USD, fact, T0 + 6 * DAY) == (3,)


def test_a_missing_value_fails_its_condition() -> None:
    assert failed_conditions(BIG_RECENT_USD, refund(refund_amount=None), T0) == (0,)


@settings(max_examples=300, deadline=None)
@given(refund_amount=st.one_of(st.none(), st.integers(0, 20_000)),
       currency=st.sampled_from([None, "usd", "eur", "gbp", "jpy"]),
       age_days=st.integers(-2, 20))
def test_complement_of_matches(refund_amount: int | None, currency: str | None,
                               age_days: int) -> None:
    fact = refund(refund_amount=refund_amount, currency=currency,
                  occurred_at=T0 - age_days * DAY)
    assert matches(BIG_RECENT_USD, fact, T0) == (failed_conditions(BIG_RECENT_USD, fact, T0)
                                                 == ())
