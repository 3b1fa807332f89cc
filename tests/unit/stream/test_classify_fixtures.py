"""Every fixture Stripe published, classified, with the exact occurrences expected.

A new file in `shared/stripe-fixtures/` fails `test_every_fixture_has_an_expectation`
until its expectation is written here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from stream.classify import ClassifyError, Occurrence, classify, customer_email_update
from tests.stripe_events import CLI, LEGACY, event, fixture_files, load

pytestmark = pytest.mark.unit

CH = "ch_000000000000000000000000"
EVT = "evt_000000000000000000000000"
SUB = "sub_000000000000000000000000"
PRICE = "price_000000000000000000000000"
PROD = "prod_00000000000000"
CUS = "cus_00000000000000"
OLD_CH, OLD_EVT = "ch_00000000000000", "evt_00000000000000"

_CLI_FAILED = Occurrence(
    fact_id=f"{CH}:failed",
    filter="charge_failed",
    occurred_at=1648320028,  # the charge's own `created`
    source_event_id=EVT,
    source_event_type="charge.failed",
    amount=2000,
    currency="usd",
    charge_id=CH,
)
_CLI_SUCCEEDED = Occurrence(
    fact_id=f"{CH}:succeeded",
    filter="charge_succeeded",
    occurred_at=1648320032,
    source_event_id=EVT,
    source_event_type="charge.succeeded",
    amount=2000,
    currency="usd",
    charge_id=CH,
)
_CLI_SUB = Occurrence(
    fact_id=f"{SUB}:created",
    filter="subscription_created",
    occurred_at=1648320110,
    source_event_id=EVT,
    source_event_type="customer.subscription.created",
    customer_id=CUS,
    amount=1500,
    currency="usd",
    plans=(PRICE, PROD),  # the plan mirror has the price's id
    start_date=1648320110,
)
_LEGACY_SUB = Occurrence(
    fact_id=f"{CUS}:subscription:created",  # pre-2014 subscriptions have no id
    filter="subscription_created",
    occurred_at=1326853478,
    source_event_id=OLD_EVT,
    source_event_type="customer.subscription.created",
    customer_id=CUS,
    amount=27600,
    currency="usd",
    plans=("FR010_00000000000000",),
    start_date=1329420141,
)
_NO_TYPE = "event has no type"  # bare API objects and `stripe trigger` recipes

EXPECTED: dict[str, list[Occurrence] | str] = {
    f"{CLI}/charge.failed.json": [_CLI_FAILED],
    f"{CLI}/charge.refunded.json": [
        Occurrence(
            fact_id="re_000000000000000000000000",
            filter="refunded",
            occurred_at=1648319949,
            source_event_id=EVT,
            source_event_type="charge.refunded",
            amount=100,
            currency="usd",
            refund_amount=100,
            charge_id=CH,
        )
    ],
    f"{CLI}/charge.succeeded.json": [_CLI_SUCCEEDED],
    f"{CLI}/customer.subscription.created.json": [_CLI_SUB],
    f"{CLI}/customer.subscription.deleted.json": [
        replace(
            _CLI_SUB,
            fact_id=f"{SUB}:cancelled",
            filter="subscription_cancelled",
            occurred_at=1648320097,  # canceled_at
            source_event_type="customer.subscription.deleted",
            start_date=1648320096,
            end_date=1648320097,  # ended_at
        )
    ],
    # previous_attributes names only `schedule`: not a change of plan.
    f"{CLI}/customer.subscription.updated.json": [],
    f"{CLI}/invoice.payment_failed.json": [
        replace(
            _CLI_FAILED,
            occurred_at=1648320009,  # the invoice does not carry the charge's time
            source_event_type="invoice.payment_failed",
            customer_id=CUS,
        )
    ],
    # Siblings of charge.failed / charge.succeeded: the same occurrence.
    f"{CLI}/payment_intent.payment_failed.json": [
        replace(_CLI_FAILED, source_event_type="payment_intent.payment_failed")
    ],
    f"{CLI}/payment_intent.succeeded.json": [
        replace(_CLI_SUCCEEDED, source_event_type="payment_intent.succeeded")
    ],
    f"{LEGACY}/charge.failed.json": [
        Occurrence(
            fact_id=f"{OLD_CH}:failed",
            filter="charge_failed",
            occurred_at=1333543274,
            source_event_id=OLD_EVT,
            source_event_type="charge.failed",
            customer_id=CUS,
            amount=1000,
            currency="usd",
            charge_id=OLD_CH,
        )
    ],
    # No refund list and no amount_refunded: `refunded: true` means in full.
    f"{LEGACY}/charge.refunded.json": [
        Occurrence(
            fact_id=f"{OLD_CH}:refund:1000",
            filter="refunded",
            occurred_at=1326853478,
            source_event_id=OLD_EVT,
            source_event_type="charge.refunded",
            customer_id=CUS,
            amount=1000,
            currency="usd",
            refund_amount=1000,
            charge_id=OLD_CH,
        )
    ],
    # No `captured` field (charges were always captured then): counted.
    f"{LEGACY}/charge.succeeded.json": [
        Occurrence(
            fact_id=f"{OLD_CH}:succeeded",
            filter="charge_succeeded",
            occurred_at=1333543274,
            source_event_id=OLD_EVT,
            source_event_type="charge.succeeded",
            customer_id=CUS,
            amount=1000,
            currency="usd",
            charge_id=OLD_CH,
        )
    ],
    f"{LEGACY}/customer.subscription.created.json": [_LEGACY_SUB],
    f"{LEGACY}/customer.subscription.deleted.json": [
        replace(
            _LEGACY_SUB,
            fact_id=f"{CUS}:subscription:cancelled",
            filter="subscription_cancelled",
            source_event_type="customer.subscription.deleted",
            end_date=1334059203,
        )
    ],
    f"{LEGACY}/customer.subscription.updated.json": [
        replace(
            _LEGACY_SUB,
            fact_id=f"{CUS}:subscription:changed:{OLD_EVT}",
            filter="subscription_changed",
            source_event_type="customer.subscription.updated",
        )
    ],
    # The 2012 invoice names no charge: the charge's own events count it.
    f"{LEGACY}/invoice.payment_failed.json": [],
    "object.charge.json": _NO_TYPE,
    "object.customer.json": _NO_TYPE,
    "object.event.json": [],  # plan.created: not a type the engine uses
    "object.invoice.json": _NO_TYPE,
    "object.payment_intent.json": _NO_TYPE,
    "object.refund.json": _NO_TYPE,
    "object.subscription.json": _NO_TYPE,
    **{
        f"stripe-cli-triggers/{name}.json": _NO_TYPE
        for name in (
            "charge.failed",
            "charge.refunded",
            "charge.succeeded",
            "customer.subscription.created",
            "customer.subscription.deleted",
            "customer.subscription.updated",
            "invoice.payment_failed",
            "payment_intent.payment_failed",
            "payment_intent.succeeded",
        )
    },
}


def test_every_fixture_has_an_expectation() -> None:
    assert set(fixture_files()) == set(EXPECTED)


@pytest.mark.parametrize("relative", sorted(EXPECTED))
def test_fixture_classifies_exactly(relative: str) -> None:
    expected = EXPECTED[relative]
    doc = load(relative)
    if isinstance(expected, str):
        with pytest.raises(ClassifyError, match=expected):
            classify(doc)
    else:
        assert classify(doc) == expected


@pytest.mark.parametrize("relative", [r for r, e in EXPECTED.items() if not isinstance(e, str)])
def test_fixture_events_are_not_customer_updates(relative: str) -> None:
    assert customer_email_update(load(relative)) is None


def _wrapped(name: str, event_type: str, api_version: str | None = "2025-03-31.basil") -> Any:
    obj = load(f"object.{name}.json")
    return classify(event(event_type, obj, api_version=api_version, created=1234567999))


def test_bare_charge_is_an_uncaptured_authorization() -> None:
    assert _wrapped("charge", "charge.succeeded") == []
    assert _wrapped("charge", "charge.captured") == []
    [failed] = _wrapped("charge", "charge.failed")
    assert (failed.fact_id, failed.amount, failed.occurred_at) == (
        "ch_1PgafuB7WZ01zgkWXYmPNZs8:failed",
        100,
        1234567890,
    )


def test_bare_refund_counts_from_refund_created_in_current_versions() -> None:
    [occurrence] = _wrapped("refund", "refund.created")
    assert occurrence.fact_id == "re_1Pgc72B7WZ01zgkWqPvrRrPE"
    assert (occurrence.refund_amount, occurrence.amount, occurrence.currency) == (100, None, "usd")
    assert occurrence.charge_id == "ch_1PgafuB7WZ01zgkWXYmPNZs8"
    assert occurrence.occurred_at == 1234567890
    # 2022-11-15 to 2024-10-27: the list-less charge.refunded counts charge refunds.
    assert _wrapped("refund", "refund.created", "2023-10-16") == []
    # Before 2022-11-15 the charge's refund list names the same refund id.
    assert [o.fact_id for o in _wrapped("refund", "refund.created", "2020-08-27")] == [
        "re_1Pgc72B7WZ01zgkWqPvrRrPE"
    ]


def test_bare_payment_intent_failure_without_a_charge() -> None:
    doc = event("payment_intent.payment_failed", load("object.payment_intent.json"))
    [occurrence] = classify(doc)
    assert occurrence.fact_id == f"pi_1PgafyB7WZ01zgkWSjxsAJo3:failed:{doc['id']}"
    assert (occurrence.amount, occurrence.charge_id) == (1099, None)
    assert _wrapped("payment_intent", "payment_intent.succeeded") == []  # no charge named


def test_bare_invoice_names_no_charge() -> None:
    assert _wrapped("invoice", "invoice.paid") == []
    assert _wrapped("invoice", "invoice.payment_failed") == []


def test_bare_subscription_current_shape() -> None:
    [created] = _wrapped("subscription", "customer.subscription.created")
    assert created.fact_id == "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw:created"
    assert (created.amount, created.currency) == (2000, "usd")  # price wins over plan
    assert created.plans == ("price_1PgafmB7WZ01zgkW6dKueIc5", "obj_123", "prod_QXg1hqf4jFNsqG")
    assert (created.start_date, created.end_date) == (1234567890, 1234567890)
    assert created.occurred_at == 1234567999


def test_bare_customer_feeds_the_email_table() -> None:
    doc = event("customer.updated", load("object.customer.json"))
    assert customer_email_update(doc) == ("cus_QXg1o8vcGmoR32", None)
    assert classify(doc) == []
