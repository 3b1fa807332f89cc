"""The backfill against localstripe as a real server, onto the real Kafka topic.

localstripe lists events oldest first, rejects `types[]` (the backfill falls back to an
unfiltered listing) and emits no charge.*, refund.* or customer.subscription.updated;
`test_backfill_stripe_semantics.py` covers Stripe's own behaviour with a stand-in server.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
import stripe
from aiokafka import AIOKafkaConsumer, TopicPartition

from common.settings import Settings
from common.stripe_event_types import NEEDED_EVENT_TYPES
from common.topics import EVENTS_TOPIC, ensure_topics
from connectors.backfill import (
    BackfillBusy,
    BackfillJob,
    BackfillOptions,
    BackfillProgress,
    progress_key,
    read_progress,
    reset_backfill,
    run_backfill,
)
from connectors.contract import RawEvent
from connectors.emails import EmailResolver
from connectors.sink import KafkaEventSink, SinkUnavailable
from tests.localstripe_server import running_localstripe
from tests.stripe_activity import Activity, flush, make_activity

pytestmark = pytest.mark.integration

API_KEY = "sk_test_backfill_0123456789"
FAST = BackfillOptions(rate_per_s=200, settle_s=0, overlap_s=0, page_size=10, max_in_flight=100)


@pytest.fixture(scope="module")
def localstripe_base() -> Iterator[str]:
    with running_localstripe() as base:
        yield base


@pytest.fixture(scope="module")
def seeded(localstripe_base: str) -> tuple[str, Activity, list[dict[str, object]]]:
    """One account's activity, and the needed events localstripe holds for it."""
    flush(localstripe_base)
    client = stripe.StripeClient(API_KEY, base_addresses={"api": localstripe_base})
    activity = make_activity(client, 12)
    listing = client.v1.events.list(params={"limit": 100})
    events = [e.to_dict() for e in listing.auto_paging_iter()]
    return localstripe_base, activity, [e for e in events if e["type"] in NEEDED_EVENT_TYPES]


@pytest.fixture
async def sink(settings: Settings) -> AsyncIterator[KafkaEventSink]:
    await ensure_topics(settings)
    async with KafkaEventSink(settings) as kafka:
        yield kafka


def _settings(settings: Settings, base: str) -> Settings:
    return Settings(**{**settings.__dict__, "stripe_api_base": base})


def _job(since: int | None = None) -> BackfillJob:
    return BackfillJob(connection_id=f"conn_{uuid.uuid4().hex[:24]}", account_id="acme",
                       api_key=API_KEY, since=since or int(time.time()) - 3600)


async def topic_contents(settings: Settings) -> list[RawEvent]:
    """Everything on the (fresh, per-test) events topic, up to its end offsets."""
    topic = settings.topic(EVENTS_TOPIC)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, partition) for partition in range(settings.partitions)]
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        out: list[RawEvent] = []
        for tp in partitions:
            consumer.seek(tp, 0)
        async def behind() -> bool:
            return any([await consumer.position(tp) < end[tp] for tp in partitions])

        while await behind():
            batch = await consumer.getmany(*partitions, timeout_ms=1000)
            out.extend(RawEvent.from_bytes(m.value) for msgs in batch.values() for m in msgs)
        return out
    finally:
        await consumer.stop()


def assert_each_once(produced: list[RawEvent], expected: list[dict[str, object]]) -> None:
    counts = Counter(e.event_id for e in produced)
    repeated = {i: n for i, n in counts.items() if n > 1}
    assert not repeated, f"produced more than once: {repeated}"
    assert set(counts) == {str(e["id"]) for e in expected}


async def test_backfill_produces_every_needed_event_once(
        settings: Settings, seeded: tuple[str, Activity, list[dict[str, object]]],
        redis: aioredis.Redis, sink: KafkaEventSink) -> None:
    base, activity, expected = seeded
    settings = _settings(settings, base)
    job = _job()
    seen: list[BackfillProgress] = []

    final = await run_backfill(job, settings=settings, sink=sink, redis=redis,
                               on_progress=seen.append, options=FAST)

    produced = await topic_contents(settings)
    assert_each_once(produced, expected)
    assert {e.source for e in produced} == {"backfill"}
    assert {(e.connection_id, e.account_id) for e in produced} == {(job.connection_id, "acme")}
    by_id = {str(e["id"]): e for e in expected}
    assert all(e.event == by_id[e.event_id] for e in produced), "events must be untouched"
    # Oldest first within each Kafka key (one customer's events stay in order).
    per_key: dict[bytes, list[int]] = {}
    for e in produced:
        per_key.setdefault(e.key(), []).append(int(e.event["created"]))
    assert all(v == sorted(v) for v in per_key.values())

    assert final.state == "done"
    assert final.events == len(expected)
    assert final.filter == "unfiltered"  # localstripe refuses types[]
    assert final.customers == len(activity.customers) + len(activity.no_email)
    assert final.pages >= len(expected) // FAST.page_size
    stored = await read_progress(redis, settings, job.connection_id)
    assert stored == final
    raw = (await redis.get(progress_key(settings, job.connection_id))).decode()
    assert API_KEY not in raw
    assert seen[-1] == final
    assert [p.events for p in seen] == sorted(p.events for p in seen)

    # The Customers list warmed the email cache: no look-up needed.
    resolver = EmailResolver(redis, settings, _never)
    some = next(iter(activity.customers))
    assert await resolver.email_for(job.connection_id, some) == \
        activity.customers[some].strip().lower()
    assert await resolver.email_for(job.connection_id, activity.no_email[0]) is None
    assert resolver.lookups == 0


async def _never(_connection_id: str) -> str | None:
    raise AssertionError("no key needed: everything is cached")


class FailingSink:
    """The real sink, until it has taken `allow` events; then Kafka is 'gone'."""

    def __init__(self, inner: KafkaEventSink, allow: int) -> None:
        self.inner, self.allow, self.calls = inner, allow, 0

    async def publish(self, event: RawEvent) -> None:
        self.calls += 1
        if self.calls > self.allow:
            raise SinkUnavailable("Kafka did not acknowledge: test outage")
        await self.inner.publish(event)


@pytest.mark.parametrize(("allow", "in_flight"), [(23, 100), (7, 1), (0, 100)])
async def test_restart_in_the_middle_produces_each_event_once(
        settings: Settings, seeded: tuple[str, Activity, list[dict[str, object]]],
        redis: aioredis.Redis, sink: KafkaEventSink, allow: int, in_flight: int) -> None:
    base, _, expected = seeded
    settings = _settings(settings, base)
    job = _job()
    # Small slices too, so that the cursor crosses slice boundaries.
    options = BackfillOptions(rate_per_s=200, settle_s=0, overlap_s=0, page_size=10, slice_cap=16,
                              max_in_flight=in_flight, warm_customers=False)

    with pytest.raises(SinkUnavailable):
        await run_backfill(job, settings=settings, sink=FailingSink(sink, allow),
                           redis=redis, options=options)
    failed = await read_progress(redis, settings, job.connection_id)
    assert failed is not None
    assert failed.state == "failed"
    assert failed.error is not None
    assert "SinkUnavailable" in failed.error
    assert failed.events == allow == len(await topic_contents(settings))
    assert failed.cursor is not None

    final = await run_backfill(job, settings=settings, sink=sink, redis=redis, options=options)
    assert final.state == "done"
    assert final.runs == 2
    assert final.events == len(expected)
    assert_each_once(await topic_contents(settings), expected)


async def test_cancelled_run_resumes_without_repeats(
        settings: Settings, seeded: tuple[str, Activity, list[dict[str, object]]],
        redis: aioredis.Redis, sink: KafkaEventSink) -> None:
    base, _, expected = seeded
    settings = _settings(settings, base)
    job = _job()
    gate = asyncio.Event()

    class SlowSink:
        calls = 0

        async def publish(self, event: RawEvent) -> None:
            SlowSink.calls += 1
            call = SlowSink.calls
            if call > 15:
                gate.set()
                await asyncio.sleep(3600)  # a Kafka that hangs: the run is stopped
            await sink.publish(event)
            if call > 10:
                # In Kafka, its ack still on the way when the run is stopped: the stop
                # waits for it (`STOP_GRACE_S`), or the cursor would not count an event
                # the topic holds, and the resume would publish it again.
                gate.set()
                await asyncio.sleep(0.5)

    task = asyncio.create_task(run_backfill(job, settings=settings, sink=SlowSink(),
                                            redis=redis, options=FAST))
    await asyncio.wait_for(gate.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stopped = await read_progress(redis, settings, job.connection_id)
    assert stopped is not None
    assert stopped.state == "failed"
    assert stopped.events == len(await topic_contents(settings)) >= 10

    await run_backfill(job, settings=settings, sink=sink, redis=redis, options=FAST)
    assert_each_once(await topic_contents(settings), expected)


async def test_finished_backfill_is_not_repeated_until_reset(
        settings: Settings, seeded: tuple[str, Activity, list[dict[str, object]]],
        redis: aioredis.Redis, sink: KafkaEventSink) -> None:
    base, _, expected = seeded
    settings = _settings(settings, base)
    job = _job()
    first = await run_backfill(job, settings=settings, sink=sink, redis=redis, options=FAST)
    again = await run_backfill(job, settings=settings, sink=sink, redis=redis, options=FAST)
    assert again == first
    assert len(await topic_contents(settings)) == len(expected)

    assert await reset_backfill(redis, settings, job.connection_id)
    redo = await run_backfill(job, settings=settings, sink=sink, redis=redis, options=FAST)
    assert redo.runs == 1
    assert redo.events == len(expected)
    assert len(await topic_contents(settings)) == 2 * len(expected)


async def test_a_second_concurrent_run_is_refused(
        settings: Settings, seeded: tuple[str, Activity, list[dict[str, object]]],
        redis: aioredis.Redis, sink: KafkaEventSink) -> None:
    base, _, _ = seeded
    settings = _settings(settings, base)
    job = _job()
    await redis.set(f"{progress_key(settings, job.connection_id)}:lock", "someone-else")
    with pytest.raises(BackfillBusy):
        await run_backfill(job, settings=settings, sink=sink, redis=redis, options=FAST)
    assert await read_progress(redis, settings, job.connection_id) is None
    assert await topic_contents(settings) == []
