"""The pipeline without a broker: records in, the exact messages it would send out.

`stream.pipeline.Pipeline` is what the runtime drives; here it is driven by hand with
record objects, so classification, rule fan-out, membership, timers and the
coalescing of state writes are checked in milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
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
from stream.outbox import Outbox
from stream.partition_state import PartitionState
from stream.pipeline import Pipeline
from stream.status import StatusMarker, status_key
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
    def __init__(self, **options: Any) -> None:
        self.clock = ManualClock()
        self.settings = Settings(topic_prefix="t.", partitions=PARTITIONS)
        self.pipeline = Pipeline(self.settings, StreamOptions(clock=self.clock, **options))
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

    def fact(self, fact: Fact) -> Outbox:
        return self.feed("stripe.facts", fact.key(), fact.to_bytes())

    def metric(self, name: str, **labels: str) -> float:
        value = self.pipeline.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

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


def test_each_rule_change_ends_with_the_partitions_status_marker() -> None:
    """The marker comes after the rule's changes, in the same outbox (one transaction),
    names the applied version, and is a tombstone once the rule is deleted."""
    h = Harness()
    charge = se.charge(amount=20_000, billing_email="ann@a.com", created=h.clock.now)
    h.facts(h.event(se.event("charge.succeeded", charge)))
    for version in (1, 2):
        out = h.rule(vip(version=version), "acme", "vip")
        topics = [t for t, *_ in out.messages]
        assert topics[-1] == "t.segments.status"
        [(key, value)] = sent(out, "segments.status")
        marker = StatusMarker.from_record(key or b"", value)
        assert (marker.account_id, marker.segment_id, marker.partition,
                marker.rule_version) == ("acme", "vip", 0, version)
    assert changes(out) == []  # the unchanged rule changed no membership: marker only
    deleted = h.rule(None, "acme", "vip")
    assert sent(deleted, "segments.status") == [(status_key("acme", "vip", 0), None)]
    # An invalid rule is dead-lettered before it reaches the partitions: no marker.
    invalid = h.feed("segments.rules", rule_key("acme", "vip"),
                     orjson.dumps({**vip(version=3), "filter": "nope"}))
    assert sent(invalid, "segments.status") == []
    assert len(sent(invalid, "stripe.events.dlq")) == 1


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
    partition_state = PartitionState(0)
    assert partition_state.horizon == HISTORY_FLOOR
    partition_state.add_rule(parse_rule(orjson.loads(rule_doc("long", 90))))
    assert partition_state.horizon == 93 * DAY
    partition_state.add_rule(parse_rule(orjson.loads(rule_doc("short", 7))))
    assert partition_state.horizon == 93 * DAY
    # A new version, shorter:
    partition_state.add_rule(parse_rule(orjson.loads(rule_doc("long", 40))))
    assert partition_state.horizon == 43 * DAY
    partition_state.remove_rule("acme", "long")
    assert partition_state.horizon == HISTORY_FLOOR


def test_a_timer_is_scheduled_once_per_due_instant() -> None:
    partition_state = PartitionState(0)
    contact = ContactState("acme", "ann@example.com", 0, due={"vip": 100})
    for _ in range(5):
        partition_state.track("k", contact)
    assert len(partition_state.timers) == 1
    contact.due["vip"] = 50
    partition_state.track("k", contact)
    assert partition_state.due_contacts(49) == []
    assert partition_state.due_contacts(100) == ["k"]
    assert partition_state.timers == []


# -- retention: what rules need stays, housekeeping changes no membership ----------------

def failed(fact_id: str, at: int, filter_id: str = "charge_failed") -> Fact:
    return Fact(fact_id, filter_id, "acme", "conn1", "ann@example.com", at,  # type: ignore[arg-type]
                amount=5_000, currency="usd")


def lapsed(days: int = 30) -> dict[str, Any]:
    return {"id": "lapsed", "account_id": "acme", "name": "failed a while ago",
            "filter": "charge_failed", "timezone": "UTC", "version": 1,
            "conditions": [{"field": "date", "op": "more_than_ago",
                            "value": {"count": days, "unit": "days"}}]}


def test_a_more_than_ago_member_stays_a_member_after_later_facts_and_pruning() -> None:
    """Issue 14: history was kept 33 days, so the member left ("time") at its next fact."""
    h = Harness()
    h.rule(lapsed(), "acme", "lapsed")
    t0 = h.clock.now
    for i in range(3):
        assert changes(h.fact(failed(f"ch_{i}:failed", t0 + i * 3600))) == []
    h.fact(failed("ch_paid:succeeded", t0, "charge_succeeded"))  # no rule needs it
    h.clock.advance(30 * DAY)
    assert changes(h.tick()) == [("lapsed", "ann@example.com", "joined", "time")]

    h.clock.advance(12 * DAY)  # 42 days after the first failure: past the 33-day horizon
    later = [h.fact(failed("ch_new:failed", h.clock.now)),
             h.fact(failed("ch_new:succeeded", h.clock.now, "charge_succeeded"))]
    contact = h.pipeline.contacts.view(0)[failed("x", 0).key().decode()]
    # Past the horizon only what the rule needs stayed: its newest qualifying failure.
    assert sorted(contact.facts["charge_failed"]) == ["ch_2:failed", "ch_new:failed"]
    assert sorted(contact.facts["charge_succeeded"]) == ["ch_new:succeeded"]
    assert h.metric("segments_history_facts_forgotten_total") == 3

    h.clock.advance(300 * DAY)
    later += [h.fact(failed("ch_late:succeeded", h.clock.now, "charge_succeeded")),
              h.tick()]

    assert [changes(out) for out in later] == [[], [], [], []]
    contact = h.pipeline.contacts.view(0)[failed("x", 0).key().decode()]
    assert contact.members == {"lapsed": 1}
    assert sorted(contact.facts["charge_failed"]) == ["ch_new:failed"]  # now the newest
    assert h.metric("segments_history_facts_forgotten_total") == 5
    assert h.metric("segments_membership_changes_total", cause="time", change="left") == 0


def test_a_fact_older_than_the_horizon_on_arrival_is_counted_not_held() -> None:
    h = Harness()
    h.rule(lapsed(), "acme", "lapsed")
    assert changes(h.fact(failed("ch_late:failed", h.clock.now - 34 * DAY))) == []
    assert h.metric("segments_facts_beyond_horizon_total", filter="charge_failed") == 1
    assert h.pipeline.contacts.view(0) == {}
    # Within the horizon it is held (and joins: it failed more than 30 days ago).
    assert changes(h.fact(failed("ch_ok:failed", h.clock.now - 32 * DAY))) == [
        ("lapsed", "ann@example.com", "joined", "fact")]
    assert h.metric("segments_facts_beyond_horizon_total", filter="charge_failed") == 1


def test_the_history_floor_is_an_option() -> None:
    h = Harness(history_floor_s=90 * DAY)
    assert h.pipeline.partitions[0].horizon == 90 * DAY
    h.rule(lapsed(), "acme", "lapsed")
    assert changes(h.fact(failed("ch_old:failed", h.clock.now - 80 * DAY))) == [
        ("lapsed", "ann@example.com", "joined", "fact")]
    assert h.metric("segments_facts_beyond_horizon_total", filter="charge_failed") == 0


def test_a_forged_envelope_is_dead_lettered_not_classified() -> None:
    """The envelope says globex; connection conn1 feeds acme: nothing but a dead letter."""
    async def account_of(connection_id: str) -> str | None:
        return {"conn1": "acme"}.get(connection_id)

    h = Harness(connection_account=account_of)
    h.rule(vip(), "acme", "vip")
    paid = se.charge(amount=10_000, billing_email="ann@example.com", created=h.clock.now)
    forged = h.event(se.event("charge.succeeded", paid), account="globex")
    assert sent(forged, "stripe.facts") == []
    [(topic, _, _, _, headers)] = forged.messages
    assert topic == "t.stripe.events.dlq"
    reason = dict(headers or [])["reason"].decode()
    assert reason.startswith("ForgedEnvelope: account_id 'globex' is not the account")
    genuine = h.event(se.event("charge.succeeded", paid))
    assert [Fact.from_bytes(v).account_id for _, v in sent(genuine, "stripe.facts") if v] == \
        ["acme"]


def test_a_dead_letter_logs_no_email(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    out = Outbox()
    record = Record("t.stripe.facts", 0, 7, b"acme\x1fann@example.com", b"{}")
    reason = "ClassifyError: customer cus_1 has ann@example.com twice"
    with caplog.at_level(logging.WARNING):
        h.pipeline._dead_letter(record, reason, out)
    assert "ann@example.com" not in caplog.text
    assert "ClassifyError" in caplog.text
    _, _, _, _, headers = out.messages[0]
    assert ("reason", reason.encode()) in (headers or [])
