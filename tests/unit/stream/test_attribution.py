"""Refund attribution across partitions, without a broker.

The pipeline is driven over 8 partitions the way the runtime would: each record goes to
the partition its key hashes to (Kafka's default partitioner), and whatever a partition
sends to an internal topic is fed on to the partition of its key, until nothing is left.
A refund rendered at 2024-10-28.acacia names its charge but not the customer, so its raw
event lands on another partition than the charge's: the tests check that they do, then
that the refund still reaches the payer, once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from common.settings import Settings
from connectors.contract import RawEvent
from stream.attribution import ChargeJoin, JoinTables, payer_record, refund_record
from stream.changes import MembershipChange, rule_key
from stream.facts import Fact
from stream.occurrence import Occurrence
from stream.options import StreamOptions
from stream.outbox import Outbox
from stream.partitioning import partition_for
from stream.pipeline import Pipeline
from tests import stripe_events as se
from tests.clock import ManualClock

pytestmark = pytest.mark.unit
PARTITIONS = 8
ACACIA = "2024-10-28.acacia"
INTERNAL = ("stripe.facts", "segments.control", "segments.by-charge")


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class Partitioned:
    """The pipeline on 8 partitions; every output is routed by its key."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.settings = Settings(topic_prefix="t.", partitions=PARTITIONS)
        self.pipeline = Pipeline(self.settings, StreamOptions(clock=self.clock))
        self.pipeline.adopt(list(range(PARTITIONS)))
        self.offset = 0
        self.out: list[tuple[str, bytes | None, bytes | None]] = []
        #: topic (unprefixed) -> partitions that processed a record of it.
        self.where: dict[str, list[int]] = {}

    def feed(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None) -> None:
        queue = deque([(topic, key, value, partition)])
        while queue:
            topic, key, value, requested = queue.popleft()
            partition = (requested if requested is not None
                         else partition_for(key or b"", PARTITIONS))
            self.where.setdefault(topic, []).append(partition)
            out = Outbox()
            self.offset += 1
            record = Record(self.settings.topic(topic), partition, self.offset, key, value)
            asyncio.run(self.pipeline.process(partition, record.topic, [record], out))
            for t, k, v, part, _ in out.messages:
                name = t.removeprefix("t.")
                self.out.append((name, k, v))
                if name in INTERNAL:
                    queue.append((name, k, v, part))

    def event(self, event: dict[str, Any], account: str = "acme") -> int:
        """Feed a raw event as the connector keys it; the partition it landed on."""
        raw = RawEvent("conn1", account, "webhook", 0, event)  # type: ignore[arg-type]
        partition = partition_for(raw.key(), PARTITIONS)
        self.feed("stripe.events", raw.key(), raw.to_bytes())
        return partition

    def rule(self, doc: dict[str, Any]) -> None:
        self.feed("segments.rules", rule_key(doc["account_id"], doc["id"]), orjson.dumps(doc))

    def facts(self, filter_id: str) -> list[Fact]:
        found = [Fact.from_bytes(v) for t, _, v in self.out if t == "stripe.facts" and v]
        return [f for f in found if f.filter == filter_id]

    def changes(self) -> list[tuple[str, str, str]]:
        found = [MembershipChange.from_bytes(v) for t, _, v in self.out
                 if t == "segments.membership" and v]
        return [(c.segment_id, c.email, c.change) for c in found]


def refunded_rule() -> dict[str, Any]:
    return {"id": "refunded", "account_id": "acme", "name": "refunded", "filter": "refunded",
            "conditions": [{"field": "amount", "op": "gt", "value": "50"}],
            "timezone": "UTC", "version": 1}


def refunds_now(h: Partitioned, ch: dict[str, Any], amounts: list[int],
                api_version: str = ACACIA) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """`se.refund_events`, dated now (the builders' clock is in 2023: out of history)."""
    made = se.refund_events(ch, amounts, api_version=api_version)
    for pair in made:
        for event in pair:
            event["created"] = h.clock.now
            obj = event["data"]["object"]
            if obj.get("object") == "refund":
                obj["created"] = h.clock.now
            for refund in (obj.get("refunds") or {}).get("data", []):
                refund["created"] = h.clock.now
    return made


def apart(ch: dict[str, Any], customer: str) -> dict[str, Any]:
    """Give `ch` a customer (id starting with `customer`) whose events land on another
    partition than its payment intent's (where a refund without customer lands)."""
    pi = partition_for(f"conn1:{ch['payment_intent']}".encode(), PARTITIONS)
    for n in range(100):
        if partition_for(f"conn1:{customer}{n}".encode(), PARTITIONS) != pi:
            ch["customer"] = f"{customer}{n}"
            return ch
    raise AssertionError("no customer id on another partition")


def acacia_payment(h: Partitioned, email: str, customer: str) -> dict[str, Any]:
    ch = se.charge(amount=10_000, billing_email=email, created=h.clock.now - 60)
    ch["amount_refunded"], ch["refunded"] = 0, False
    return apart(ch, customer)


def test_a_refund_on_another_partition_reaches_the_payer_once() -> None:
    h = Partitioned()
    h.rule(refunded_rule())
    ch = acacia_payment(h, "ann@example.com", "cus_ann")
    charge_at = h.event(se.event("charge.succeeded", ch, api_version=ACACIA))
    (charge_refunded, refund_created), = refunds_now(h, ch, [2_500])
    assert refund_created["data"]["object"].get("customer") is None
    refund_at = h.event(refund_created)
    h.event(charge_refunded)
    h.event(refund_created)  # a webhook retry
    assert refund_at != charge_at  # the case of the issue: the keys differ
    refunds = h.facts("refunded")
    assert [(f.email, f.refund_amount, f.amount, f.fact_id) for f in refunds] == [
        ("ann@example.com", 2_500, 10_000, refund_created["data"]["object"]["id"])]
    assert h.changes() == [("refunded", "ann@example.com", "joined")]


def test_a_refund_before_its_charge_waits_and_is_released() -> None:
    h = Partitioned()
    h.rule(refunded_rule())
    ch = acacia_payment(h, "bob@example.com", "cus_bob")
    paid = se.event("charge.succeeded", ch, api_version=ACACIA)
    refunds = refunds_now(h, ch, [1_000, 2_000])
    for _, refund_created in refunds:
        h.event(refund_created)
    assert h.facts("refunded") == []
    h.event(paid)
    h.event(paid)  # a retry does not release anything twice
    got = sorted((f.email, f.refund_amount, f.amount) for f in h.facts("refunded"))
    assert got == [("bob@example.com", 1_000, 10_000), ("bob@example.com", 2_000, 10_000)]
    assert h.changes() == [("refunded", "bob@example.com", "joined")]


def test_six_refunds_on_eight_partitions_each_count_once() -> None:
    h = Partitioned()
    h.rule(refunded_rule())
    expected = []
    for i in range(6):
        email = f"payer{i}@example.com"
        ch = acacia_payment(h, email, f"cus_{i}")
        charge_at = h.event(se.event("charge.succeeded", ch, api_version=ACACIA))
        for charge_refunded, refund_created in refunds_now(h, ch, [500]):
            h.event(charge_refunded)
            assert h.event(refund_created) != charge_at
            h.event(refund_created)
        expected.append(("refunded", email, "joined"))
    assert len(h.facts("refunded")) == 6
    assert sorted(h.changes()) == sorted(expected)


def test_old_versions_announce_a_refund_twice_on_two_partitions_and_it_counts_once() -> None:
    """2020-08-27: charge.refunded (keyed by customer, lists the refund) and
    refund.created (no customer, keyed by payment intent) both name the refund."""
    h = Partitioned()
    h.rule(refunded_rule())
    ch = apart(se.charge(amount=10_000, billing_email="cy@example.com",
                         created=h.clock.now - 60), "cus_cy")
    h.event(se.event("charge.succeeded", ch))
    ch["amount_refunded"], ch["refunded"] = 0, False
    (charge_refunded, refund_created), = refunds_now(h, ch, [700], "2020-08-27")
    assert h.event(charge_refunded) != h.event(refund_created)
    assert [(f.email, f.refund_amount) for f in h.facts("refunded")] == [
        ("cy@example.com", 700)]
    assert h.changes() == [("refunded", "cy@example.com", "joined")]


def test_a_refund_whose_payer_never_comes_waits_then_is_counted_as_dropped() -> None:
    tables = JoinTables(charges={}, waiting={}, seen={})
    join = ChargeJoin(tables)
    occ = Occurrence(fact_id="re_1", filter="refunded", occurred_at=1_000,
                     source_event_id="evt_1", source_event_type="refund.created",
                     currency="usd", refund_amount=100, charge_id="ch_1")
    key, value = refund_record("acme", "conn1", occ, None)
    out = join.handle(key, value, 1_000)
    assert (out.facts, out.waiting) == ([], 1)
    assert join.handle(key, value, 1_001).duplicates == 1  # waits once
    # A payer in another connection (same charge id) does not release it.
    other = join.handle(*payer_record("globex", "conn2", "ch_1", "x@example.com", 5, "usd"),
                        1_002)
    assert other.facts == []
    released = join.handle(*payer_record("acme", "conn1", "ch_1", "ann@example.com", 9_000,
                                         "usd"), 1_003)
    assert [(f.email, f.amount, f.account_id) for f in released.facts] == [
        ("ann@example.com", 9_000, "acme")]
    assert tables.waiting == {}


def test_a_refund_naming_a_customer_without_email_is_attributed_once_when_it_is_known() -> None:
    """2026-07-29.dahlia: the refund names the customer. Neither the charge nor the
    customer has an email yet, so the charge's fact is parked and the refund both waits
    on the charge's partition and parks with the customer; the customer's email then
    releases both paths, and the refund still counts once."""
    h = Partitioned()
    h.rule(refunded_rule())
    dahlia = "2026-07-29.dahlia"
    ch = se.charge(amount=10_000, billing_email=None, customer="cus_dee",
                   created=h.clock.now - 60, amount_refunded=0, refunded=False)
    h.event(se.event("charge.succeeded", ch, api_version=dahlia))
    (_, refund_created), = refunds_now(h, ch, [900], dahlia)
    refund_created["data"]["object"]["customer"] = "cus_dee"
    h.event(refund_created)
    assert h.facts("refunded") == []
    h.event(se.event("customer.updated", se.customer("dee@example.com", id="cus_dee"),
                     api_version=dahlia))
    assert [(f.email, f.refund_amount, f.amount) for f in h.facts("refunded")] == [
        ("dee@example.com", 900, 10_000)]
    assert h.changes() == [("refunded", "dee@example.com", "joined")]
