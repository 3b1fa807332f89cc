"""The stream on the real broker: raw events in, facts and membership changes out."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from common import kafka
from common.settings import Settings
from common.topics import (
    BY_CHARGE_TOPIC,
    EVENTS_TOPIC,
    FACTS_TOPIC,
    MEMBERSHIP_TOPIC,
    RULES_TOPIC,
    ensure_topics,
)
from connectors.contract import RawEvent
from stream.app import StreamOptions, create_app
from stream.changes import MembershipChange, rule_key, rule_record
from tests import stripe_events as se
from tests.clock import ManualClock
from tests.record_schemas import check_records
from tests.waiting import async_wait_for
from tests.worker_runner import running

pytestmark = pytest.mark.integration
DAY = 24 * 3600


class Topics:
    """Produce to and read back from the test's prefixed topics; every record read back
    is checked against its topic's schema (`tests/record_schemas.py`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = kafka.producer(settings, acks="all", enable_idempotence=True)
        self.consumers: dict[str, Any] = {}
        self.seen: dict[str, list[Any]] = {}

    async def raw(self, event: dict[str, Any], account: str = "acme", source: str = "webhook",
                  connection: str = "conn1") -> None:
        raw = RawEvent(connection, account, source, 0, event)  # type: ignore[arg-type]
        await self.producer.send_and_wait(self.settings.topic(EVENTS_TOPIC), raw.to_bytes(),
                                          key=raw.key())

    async def rule(self, doc: dict[str, Any] | None, account: str, rule_id: str) -> None:
        value = rule_record(doc) if doc is not None else None
        await self.producer.send_and_wait(self.settings.topic(RULES_TOPIC), value,
                                          key=rule_key(account, rule_id))

    async def read(self, name: str) -> list[Any]:
        consumer = self.consumers.get(name)
        if consumer is None:
            consumer = kafka.consumer(
                self.settings, self.settings.topic(name), auto_offset_reset="earliest",
                isolation_level="read_committed", group_id=f"reader-{uuid.uuid4()}")
            await consumer.start()
            self.consumers[name] = consumer
            self.seen[name] = []
        batch = await consumer.getmany(timeout_ms=200)
        for records in batch.values():
            check_records(records)
            self.seen[name].extend(records)
        return self.seen[name]

    async def drained(self, timeout: float = 60) -> list[MembershipChange]:
        """Every membership change there will be for what was produced so far.

        Waits until the workers' group has committed its inputs (stripe.events,
        segments.by-charge and stripe.facts up to their last transaction markers) — output
        commits with the input offsets under exactly-once — then reads
        segments.membership to its end.
        """
        from aiokafka import TopicPartition

        s = self.settings
        group = kafka.consumer(s, group_id=f"{s.topic_prefix}segments",
                               enable_auto_commit=False, isolation_level="read_committed")
        await group.start()
        try:
            inputs = [TopicPartition(s.topic(name), partition)
                      for name in (EVENTS_TOPIC, BY_CHARGE_TOPIC, FACTS_TOPIC)
                      for partition in range(s.partitions)]

            probe = kafka.consumer(s, isolation_level="read_committed",
                                   enable_auto_commit=False)
            await probe.start()

            async def inputs_committed() -> bool:
                """No committed record lies past the group's committed offsets."""
                probe.assign(inputs)
                for tp in inputs:
                    probe.seek(tp, await group.committed(tp) or 0)
                ends = await probe.end_offsets(inputs)
                for _ in range(10):
                    if await probe.getmany(timeout_ms=300):
                        return False
                    behind = [tp for tp in inputs if await probe.position(tp) < ends[tp]]
                    if not behind:
                        return True
                return False

            try:
                await async_wait_for(inputs_committed, timeout, what="inputs committed")
            finally:
                await probe.stop()
        finally:
            await group.stop()
        await self.read_to_end(MEMBERSHIP_TOPIC, timeout)
        return await self.changes()

    async def read_to_end(self, name: str, timeout: float = 60) -> list[Any]:
        """Everything committed on topic `name` so far (read_committed, to its end)."""
        from aiokafka import TopicPartition

        await self.read(name)
        consumer = self.consumers[name]
        tps = [TopicPartition(self.settings.topic(name), partition)
               for partition in range(self.settings.partitions)]
        ends = await consumer.end_offsets(tps)

        async def at_end() -> bool:
            await self.read(name)
            for tp, end in ends.items():
                if end and (tp not in consumer.assignment() or await consumer.position(tp) < end):
                    return False
            return True

        await async_wait_for(at_end, timeout, what=f"{name} read to its end")
        return self.seen[name]

    async def changes(self) -> list[MembershipChange]:
        return [MembershipChange.from_bytes(r.value) for r in await self.read(MEMBERSHIP_TOPIC)]

    async def close(self) -> None:
        await self.producer.stop()
        for consumer in self.consumers.values():
            await consumer.stop()


@pytest.fixture
async def topics(settings: Settings) -> AsyncIterator[Topics]:
    await ensure_topics(settings)
    t = Topics(settings)
    await t.producer.start()
    yield t
    await t.close()


def rule(rule_id: str, filter_id: str, *conditions: dict[str, Any], account: str = "acme",
         version: int = 1) -> dict[str, Any]:
    return {"id": rule_id, "account_id": account, "name": rule_id, "filter": filter_id,
            "conditions": list(conditions), "timezone": "UTC", "version": version}


def summary(changes: list[MembershipChange]) -> list[tuple[str, str, str, str]]:
    return [(c.segment_id, c.email, c.change, c.cause) for c in changes]


async def wait_changes(topics: Topics, count: int, timeout: float = 45) -> list[MembershipChange]:
    async def enough() -> list[MembershipChange] | None:
        changes = await topics.changes()
        return changes if len(changes) >= count else None

    return await async_wait_for(enough, timeout, what=f"{count} membership changes")


async def test_facts_rules_and_time(settings: Settings, topics: Topics, tmp_path: Path) -> None:
    clock = ManualClock()
    t0 = clock.now
    app = create_app(settings, StreamOptions(clock=clock, tick_interval=0.2))
    async with running(app):
        await topics.rule(rule("big", "charge_succeeded",
                               {"field": "amount", "op": "gt", "value": "50"},
                               {"field": "date", "op": "within_last",
                                "value": {"count": 7, "unit": "days"}}), "acme", "big")
        # Ann paid 100 USD two days ago (announced three times: two siblings and a retry);
        # Bob paid 10 USD.
        ann = se.charge(amount=10_000, billing_email=" Ann@Example.com ", created=t0 - 2 * DAY)
        charge_event = se.event("charge.succeeded", ann, created=t0 - 2 * DAY)
        await topics.raw(charge_event)
        await topics.raw(charge_event)  # webhook retry
        await topics.raw(se.event("payment_intent.succeeded", se.payment_intent(ann)))
        bob = se.charge(amount=1_000, billing_email="bob@example.com", created=t0 - DAY)
        await topics.raw(se.event("charge.succeeded", bob))

        changes = await wait_changes(topics, 1)
        assert summary(changes)[0][:3] == ("big", "ann@example.com", "joined")
        # The window closes five days later: Ann leaves, at exactly that instant.
        clock.advance(5 * DAY + 1)
        changes = await wait_changes(topics, 2)
        assert summary(changes) == [
            ("big", "ann@example.com", "joined", changes[0].cause),
            ("big", "ann@example.com", "left", "time"),
        ]
        assert changes[0].cause in ("fact", "rule")
        # A rule added afterwards over the kept history: Bob (and Ann) joined by "rule".
        await topics.rule(rule("any", "charge_succeeded"), "acme", "any")
        changes = await wait_changes(topics, 4)
        assert sorted(summary(changes[2:])) == [
            ("any", "ann@example.com", "joined", "rule"),
            ("any", "bob@example.com", "joined", "rule"),
        ]
        # Deleting it empties the segment.
        await topics.rule(None, "acme", "any")
        changes = await wait_changes(topics, 6)
        assert sorted(summary(changes[4:])) == [
            ("any", "ann@example.com", "left", "rule"),
            ("any", "bob@example.com", "left", "rule"),
        ]
        facts = await topics.read("stripe.facts")
        assert len(facts) == 2  # three announcements of Ann's payment were one fact


async def test_customer_email_from_the_connector_cache(settings: Settings, topics: Topics,
                                                       tmp_path: Path) -> None:
    """A customer older than the backfill window has no customer.* event: the stream
    asks the connector's resolver (here answered from its real Redis cache)."""
    import redis.asyncio as aioredis

    from connectors.emails import EmailResolver
    from segments.email_lookup import connector_email_lookup

    async def no_key(connection_id: str) -> str | None:
        return None

    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        await EmailResolver(redis, settings, no_key).remember("conn1", "cus_old",
                                                              "Old@Example.com")
    finally:
        await redis.aclose()
    app = create_app(settings, StreamOptions(
        email_lookup=connector_email_lookup(settings)))
    async with running(app):
        await topics.rule(rule("paid", "charge_succeeded"), "acme", "paid")
        ch = se.charge(billing_email=None, customer="cus_old", created=int(time.time()))
        await topics.raw(se.event("charge.succeeded", ch))
        changes = await wait_changes(topics, 1)
        assert summary(changes)[0][:3] == ("paid", "old@example.com", "joined")


async def test_rule_change_and_account_isolation(settings: Settings, topics: Topics,
                                                 tmp_path: Path) -> None:
    """`gt 50` → `gt 100` makes exactly the 50-100 payers leave; two accounts using the
    same segment id never see each other's contacts."""
    now = int(time.time())
    app = create_app(settings, StreamOptions())
    async with running(app):
        for account in ("acme", "globex"):
            await topics.rule(rule("vip", "charge_succeeded",
                                   {"field": "amount", "op": "gt", "value": "50"},
                                   account=account), account, "vip")
        payments = {("acme", "low@a.com"): 4_000, ("acme", "mid@a.com"): 7_500,
                    ("acme", "high@a.com"): 20_000, ("globex", "mid@g.com"): 8_000}
        for (account, email), amount in payments.items():
            ch = se.charge(amount=amount, billing_email=email, created=now)
            await topics.raw(se.event("charge.succeeded", ch), account=account,
                             connection=f"conn-{account}")
        joined = await wait_changes(topics, 3)
        assert sorted((c.account_id, c.email, c.change) for c in joined) == [
            ("acme", "high@a.com", "joined"), ("acme", "mid@a.com", "joined"),
            ("globex", "mid@g.com", "joined")]
        await topics.rule(rule("vip", "charge_succeeded",
                               {"field": "amount", "op": "gt", "value": "100"},
                               account="acme", version=2), "acme", "vip")
        changes = await wait_changes(topics, 4)
        assert [(c.account_id, c.email, c.change, c.cause, c.rule_version)
                for c in changes[3:]] == [("acme", "mid@a.com", "left", "rule", 2)]
        # Everything the inputs caused, so an extra change (a leave in globex) would show.
        assert len(await topics.drained()) == 4


async def test_facts_exact_from_a_mixed_stream(settings: Settings, topics: Topics,
                                              tmp_path: Path) -> None:
    """Webhook retries, siblings, a backfill overlapping webhooks, late old events and
    partial refunds announced twice: each real-world occurrence is one fact, at its
    event time."""
    now = int(time.time())
    app = create_app(settings, StreamOptions())
    async with running(app):
        paid = se.charge(amount=12_000, billing_email="ann@example.com", created=now - 60)
        paid_event = se.event("charge.succeeded", paid, created=now - 60)
        await topics.raw(paid_event)
        await topics.raw(paid_event)  # webhook retry
        await topics.raw(se.event("payment_intent.succeeded", se.payment_intent(paid)))
        await topics.raw(paid_event, source="backfill")  # the backfill overlaps
        # A payment ten days old, delivered late by the backfill.
        old = se.charge(amount=3_000, billing_email="bob@example.com",
                        created=now - 10 * 86_400)
        await topics.raw(se.event("charge.succeeded", old, created=now - 10 * 86_400),
                         source="backfill")
        # Two partial refunds of Ann's payment, each announced by charge.refunded and
        # refund.created.
        for charge_refunded, refund_created in se.refund_events(paid, [2_000, 3_000]):
            await topics.raw(charge_refunded)
            await topics.raw(refund_created)

        async def facts() -> list[Any] | None:
            records = await topics.read("stripe.facts")
            return records if len(records) >= 4 else None

        await async_wait_for(facts, 45, what="4 facts")
        # Everything classify will ever make of these inputs, so an extra fact would show.
        await topics.drained()
        records = await topics.read_to_end("stripe.facts")
    got = sorted((f["filter"], f["email"], f.get("refund_amount"), f["occurred_at"])
                 for f in (orjson.loads(r.value) for r in records))
    refunds = [f for f in got if f[0] == "refunded"]
    assert [f[:3] for f in got if f[0] != "refunded"] == [
        ("charge_succeeded", "ann@example.com", None),
        ("charge_succeeded", "bob@example.com", None)]
    assert sorted(f[2] for f in refunds) == [2_000, 3_000]
    assert {f[3] for f in got if f[1] == "bob@example.com"} == {now - 10 * 86_400}
    assert len(records) == 4
