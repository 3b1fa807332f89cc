"""Retractions, without a broker (issue 14): a refund that fails or is canceled, and a
scheduled cancellation undone, take their fact back; the contact leaves where the rule
no longer holds, with `cause: fact`, exactly once. The pipeline runs on 8 partitions
over 2 simulated workers (`tests.partitioned_pipeline`); events come from
`tests.stripe_story`, rendered as Stripe would at the version named.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.partitioned_pipeline import TwoWorkers
from tests.stripe_story import NEWEST, Story

pytestmark = pytest.mark.unit
ACACIA = "2024-10-28.acacia"
EMAIL = "ann@example.com"
REFUNDED = {"id": "refunded", "filter": "refunded", "conditions": []}
TWICE = {"id": "refunded-twice", "filter": "refunded",
         "conditions": [{"field": "occurrences", "op": "gte", "value": 2}]}
AT_MOST_ONE = {"id": "one-refund", "filter": "refunded",
               "conditions": [{"field": "occurrences", "op": "eq", "value": 1}]}
CANCELLED = {"id": "cancelled", "filter": "subscription_cancelled", "conditions": []}


def changes(h: TwoWorkers) -> list[tuple[str, str, str, str, str | None]]:
    return [(c.segment_id, c.email, c.change, c.cause, c.fact_id) for c in h.changes()]


def new(h: TwoWorkers, version: str, *rules: dict[str, Any]) -> Story:
    for rule in rules:
        h.rule(rule)
    return Story(h.clock.now - 86400, version)


def feed(h: TwoWorkers, events: list[dict[str, Any]]) -> None:
    for event in events:
        h.event(event)


@pytest.mark.parametrize("version", [ACACIA, "2026-07-29.dahlia", NEWEST])
def test_a_failed_refund_leaves_once_on_another_partition(version: str) -> None:
    with TwoWorkers() as h:
        story = new(h, version, REFUNDED)
        charge = story.pay(story.customer(EMAIL), 10_000)
        refund = story.refund(charge, 2_500)
        story.refund_fails(refund)
        types = [e["type"] for e in story.events[-3:]]
        assert types == ["refund.created", "refund.updated", "refund.failed"]
        feed(h, story.events)
        feed(h, copy.deepcopy(story.events[-3:]))  # Stripe retries all three
        assert changes(h) == [("refunded", EMAIL, "joined", "fact", refund.id),
                              ("refunded", EMAIL, "left", "fact", refund.id)]
        retractions = [f for f in h.facts("refunded") if f.retracted]
        assert [(f.fact_id, f.email) for f in retractions] == [(refund.id, EMAIL)]


def test_a_canceled_refund_leaves_only_the_segments_it_made() -> None:
    with TwoWorkers() as h:
        story = new(h, ACACIA, REFUNDED, TWICE, AT_MOST_ONE)
        charge = story.pay(story.customer(EMAIL), 10_000)
        first = story.refund(charge, 1_000)
        story.refund(charge, 2_000)
        story.refund_fails(first, "canceled")
        feed(h, story.events)
        assert [c[:3] for c in changes(h)] == [
            ("refunded", EMAIL, "joined"), ("one-refund", EMAIL, "joined"),
            ("refunded-twice", EMAIL, "joined"), ("one-refund", EMAIL, "left"),
            ("refunded-twice", EMAIL, "left"), ("one-refund", EMAIL, "joined")]
        assert h.members() == {("refunded", EMAIL), ("one-refund", EMAIL)}


def test_a_refund_failing_before_it_was_announced_never_counts() -> None:
    """Stripe does not guarantee order: the failure's tombstone meets the late creation
    (and its charge.refunded) on the charge's partition."""
    with TwoWorkers() as h:
        story = new(h, ACACIA, REFUNDED)
        charge = story.pay(story.customer(EMAIL), 10_000)
        feed(h, story.events)
        mark = len(story.events)
        story.refund_fails(story.refund(charge, 2_500))
        made = story.events[mark:]
        feed(h, made[2:] + made[:2])
        assert changes(h) == []
        assert h.facts("refunded") == []


def test_between_2022_11_15_and_acacia_the_failure_finds_the_charge_refunded_fact() -> None:
    """No refund list and no refund.created for card refunds then: the refund counted as
    "{charge}:refund:{total}"; its `charge.refund.updated` names only the refund id."""
    with TwoWorkers() as h:
        story = new(h, "2023-10-16", REFUNDED)
        charge = story.pay(story.customer(EMAIL), 10_000)
        refund = story.refund(charge, 2_500)
        story.refund_fails(refund)
        assert story.events[-1]["type"] == "charge.refund.updated"
        feed(h, story.events)
        feed(h, story.events[-1:])
        synthetic = f"{charge.id}:refund:2500"
        assert changes(h) == [("refunded", EMAIL, "joined", "fact", synthetic),
                              ("refunded", EMAIL, "left", "fact", synthetic)]


def test_an_unscheduled_cancellation_leaves_and_a_new_one_joins_again() -> None:
    with TwoWorkers() as h:
        story = new(h, "2025-09-30.clover", CANCELLED)
        cus = story.customer(EMAIL)
        sub = story.subscribe(cus, "price_basic", 1_500)
        story.schedule_cancel(sub)
        scheduled = copy.deepcopy(story.events[-1])
        story.unschedule(sub)
        feed(h, story.events)
        h.event(scheduled)  # a late retry of the scheduling: stale, nothing happens
        fact_id = f"{sub.id}:cancelled"
        assert changes(h) == [("cancelled", EMAIL, "joined", "fact", fact_id),
                              ("cancelled", EMAIL, "left", "fact", fact_id)]
        mark = len(story.events)
        story.schedule_cancel(sub, by_date=True)
        story.cancel(sub)
        feed(h, story.events[mark:])
        assert changes(h)[2:] == [("cancelled", EMAIL, "joined", "fact", fact_id)]
        assert h.members() == {("cancelled", EMAIL)}


@pytest.mark.parametrize("version", ["2020-08-27", "2025-03-31.basil"])
def test_an_unscheduling_that_overtakes_its_scheduling_makes_no_change(version: str) -> None:
    with TwoWorkers() as h:
        story = new(h, version, CANCELLED)
        sub = story.subscribe(story.customer(EMAIL), "price_basic", 1_500)
        story.schedule_cancel(sub)
        story.unschedule(sub)
        events = story.events
        feed(h, [*events[:-2], events[-1], events[-2]])
        assert changes(h) == []


def test_the_retraction_reaches_the_contact_even_after_the_email_changed() -> None:
    with TwoWorkers() as h:
        story = new(h, "2024-06-20", CANCELLED)
        cus = story.customer(EMAIL)
        sub = story.subscribe(cus, "price_basic", 1_500)
        story.schedule_cancel(sub)
        update = copy.deepcopy(story.events[0])
        update.update(type="customer.updated", id="evt_email_change")
        update["data"]["object"]["email"] = "ann.new@example.com"
        update["data"]["previous_attributes"] = {"email": EMAIL}
        story.events.append(update)
        story.unschedule(sub)
        feed(h, story.events)
        assert [c[:3] for c in changes(h)] == [("cancelled", EMAIL, "joined"),
                                               ("cancelled", EMAIL, "left")]
