"""charge_succeeded, charge_failed and refunded: one fact per real occurrence."""

from __future__ import annotations

import pytest

from common.stripe_event_types import NEEDED_EVENT_TYPES
from stream.classify import ClassifyError, Occurrence, classify
from tests.stripe_events import (
    charge,
    customer,
    event,
    invoice,
    payment_intent,
    refund,
    refund_events,
)

pytestmark = pytest.mark.unit


def ids(*events: dict[str, object]) -> list[str]:
    return [o.fact_id for e in events for o in classify(e)]


def only(doc: dict[str, object]) -> Occurrence:
    [occurrence] = classify(doc)
    return occurrence


# --- charge_succeeded -------------------------------------------------------------


@pytest.mark.parametrize("shape", ["2020-08-27", "2023-10-16"])
def test_one_payment_is_one_fact_however_many_events_announce_it(shape: str) -> None:
    ch = charge(amount=4999)
    siblings = [
        event("charge.succeeded", ch),
        event("payment_intent.succeeded", payment_intent(ch, shape=shape), api_version=shape),
        event("invoice.paid", invoice(ch)),
        event("invoice.payment_succeeded", invoice(ch)),
    ]
    occurrences = [only(e) for e in siblings]
    assert {o.fact_id for o in occurrences} == {f"{ch['id']}:succeeded"}
    assert {(o.filter, o.amount, o.currency) for o in occurrences} == {
        ("charge_succeeded", 4999, "usd")
    }
    assert [o.source_event_type for o in occurrences] == [e["type"] for e in siblings]


def test_charge_fact_reads_the_charge() -> None:
    ch = charge(amount=1250, currency="EUR", customer="cus_1")
    occurrence = only(event("charge.succeeded", ch))
    assert occurrence == Occurrence(
        fact_id=f"{ch['id']}:succeeded",
        filter="charge_succeeded",
        occurred_at=ch["created"],
        source_event_id=occurrence.source_event_id,
        source_event_type="charge.succeeded",
        customer_id="cus_1",
        amount=1250,
        currency="eur",
        charge_id=ch["id"],
    )


def test_uncaptured_authorization_is_ignored_until_captured() -> None:
    ch = charge(amount=10000, captured=False, amount_captured=0)
    assert classify(event("charge.succeeded", ch)) == []
    ch.update(captured=True, amount_captured=6000)  # partial capture
    captured = only(event("charge.captured", ch))
    assert (captured.fact_id, captured.amount) == (f"{ch['id']}:succeeded", 6000)
    pi = payment_intent(ch, shape="2023-10-16", amount_received=6000)
    assert only(event("payment_intent.succeeded", pi)).amount == 6000


def test_zero_decimal_currency_amount_is_kept_as_is() -> None:
    ch = charge(amount=5000, currency="JPY")
    occurrence = only(event("charge.succeeded", ch))
    assert (occurrence.amount, occurrence.currency) == (5000, "jpy")


def test_sibling_that_cannot_name_its_charge_yields_nothing() -> None:
    ch = charge()
    newest_invoice = invoice(None, amount_paid=2000, status="paid")
    assert classify(event("invoice.paid", newest_invoice, api_version="2025-03-31.basil")) == []
    pi = payment_intent(ch, shape="2023-10-16", latest_charge=None)
    assert classify(event("payment_intent.succeeded", pi)) == []


def test_expanded_charge_on_a_sibling_is_read_in_full() -> None:
    ch = charge(amount=700, billing_email="Ann@Example.com")
    pi = payment_intent(ch, shape="2023-10-16", latest_charge=ch)
    occurrence = only(event("payment_intent.succeeded", pi))
    assert (occurrence.occurred_at, occurrence.email_candidates) == (
        ch["created"],
        ("ann@example.com",),
    )
    inv = invoice(ch, charge=ch)
    assert only(event("invoice.paid", inv)).occurred_at == ch["created"]


# --- emails --------------------------------------------------------------------------


def test_guest_checkout_email_comes_from_billing_details() -> None:
    ch = charge(billing_email="  Guest@Example.COM ", customer=None)
    occurrence = only(event("charge.succeeded", ch))
    assert occurrence.customer_id is None
    assert occurrence.email_candidates == ("guest@example.com",)


def test_missing_email_gives_no_candidates() -> None:
    ch = charge(billing_email=None, receipt_email=None, customer="cus_9")
    occurrence = only(event("charge.succeeded", ch))
    assert (occurrence.customer_id, occurrence.email_candidates) == ("cus_9", ())
    assert (
        only(event("charge.succeeded", charge(billing_email="not an email"))).email_candidates == ()
    )


def test_email_candidates_follow_spec_priority() -> None:
    cus = customer("owner@example.com")
    ch = charge(billing_email="bill@example.com", receipt_email="receipt@example.com", customer=cus)
    inv = invoice(ch, customer_email="invoice@example.com", charge=ch, customer=cus)
    assert only(event("invoice.paid", inv)).email_candidates == (
        "bill@example.com",
        "receipt@example.com",
        "invoice@example.com",
        "owner@example.com",
    )
    plain = charge(billing_email="same@example.com", receipt_email="SAME@example.com")
    assert only(event("charge.succeeded", plain)).email_candidates == ("same@example.com",)


def test_expanded_and_id_only_customer_name_the_same_customer() -> None:
    cus = customer("cust@example.com")
    by_id = only(event("charge.succeeded", charge(customer=cus["id"])))
    expanded = only(event("charge.succeeded", charge(customer=cus)))
    assert by_id.customer_id == expanded.customer_id == cus["id"]
    assert (by_id.email_candidates, expanded.email_candidates) == ((), ("cust@example.com",))


# --- charge_failed -------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["2020-08-27", "2023-10-16"])
def test_one_failure_is_one_fact(shape: str) -> None:
    ch = charge(failed=True, customer="cus_1")
    pi = payment_intent(ch, shape=shape)
    assert set(
        ids(
            event("charge.failed", ch),
            event("payment_intent.payment_failed", pi, api_version=shape),
            event("invoice.payment_failed", invoice(ch)),
        )
    ) == {f"{ch['id']}:failed"}


def test_two_failures_are_two_facts() -> None:
    first, second = charge(failed=True), charge(failed=True)
    assert len(set(ids(event("charge.failed", first), event("charge.failed", second)))) == 2
    inv = invoice(first)
    retry = dict(inv, charge=second["id"], attempt_count=2)
    assert ids(event("invoice.payment_failed", inv), event("invoice.payment_failed", retry)) == [
        f"{first['id']}:failed",
        f"{second['id']}:failed",
    ]


def test_failure_without_a_charge_is_named_by_its_event() -> None:
    declined = charge(failed=True)
    pi = payment_intent(declined, shape="2023-10-16")
    pi["last_payment_error"] = {
        "code": "payment_intent_authentication_failure",
        "type": "invalid_request_error",
    }  # 3-D Secure failed on a second attempt: latest_charge is still the first one
    first, second = (event("payment_intent.payment_failed", pi) for _ in range(2))
    assert ids(first, second) == [
        f"{pi['id']}:failed:{first['id']}",
        f"{pi['id']}:failed:{second['id']}",
    ]
    assert only(first).amount == pi["amount"]
    assert ids(first) == ids(first)  # a redelivery names the same failure


def test_failed_intent_without_error_charge_falls_back_to_latest_charge() -> None:
    ch = charge(failed=True)
    pi = payment_intent(ch, shape="2023-10-16")
    pi["last_payment_error"] = {"code": "card_declined", "type": "card_error"}
    assert ids(event("payment_intent.payment_failed", pi)) == [f"{ch['id']}:failed"]


# --- refunded ------------------------------------------------------------------------


def test_partial_refunds_with_listed_refunds_count_each_once() -> None:
    ch = charge(amount=10000, billing_email="ann@example.com")
    (refunded1, created1), (refunded2, created2) = refund_events(ch, [3000, 2500])
    first, second = only(refunded1), only(refunded2)
    assert (first.refund_amount, second.refund_amount) == (3000, 2500)
    assert first.fact_id.startswith("re_")
    assert first.fact_id != second.fact_id
    assert (first.amount, second.amount) == (10000, 10000)  # Amount is the charge's
    assert first.email_candidates == ("ann@example.com",)
    assert ids(created1, created2) == [first.fact_id, second.fact_id]
    assert only(created2).refund_amount == 2500
    assert second.occurred_at == only(created2).occurred_at


def test_full_refund() -> None:
    ch = charge(amount=4200)
    [(refunded, created)] = refund_events(ch, [4200])
    occurrence = only(refunded)
    assert (occurrence.refund_amount, occurrence.amount, occurrence.filter) == (
        4200,
        4200,
        "refunded",
    )
    assert ids(created) == [occurrence.fact_id]


def test_listed_refund_is_found_by_step_without_previous_list() -> None:
    ch = charge(amount=10000)
    _, (refunded, created) = refund_events(ch, [1000, 2000])
    del refunded["data"]["previous_attributes"]["refunds"]
    assert ids(refunded) == ids(created)
    del refunded["data"]["previous_attributes"]
    assert ids(refunded) == ids(created)  # the newest refund


def test_refunds_in_the_unlisted_window_are_counted_by_charge_refunded() -> None:
    ch = charge(amount=10000)
    events = refund_events(ch, [3000, 3000], api_version="2023-10-16")
    occurrences = [only(refunded) for refunded, _ in events]
    assert [o.fact_id for o in occurrences] == [
        f"{ch['id']}:refund:3000",
        f"{ch['id']}:refund:6000",
    ]
    assert [o.refund_amount for o in occurrences] == [3000, 3000]
    assert [o.occurred_at for o in occurrences] == [e[0]["created"] for e in events]
    assert [classify(created) for _, created in events] == [[], []]


def test_refunds_since_2024_10_28_are_counted_by_refund_created() -> None:
    ch = charge(amount=10000)
    events = refund_events(ch, [1000, 9000], api_version="2024-10-28.acacia")
    assert [classify(refunded) for refunded, _ in events] == [[], []]
    occurrences = [only(created) for _, created in events]
    assert [o.refund_amount for o in occurrences] == [1000, 9000]
    assert all(o.fact_id.startswith("re_") and o.charge_id == ch["id"] for o in occurrences)
    assert occurrences[0].amount is None  # the charge is not in the payload: stream fills it


def test_refund_created_with_expanded_charge_reads_the_charge() -> None:
    ch = charge(amount=8000, currency="jpy", receipt_email="r@example.com", customer="cus_2")
    re = refund(ch, 500, charge=ch, customer=None)
    occurrence = only(event("refund.created", re, api_version="2025-03-31.basil"))
    assert (occurrence.amount, occurrence.currency, occurrence.refund_amount) == (8000, "jpy", 500)
    assert (occurrence.customer_id, occurrence.email_candidates) == ("cus_2", ("r@example.com",))


def test_failed_or_canceled_refund_is_no_refund() -> None:
    ch = charge()
    for status in ("failed", "canceled"):
        re = refund(ch, 100, status=status)
        assert classify(event("refund.created", re, api_version="2025-03-31.basil")) == []


def test_refund_of_nothing_new_yields_nothing() -> None:
    ch = charge(amount=1000, amount_refunded=0)
    del ch["refunds"]
    doc = event("charge.refunded", ch, previous={"amount_refunded": 0}, api_version="2023-10-16")
    assert classify(doc) == []


# --- amounts and payloads ------------------------------------------------------------


@pytest.mark.parametrize("bad", [20.0, "2000", True, None])
def test_money_is_an_integer_or_the_event_is_not_understood(bad: object) -> None:
    ch = charge()
    ch["amount"] = bad
    with pytest.raises(ClassifyError, match="amount"):
        classify(event("charge.succeeded", ch))


def test_object_of_the_wrong_kind_is_not_understood() -> None:
    with pytest.raises(ClassifyError, match="expected 'charge'"):
        classify(event("charge.succeeded", refund(charge(), 10)))


@pytest.mark.parametrize("event_type", sorted(NEEDED_EVENT_TYPES))
@pytest.mark.parametrize("obj", [None, [], "ch_1", 7])
def test_needed_type_without_an_object_is_not_understood(event_type: str, obj: object) -> None:
    with pytest.raises(ClassifyError, match=r"data\.object"):
        classify({"id": "evt_1", "type": event_type, "created": 1, "data": {"object": obj}})


@pytest.mark.parametrize("doc", [None, [], "x", {"data": {}}, {"type": 3}, {"type": ""}])
def test_malformed_event_is_not_understood(doc: object) -> None:
    with pytest.raises(ClassifyError):
        classify(doc)


def test_unused_types_yield_nothing_whatever_their_payload() -> None:
    assert classify({"type": "charge.dispute.created", "data": None}) == []
    assert classify({"type": "customer.deleted"}) == []


def test_needed_types_fit_stripes_types_filter() -> None:
    assert len(NEEDED_EVENT_TYPES) <= 20
    assert {
        "charge.succeeded",
        "charge.failed",
        "charge.refunded",
        "refund.created",
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.created",
        "customer.updated",
    } <= NEEDED_EVENT_TYPES


def test_to_fact_attaches_the_contact() -> None:
    occurrence = only(event("charge.succeeded", charge(amount=300, customer="cus_3")))
    fact = occurrence.to_fact("acme", "conn_1", " Ann@Example.com ")
    assert (fact.account_id, fact.connection_id, fact.email) == (
        "acme",
        "conn_1",
        "ann@example.com",
    )
    assert (fact.fact_id, fact.amount, fact.customer_id) == (occurrence.fact_id, 300, "cus_3")
    with pytest.raises(ValueError, match="not an email"):
        occurrence.to_fact("acme", "conn_1", "nobody")
