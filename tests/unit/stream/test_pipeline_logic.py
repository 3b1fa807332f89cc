"""The pipeline without a broker: records in, the exact messages it would send out.

`stream.pipeline.Pipeline` is what the runtime drives; here it is driven by hand with
record objects, so classification, rule fan-out, membership, timers and the
coalescing of state writes are checked in milliseconds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from common.settings import Settings
from connectors.contract import RawEvent
from rules import parse_rule
from stream.changes import MembershipChange, rule_key
from stream.facts import Fact
from stream.membership import DAY, HISTORY_FLOOR, ContactState
from stream.options import StreamOptions
from stream.partition_state import PartitionState
from stream.pipeline import Pipeline
from stream.runtime import Outbox
from tests import stripe_events as se
from tests.clock import ManualClock

pytestmark = pytest.mark.unit
PARTITIONS = 1


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class Harness:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.settings = Settings(topic_prefix="t.", partitions=PARTITIONS)
        self.pipeline = Pipeline(self.settings, StreamOptions(clock=self.clock))
        self.pipeline.adopt([0])
        self.offset = 0

    def feed(self, topic: str, key: bytes | None, value: bytes | None) -> Outbox:
        out = Outbox()
        self.offset += 1
        record = Record(self.settings.topic(topic), 0, self.offset, key, value)
        asyncio.run(self.pipeline.process(0, record.topic, [record], out))
        return out

    def event(self, event: dict[str, Any], account: str = "acme") -> Outbox:
        raw = RawEvent("conn1", account, "webhook", 0, event)  # type: ignore[arg-type]
        return self.feed("stripe.events", raw.key(), raw.to_bytes())

    def rule(self, doc: dict[str, Any] | None, account: str, rule_id: str) -> Outbox:
        key = rule_key(account, rule_id)
        fanned = self.feed("segments.rules", key,
                           None if doc is None else orjson.dumps(doc))
        out = Outbox()
        for topic, k, value, _, _ in fanned.messages:
            out.messages += self.feed("segments.control", k, value).messages
            assert topic == "t.segments.control"
        return out

    def facts(self, out: Outbox) -> Outbox:
        """Feed the facts `out` carries to the membership side; what that produced."""
        result = Outbox()
        for topic, key, value, _, _ in out.messages:
            if topic == "t.stripe.facts":
                result.messages += self.feed("stripe.facts", key, value).messages
        return result

    def tick(self) -> Outbox:
        out = Outbox()
        asyncio.run(self.pipeline.tick(0, out))
        return out


def sent(out: Outbox, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    return [(k, v) for t, k, v, _, _ in out.messages if t == f"t.{topic}"]


def changes(out: Outbox) -> list[tuple[str, str, str, str]]:
    found = [MembershipChange.from_bytes(v) for _, v in sent(out, "segments.membership")
             if v is not None]
    return [(c.segment_id, c.email, c.change, c.cause) for c in found]


def vip(**extra: Any) -> dict[str, Any]:
    return {"id": "vip", "account_id": "acme", "name": "vip", "filter": "charge_succeeded",
            "conditions": [{"field": "amount", "op": "gt", "value": "50"}],
            "timezone": "UTC", "version": 1, **extra}


def test_a_payment_becomes_one_fact_and_a_join() -> None:
    h = Harness()
    h.rule(vip(), "acme", "vip")
    paid = se.charge(amount=10_000, billing_email="Ann@Example.com", created=h.clock.now)
    first = h.event(se.event("charge.succeeded", paid))
    retry = h.event(se.event("charge.succeeded", paid))
    facts = sent(first, "stripe.facts")
    assert [Fact.from_bytes(v).email for _, v in facts if v] == ["ann@example.com"]
    assert sent(retry, "stripe.facts") == []  # the retry is the same occurrence
    assert changes(h.facts(first)) == [("vip", "ann@example.com", "joined", "fact")]


def test_state_writes_are_coalesced_per_key_and_encoded_once() -> None:
    h = Harness()
    h.rule(vip(), "acme", "vip")
    out = Outbox()
    h.pipeline.state_writes(0, out)  # the rule's writes
    for amount in (1_000, 2_000, 9_000):
        charge = se.charge(amount=amount, billing_email="ann@example.com",
                           created=h.clock.now)
        h.facts(h.event(se.event("charge.succeeded", charge)))
    out = Outbox()
    h.pipeline.state_writes(0, out)
    contacts = sent(out, "segments.state.contacts")
    assert len(contacts) == 1  # three facts, one write of the contact's last state
    state = ContactState.from_bytes(contacts[0][1] or b"")
    assert len(state.facts["charge_succeeded"]) == 3
    assert state.members == {"vip": 1}
    again = Outbox()
    h.pipeline.state_writes(0, again)
    assert again.messages == []  # taken once


def test_a_window_closing_leaves_on_the_tick() -> None:
    h = Harness()
    h.rule(vip(conditions=[{"field": "date", "op": "within_last",
                            "value": {"count": 7, "unit": "days"}}]), "acme", "vip")
    paid = se.charge(amount=10_000, billing_email="ann@example.com",
                     created=h.clock.now - 2 * DAY)
    joined = h.facts(h.event(se.event("charge.succeeded", paid, created=h.clock.now - 2 * DAY)))
    assert changes(joined) == [("vip", "ann@example.com", "joined", "fact")]
    h.clock.advance(5 * DAY - 10)
    assert changes(h.tick()) == []
    h.clock.advance(11)
    assert changes(h.tick()) == [("vip", "ann@example.com", "left", "time")]
    assert changes(h.tick()) == []  # once


def test_rule_change_and_delete_reach_existing_members() -> None:
    h = Harness()
    h.rule(vip(), "acme", "vip")
    for email, amount in (("low@a.com", 7_500), ("high@a.com", 20_000)):
        charge = se.charge(amount=amount, billing_email=email, created=h.clock.now)
        h.facts(h.event(se.event("charge.succeeded", charge)))
    stricter = vip(conditions=[{"field": "amount", "op": "gt", "value": "100"}], version=2)
    assert changes(h.rule(stricter, "acme", "vip")) == [("vip", "low@a.com", "left", "rule")]
    assert changes(h.rule(None, "acme", "vip")) == [("vip", "high@a.com", "left", "rule")]


def test_bad_input_goes_to_the_dead_letter_topic() -> None:
    h = Harness()
    out = h.feed("stripe.events", b"k", b"{not json")
    assert [k for k, _ in sent(out, "stripe.events.dlq")] == [b"k"]
    out = h.feed("stripe.facts", b"k", b'{"filter": 3}')
    assert len(sent(out, "stripe.events.dlq")) == 1
    out = h.feed("segments.rules", rule_key("acme", "x"), b"{")
    assert len(sent(out, "stripe.events.dlq")) == 1


def rule_doc(rule_id: str, days: int | None = None) -> bytes:
    conditions = [] if days is None else [
        {"field": "date", "op": "within_last", "value": {"count": days, "unit": "days"}}]
    return orjson.dumps({"id": rule_id, "account_id": "acme", "name": rule_id,
                         "filter": "charge_succeeded", "conditions": conditions,
                         "timezone": "UTC", "version": 1})


def test_horizon_grows_with_added_rules_and_shrinks_on_removal() -> None:
    ps = PartitionState(0)
    assert ps.horizon == HISTORY_FLOOR
    ps.add_rule(parse_rule(orjson.loads(rule_doc("long", 90))))
    assert ps.horizon == 93 * DAY
    ps.add_rule(parse_rule(orjson.loads(rule_doc("short", 7))))
    assert ps.horizon == 93 * DAY
    ps.add_rule(parse_rule(orjson.loads(rule_doc("long", 40))))  # a new version, shorter
    assert ps.horizon == 43 * DAY
    ps.remove_rule("acme", "long")
    assert ps.horizon == HISTORY_FLOOR


def test_a_timer_is_scheduled_once_per_due_instant() -> None:
    ps = PartitionState(0)
    contact = ContactState("acme", "ann@example.com", 0, due={"vip": 100})
    for _ in range(5):
        ps.track("k", contact)
    assert len(ps.timers) == 1
    contact.due["vip"] = 50
    ps.track("k", contact)
    assert ps.due_contacts(49) == []
    assert ps.due_contacts(100) == ["k"]
    assert ps.timers == []
