"""Erasing one person in the worker (`stream.erasure`), driven through the pipeline with
records by hand: the control record empties every state that names the email, within
the account, and announces the memberships it ends."""

from __future__ import annotations

import orjson
import pytest

from stream.changes import MembershipChange
from stream.erasure import forget_record
from stream.outbox import Outbox
from tests import stripe_events as se
from tests.unit.stream.test_pipeline_logic import Harness, sent, vip

pytestmark = pytest.mark.unit

ANN = "ann@example.com"


def _state(h: Harness) -> Outbox:
    out = Outbox()
    h.pipeline.state_writes(0, out)
    return out


def _mentions(h: Harness, email: str) -> list[str]:
    """Every state (in memory) of partition 0 whose key or value names `email`."""
    found = []
    for store in h.pipeline.states:
        for key, value in store.view(0).items():
            if email in key or email in repr(value):
                found.append(f"{store.topic}: {key!r}")
    return found


def test_forget_erases_the_contact_and_everything_naming_it() -> None:
    h = Harness()
    h.rule(vip(), "acme", "vip")
    ann = se.customer(email="Ann@Example.com")
    h.facts(h.event(se.event("customer.created", ann)))
    paid = se.charge(amount=10_000, customer=ann["id"], billing_email="ann@example.com",
                     created=h.clock.now)
    joined = h.facts(h.event(se.event("charge.succeeded", paid)))
    assert [MembershipChange.from_bytes(v).change for _, v in
            sent(joined, "segments.membership") if v] == ["joined"]
    # Another account's contact with the same email stays.
    h.rule(vip(account_id="globex"), "globex", "vip")
    other = se.charge(amount=10_000, billing_email=ANN, created=h.clock.now)
    h.facts(h.event(se.event("charge.succeeded", other), account="globex"))
    _state(h)
    assert _mentions(h, ANN)

    out = h.feed("segments.control", b"acme\x1fann@example.com",
                 forget_record("acme", ANN, ["conn1"]))
    left = [MembershipChange.from_bytes(v) for _, v in sent(out, "segments.membership")
            if v]
    assert [(c.account_id, c.segment_id, c.email, c.change, c.cause, c.fact_id)
            for c in left] == [("acme", "vip", ANN, "left", "erased", None)]
    assert sent(out, "segments.members") == [(b"acme\x1fvip\x1fann@example.com", None)]
    writes = _state(h)
    tombstones = {(t, k) for t, k, v, _, _ in writes.messages if v is None}
    assert ("t.segments.state.contacts", b"acme\x1fann@example.com") in tombstones
    assert any(t == "t.segments.state.customers" for t, _ in tombstones)
    # What still names the email is globex's contact only.
    remaining = _mentions(h, ANN)
    assert remaining == ["t.segments.state.contacts: 'globex\\x1fann@example.com'"], remaining
    # Forgetting again is a no-op; so is an unknown email.
    again = h.feed("segments.control", b"k", forget_record("acme", ANN, ["conn1"]))
    assert sent(again, "segments.membership") == []
    # A later fact starts afresh (erasure is not suppression).
    h.clock.advance(60)
    later = se.charge(amount=10_000, billing_email=ANN, created=h.clock.now)
    rejoined = h.facts(h.event(se.event("charge.succeeded", later)))
    assert [MembershipChange.from_bytes(v).cause for _, v in
            sent(rejoined, "segments.membership") if v] == ["fact"]


def test_a_malformed_forget_record_is_dead_lettered() -> None:
    h = Harness()
    out = h.feed("segments.control", b"k", orjson.dumps(
        {"k": "forget", "account_id": "acme", "email": 7, "connections": []}))
    assert len(sent(out, "stripe.events.dlq")) == 1
