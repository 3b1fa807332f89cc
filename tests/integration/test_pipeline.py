"""The stream on the real broker: raw events in, facts and membership changes out."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from connectors.contract import EVENTS_TOPIC, RawEvent
from segments.settings import Settings
from segments.topics import ensure_topics
from stream.app import StreamOptions, create_app
from stream.changes import MEMBERSHIP_TOPIC, RULES_TOPIC, MembershipChange, rule_key
from tests.clock import ManualClock
from tests.faust_runner import running
from tests.unit import stripe_events as se
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration
DAY = 24 * 3600


class Topics:
    """Produce to and read back from the test's prefixed topics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                         acks="all", enable_idempotence=True)
        self.consumers: dict[str, Any] = {}
        self.seen: dict[str, list[Any]] = {}

    async def raw(self, event: dict[str, Any], account: str = "acme", source: str = "webhook",
                  connection: str = "conn1") -> None:
        raw = RawEvent(connection, account, source, 0, event)  # type: ignore[arg-type]
        await self.producer.send_and_wait(self.settings.topic(EVENTS_TOPIC), raw.to_bytes(),
                                          key=raw.key())

    async def rule(self, doc: dict[str, Any] | None, account: str, rule_id: str) -> None:
        value = orjson.dumps(doc) if doc is not None else None
        await self.producer.send_and_wait(self.settings.topic(RULES_TOPIC), value,
                                          key=rule_key(account, rule_id))

    async def read(self, name: str) -> list[Any]:
        consumer = self.consumers.get(name)
        if consumer is None:
            consumer = AIOKafkaConsumer(
                self.settings.topic(name), bootstrap_servers=self.settings.kafka_bootstrap_servers,
                auto_offset_reset="earliest", isolation_level="read_committed",
                group_id=f"reader-{uuid.uuid4()}")
            await consumer.start()
            self.consumers[name] = consumer
            self.seen[name] = []
        batch = await consumer.getmany(timeout_ms=200)
        for records in batch.values():
            self.seen[name].extend(records)
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
    app = create_app(settings, StreamOptions(store="memory://", datadir=str(tmp_path),
                                             clock=clock, tick_interval=0.2))
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
        store="memory://", datadir=str(tmp_path),
        email_lookup=connector_email_lookup(settings)))
    async with running(app):
        await topics.rule(rule("paid", "charge_succeeded"), "acme", "paid")
        ch = se.charge(billing_email=None, customer="cus_old", created=int(time.time()))
        await topics.raw(se.event("charge.succeeded", ch))
        changes = await wait_changes(topics, 1)
        assert summary(changes)[0][:3] == ("paid", "old@example.com", "joined")
