"""Memory that stays bounded (issue 14), without a broker: contacts with nothing left
are deleted with a changelog tombstone, idle customer emails expire and are asked for
again when needed. (Events dated in the future: `test_bad_input.py`.)"""

from __future__ import annotations

from typing import Any

import pytest

from connectors.contract import RawEvent
from stream.classify import classify_event
from stream.contacts import CUSTOMER_TTL_SECONDS, ContactResolver, ContactTables, sweep
from stream.facts import Fact
from stream.membership import DAY
from stream.outbox import Outbox
from tests import stripe_events as se
from tests.unit.stream.test_pipeline_logic import Harness, changes, failed, lapsed, sent

pytestmark = pytest.mark.unit


def contact_writes(h: Harness) -> list[tuple[bytes | None, bytes | None]]:
    out = Outbox()
    h.pipeline.state_writes(0, out)
    return sent(out, "segments.state.contacts")


def test_a_contact_whose_facts_all_aged_out_is_deleted_with_a_tombstone() -> None:
    h = Harness()
    h.rule(lapsed(), "acme", "lapsed")  # another filter: it needs none of these facts
    paid = failed("ch_1:succeeded", h.clock.now, "charge_succeeded")
    h.fact(paid)
    key = paid.key()
    assert [k for k, v in contact_writes(h)] == [key]
    h.clock.advance(20 * DAY)
    h.tick()
    assert key.decode() in h.pipeline.contacts.view(0)  # within the horizon: kept
    h.clock.advance(14 * DAY)  # 34 days: past the 33-day horizon, and no new fact
    assert changes(h.tick()) == []
    assert key.decode() not in h.pipeline.contacts.view(0)
    assert contact_writes(h) == [(key, None)]  # the changelog's tombstone
    assert h.metric("segments_contacts_deleted_total") == 1
    assert h.pipeline.partitions[0].contacts_by_account == {}


def test_a_member_kept_by_its_rule_is_not_deleted() -> None:
    h = Harness()
    h.rule(lapsed(), "acme", "lapsed")
    fact = failed("ch_1:failed", h.clock.now)
    h.fact(fact)
    h.clock.advance(30 * DAY)
    assert changes(h.tick()) == [("lapsed", "ann@example.com", "joined", "time")]
    for _ in range(3):
        h.clock.advance(100 * DAY)
        assert changes(h.tick()) == []
    contact = h.pipeline.contacts.view(0)[fact.key().decode()]
    assert contact.members == {"lapsed": 1}
    assert h.metric("segments_contacts_deleted_total") == 0


def test_a_retraction_for_an_unknown_contact_leaves_no_contact_behind() -> None:
    h = Harness()
    h.fact(Fact("re_1", "refunded", "acme", "conn1", "zed@example.com", h.clock.now,
                retracted=True))
    assert h.pipeline.contacts.view(0) == {}
    assert contact_writes(h) == []


def test_an_idle_customer_email_expires_and_is_looked_up_again() -> None:
    asked: list[str] = []

    async def lookup(connection_id: str, customer_id: str) -> str | None:
        asked.append(customer_id)
        return "ann@example.com"

    h = Harness(email_lookup=lookup)
    cus = se.customer("ann@example.com")
    h.event(se.event("customer.created", cus, created=h.clock.now))

    def pay() -> list[str]:
        ch = se.charge(amount=5_000, customer=cus["id"], created=h.clock.now)
        out = h.event(se.event("charge.succeeded", ch, created=h.clock.now))
        return [Fact.from_bytes(v).email for _, v in sent(out, "stripe.facts") if v]

    assert pay() == ["ann@example.com"]
    assert asked == []
    h.clock.advance(CUSTOMER_TTL_SECONDS + 1)
    h.tick()  # the sweep forgets the idle customer
    assert h.pipeline.customers.view(0) == {}
    assert pay() == ["ann@example.com"]  # asked of Stripe again
    assert asked == [cus["id"]]


def raw(event: dict[str, Any]) -> RawEvent:
    return RawEvent("conn", "acme", "webhook", 0, event)


def test_a_customer_in_use_stays_and_old_entries_get_an_expiry() -> None:
    now = 1_800_000_000
    t = ContactTables(customers={}, seen={}, parked={})
    resolver = ContactResolver(t)
    cus = se.customer("ann@example.com")
    created = raw(se.event("customer.created", cus, created=now))
    resolver.handle(created, classify_event(created.event), now)
    later = now + CUSTOMER_TTL_SECONDS * 3 // 4  # a monthly renewal uses the entry
    ch = se.charge(amount=5_000, customer=cus["id"], created=later)
    paid = raw(se.event("charge.succeeded", ch, created=later))
    assert resolver.handle(paid, classify_event(paid.event), later).facts
    sweep(t, now + CUSTOMER_TTL_SECONDS + 1)
    assert t.customers[f"conn:{cus['id']}"][0] == "ann@example.com"
    # An entry written by an earlier version (a bare string) gets an expiry.
    t.customers["conn:cus_old"] = "old@example.com"
    sweep(t, now)
    assert t.customers["conn:cus_old"] == ["old@example.com", now + CUSTOMER_TTL_SECONDS]
    sweep(t, now + CUSTOMER_TTL_SECONDS)
    assert "conn:cus_old" not in t.customers


def test_a_contact_read_but_not_changed_is_held_encoded_again() -> None:
    """Memory (#20): once written to its changelog, a contact's facts are held as those
    bytes (`ContactState.to_bytes_kept`); the sweep and a rule change that change
    nothing decode them to read them and leave them encoded again."""
    h = Harness()
    paid = failed("ch_1:succeeded", h.clock.now, "charge_succeeded")
    h.fact(paid)
    assert [k for k, v in contact_writes(h)] == [paid.key()]
    contacts = h.pipeline.contacts.view(0)
    written = contacts[paid.key().decode()].raw
    assert written is not None
    assert changes(h.tick()) == []  # the sweep's first round reads every contact
    assert contact_writes(h) == []
    assert contacts[paid.key().decode()].raw == written
    assert changes(h.rule(lapsed(), "acme", "lapsed")) == []  # reads its charge facts
    assert contact_writes(h) == []
    contact = contacts[paid.key().decode()]
    assert contact.raw == written
    assert contact.facts_for("charge_succeeded") == (paid,)
