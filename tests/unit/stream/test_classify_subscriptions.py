"""subscription_created, subscription_changed and subscription_cancelled."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stream.classify import ClassifyError, Occurrence, classify, customer_email_update
from tests.stripe_events import customer, event, item, subscription, tick

pytestmark = pytest.mark.unit

NEWEST = "2025-03-31.basil"


def only(doc: dict[str, Any]) -> Occurrence:
    [occurrence] = classify(doc)
    return occurrence


def updated(sub: dict[str, Any], previous: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return event("customer.subscription.updated", sub, previous=previous, **kw)


# --- created -------------------------------------------------------------------------


def test_created_sums_price_times_quantity_over_items() -> None:
    a = item("price_a", unit_amount=1500, quantity=2, product="prod_a", legacy_plan=False)
    b = item(
        "price_b",
        unit_amount=700,
        quantity=None,
        product={"id": "prod_b", "name": "B"},
        legacy_plan=False,
    )
    sub = subscription([a, b], shape=NEWEST)
    doc = event("customer.subscription.created", sub, api_version=NEWEST)
    occurrence = only(doc)
    assert occurrence == Occurrence(
        fact_id=f"{sub['id']}:created",
        filter="subscription_created",
        occurred_at=doc["created"],
        source_event_id=doc["id"],
        source_event_type="customer.subscription.created",
        customer_id=sub["customer"],
        amount=1500 * 2 + 700,  # a missing quantity is one
        currency="usd",
        plans=("price_a", "prod_a", "price_b", "prod_b"),
        start_date=sub["start_date"],
    )


def test_legacy_top_level_plan_and_quantity() -> None:
    sub = subscription()
    del sub["items"]
    sub.update(quantity=3, start=sub.pop("start_date"))
    sub["plan"].update(id="gold", amount=999, product=None, currency="EUR")
    occurrence = only(event("customer.subscription.created", sub, api_version=None))
    assert (occurrence.amount, occurrence.currency, occurrence.plans) == (2997, "eur", ("gold",))
    assert occurrence.start_date == sub["start"]


def test_price_without_unit_amount_has_no_recurring_amount() -> None:
    tiered = item(unit_amount=None)
    occurrence = only(event("customer.subscription.created", subscription([tiered])))
    assert (occurrence.amount, occurrence.currency) == (None, "usd")


def test_zero_decimal_subscription_amount() -> None:
    sub = subscription([item(unit_amount=980, quantity=5, currency="jpy")])
    occurrence = only(event("customer.subscription.created", sub))
    assert (occurrence.amount, occurrence.currency) == (4900, "jpy")


def test_expanded_customer_email_is_a_candidate() -> None:
    cus = customer("Sub@Example.com")
    occurrence = only(event("customer.subscription.created", subscription(customer=cus)))
    assert (occurrence.customer_id, occurrence.email_candidates) == (
        cus["id"],
        ("sub@example.com",),
    )


def test_float_unit_amount_is_not_understood() -> None:
    sub = subscription()
    sub["items"]["data"][0]["price"]["unit_amount"] = 15.0
    with pytest.raises(ClassifyError, match="unit_amount"):
        classify(event("customer.subscription.created", sub))


# --- changed -------------------------------------------------------------------------


def test_plan_change_is_a_change() -> None:
    sub = subscription([item("price_new", unit_amount=3000)])
    old_items = copy.deepcopy(sub["items"])
    old_items["data"][0]["price"]["id"] = "price_old"
    old_items["data"][0]["plan"]["id"] = "price_old"
    doc = updated(sub, {"items": old_items, "plan": {**sub["plan"], "id": "price_old"}})
    occurrence = only(doc)
    assert occurrence.fact_id == f"{sub['id']}:changed:{doc['id']}"
    assert (occurrence.filter, occurrence.amount) == ("subscription_changed", 3000)
    assert "price_new" in occurrence.plans
    assert "price_old" not in occurrence.plans


def test_quantity_change_is_a_change() -> None:
    sub = subscription([item(quantity=4)])
    old_items = copy.deepcopy(sub["items"])
    old_items["data"][0]["quantity"] = 1
    assert only(updated(sub, {"items": old_items, "quantity": 1})).amount == 4 * 1500


def test_newest_shape_item_added_is_a_change() -> None:
    a, b = item("price_a", legacy_plan=False), item("price_b", legacy_plan=False)
    sub = subscription([a, b], shape=NEWEST)
    previous = {"items": {"data": [copy.deepcopy(a)]}}
    assert only(updated(sub, previous, api_version=NEWEST)).filter == "subscription_changed"


def test_each_change_is_its_own_occurrence() -> None:
    sub = subscription([item(quantity=2)])
    first, second = (updated(sub, {"quantity": 1}) for _ in range(2))
    assert only(first).fact_id != only(second).fact_id


def test_legacy_plan_change() -> None:
    sub = subscription()
    del sub["items"]
    doc = updated(
        sub, {"plan": {"id": "OLD_PLAN_ID", "amount": 2395, "interval": "month"}}, api_version=None
    )
    assert only(doc).filter == "subscription_changed"


def test_renewal_is_not_a_change() -> None:
    sub = subscription()
    start, end = sub["current_period_start"], sub["current_period_end"]
    previous = {
        "current_period_start": start - 2592000,
        "current_period_end": start,
        "latest_invoice": "in_old",
    }
    assert classify(updated(sub, previous)) == []
    assert end > start


def test_newest_shape_renewal_on_items_is_not_a_change() -> None:
    sub = subscription([item(legacy_plan=False, period_end=tick() + 86400)], shape=NEWEST)
    [current] = sub["items"]["data"]
    full = copy.deepcopy(current)
    full.update(current_period_end=current["current_period_start"], current_period_start=1)
    partial = {"id": current["id"], "current_period_end": current["current_period_start"]}
    for previous_item in (full, partial):
        doc = updated(
            sub, {"items": {"data": [previous_item]}, "latest_invoice": "in_1"}, api_version=NEWEST
        )
        assert classify(doc) == []


def test_item_diff_naming_only_a_price_detail_is_not_a_change() -> None:
    sub = subscription()
    [current] = sub["items"]["data"]
    previous = {"items": {"data": [{"id": current["id"], "price": {"active": False}}]}}
    assert classify(updated(sub, previous)) == []


@pytest.mark.parametrize(
    "previous",
    [
        {"status": "trialing"},
        {"status": "past_due"},
        {"metadata": {"foo": None}},
        {"default_payment_method": None},
        {},
    ],
)
def test_status_or_metadata_alone_is_not_a_change(previous: dict[str, Any]) -> None:
    assert classify(updated(subscription(), previous)) == []


# --- cancelled -----------------------------------------------------------------------


def test_scheduled_end_then_deletion_is_one_cancellation() -> None:
    sub = subscription(customer=customer("Leaver@Example.com"))
    canceled_at = tick()
    sub.update(cancel_at_period_end=True, canceled_at=canceled_at)
    scheduled = only(updated(sub, {"cancel_at_period_end": False, "canceled_at": None}))
    assert scheduled.fact_id == f"{sub['id']}:cancelled"
    assert (scheduled.filter, scheduled.end_date) == (
        "subscription_cancelled",
        sub["current_period_end"],
    )
    assert scheduled.occurred_at == canceled_at
    assert scheduled.email_candidates == ("leaver@example.com",)

    ended = copy.deepcopy(sub)
    ended.update(status="canceled", ended_at=sub["current_period_end"])
    deleted = only(event("customer.subscription.deleted", ended))
    assert (deleted.fact_id, deleted.occurred_at, deleted.end_date) == (
        scheduled.fact_id,
        scheduled.occurred_at,
        scheduled.end_date,
    )


def test_cancel_at_set_schedules_the_end() -> None:
    sub = subscription(shape=NEWEST)
    cancel_at = tick() + 10 * 86400
    sub["cancel_at"] = cancel_at
    occurrence = only(updated(sub, {"cancel_at": None}, api_version=NEWEST))
    assert (occurrence.filter, occurrence.end_date) == ("subscription_cancelled", cancel_at)


def test_newest_shape_period_end_comes_from_items() -> None:
    period_end = tick() + 5 * 86400
    sub = subscription([item(legacy_plan=False, period_end=period_end)], shape=NEWEST)
    sub["cancel_at_period_end"] = True
    created = only(event("customer.subscription.created", sub, api_version=NEWEST))
    assert created.end_date == period_end
    scheduled = only(updated(sub, {"cancel_at_period_end": False}, api_version=NEWEST))
    assert scheduled.end_date == period_end


def test_unscheduling_the_end_retracts_the_cancellation() -> None:
    for sub, previous in ((subscription(cancel_at_period_end=False, cancel_at=None),
                           {"cancel_at_period_end": True, "cancel_at": 5}),
                          (subscription(cancel_at=None), {"cancel_at": 1})):
        doc = updated(sub, previous)
        (occ,) = classify(doc)
        assert (occ.fact_id, occ.filter, occ.retracts, occ.occurred_at) == (
            f"{sub['id']}:cancelled", "subscription_cancelled", True, doc["created"])


def test_an_update_that_keeps_an_end_scheduled_retracts_nothing() -> None:
    moved = subscription(cancel_at_period_end=False, cancel_at=9_999)
    assert classify(updated(moved, {"cancel_at": 5_000})) == []
    renewal = subscription(cancel_at_period_end=True, cancel_at=9_999)
    assert classify(updated(renewal, {"current_period_end": 1})) == []


def test_plan_change_and_scheduled_end_in_one_update_are_two_facts() -> None:
    sub = subscription([item(quantity=2)], cancel_at_period_end=True)
    doc = updated(sub, {"quantity": 1, "cancel_at_period_end": False})
    assert sorted(o.filter for o in classify(doc)) == [
        "subscription_cancelled",
        "subscription_changed",
    ]


def test_subscription_without_id_or_customer_is_not_understood() -> None:
    sub = subscription()
    del sub["id"]
    sub["customer"] = None
    with pytest.raises(ClassifyError, match="subscription"):
        classify(event("customer.subscription.created", sub))


# --- customers -----------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ["customer.created", "customer.updated", "customer.deleted"])
def test_customer_events_feed_the_email_table(event_type: str) -> None:
    cus = customer("  Bob@Example.COM")
    assert customer_email_update(event(event_type, cus)) == (cus["id"], "bob@example.com")
    assert customer_email_update(event(event_type, customer(None))) is not None


def test_customer_without_email_or_id() -> None:
    cus = customer(None)
    assert customer_email_update(event("customer.updated", cus)) == (cus["id"], None)
    del cus["id"]
    with pytest.raises(ClassifyError, match=r"customer\.id"):
        customer_email_update(event("customer.updated", cus))
    assert customer_email_update(event("charge.succeeded", cus)) is None
