"""Contact choice, deduplication and parking, on plain dicts (no broker)."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.contract import RawEvent
from stream.classify import classify_event
from stream.contacts import DEDUP_SECONDS, ContactResolver, ContactTables, Outcome, sweep
from tests import stripe_events as se


def handle(resolver: ContactResolver, raw_event: RawEvent, now: int) -> Outcome:
    """As the pipeline calls it: the event and its one classification."""
    return resolver.handle(raw_event, classify_event(raw_event.event), now)


pytestmark = pytest.mark.unit
NOW = 1_800_000_000


def tables() -> ContactTables:
    return ContactTables(customers={}, seen={}, parked={})


def raw(event: dict[str, Any], account: str = "acme") -> RawEvent:
    return RawEvent("conn", account, "webhook", 0, event)


def test_duplicates_and_siblings_collapse() -> None:
    t = tables()
    resolver = ContactResolver(t)
    ch = se.charge(amount=5000, billing_email="Ann@Example.com ", created=NOW)
    first = handle(resolver, raw(se.event("charge.succeeded", ch)), NOW)
    again = handle(resolver, raw(se.event("charge.succeeded", ch)), NOW)
    sibling = handle(resolver, raw(se.event("payment_intent.succeeded", se.payment_intent(ch))),
                              NOW)
    assert [f.email for f in first.facts] == ["ann@example.com"]
    assert again.facts == []
    assert again.duplicates == 1
    assert sibling.facts == []


def test_same_charge_in_two_accounts_is_two_facts() -> None:
    t = tables()
    resolver = ContactResolver(t)
    ch = se.charge(billing_email="ann@example.com", created=NOW)
    a = handle(resolver, raw(se.event("charge.succeeded", ch), "acme"), NOW)
    b = handle(resolver, raw(se.event("charge.succeeded", ch), "globex"), NOW)
    assert [f.account_id for f in a.facts + b.facts] == ["acme", "globex"]


def test_parked_until_the_customer_email_is_known() -> None:
    t = tables()
    resolver = ContactResolver(t)
    ch = se.charge(billing_email=None, customer="cus_1", created=NOW)
    parked = handle(resolver, raw(se.event("charge.succeeded", ch)), NOW)
    assert parked.facts == []
    assert parked.parked == 1
    released = handle(resolver, raw(se.event("customer.updated",
                                            se.customer("bob@example.com", id="cus_1"))), NOW)
    assert released.released == 1
    assert [f.email for f in released.facts] == ["bob@example.com"]


def test_guest_without_any_email_is_counted_not_silently_dropped() -> None:
    out = handle(ContactResolver(tables()),
        raw(se.event("charge.succeeded", se.charge(billing_email=None, created=NOW))), NOW)
    assert out.facts == []
    assert out.dropped_no_email == 1


def test_sweep_bounds_memory_by_time() -> None:
    t = tables()
    resolver = ContactResolver(t)
    handle(resolver, raw(se.event("charge.succeeded",
                                 se.charge(billing_email="a@example.com", created=NOW))), NOW)
    handle(resolver, raw(se.event("charge.succeeded",
                                 se.charge(billing_email=None, customer="cus_9", created=NOW))),
                    NOW)
    assert t.seen
    assert t.parked
    assert sweep(t, NOW + 10) == (0, 0)
    removed, dropped = sweep(t, NOW + DEDUP_SECONDS + 1)
    assert removed >= 1
    assert dropped == 1
    assert t.seen == {}
    assert t.parked == {}
