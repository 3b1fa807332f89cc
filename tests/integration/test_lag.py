"""Consumer lag read from Kafka: committed offsets against the partitions' ends."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry

from common.settings import Settings
from common.topics import TopicSpec, ensure_topics
from segments.lag import ConsumerLagCollector, read_lag

pytestmark = pytest.mark.integration


async def _produce(settings: Settings, topic: str, n: int, *, transactional: bool) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all",
        enable_idempotence=True,
        transactional_id=f"lag-test-{uuid.uuid4()}" if transactional else None)
    await producer.start()
    try:
        if transactional:
            async with producer.transaction():
                for i in range(n):
                    await producer.send(topic, b"x%d" % i, partition=0)
        else:
            for i in range(n):
                await producer.send_and_wait(topic, b"x%d" % i, partition=0)
    finally:
        await producer.stop()


async def _commit(settings: Settings, group: str, tp: TopicPartition, offset: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


async def test_lag_counts_records_not_transaction_markers(settings: Settings) -> None:
    await ensure_topics(settings, (TopicSpec("lag"),))
    topic = settings.topic("lag")
    tp = TopicPartition(topic, 0)
    group = f"{settings.topic_prefix}group"

    # Never committed: everything from the beginning is lag, on every partition listed.
    await _produce(settings, topic, 10, transactional=True)
    lags = {(lag.topic, lag.partition): lag for lag in
            await read_lag(settings, group, [topic])}
    assert len(lags) == settings.partitions
    assert lags[(topic, 0)].lag == 10
    assert lags[(topic, 0)].committed is None
    assert all(lag.lag == 0 for key, lag in lags.items() if key != (topic, 0))

    # Caught up after a transaction: the commit marker at offset 10 is not lag.
    await _commit(settings, group, tp, 10)
    [lag] = [each for each in await read_lag(settings, group)
             if each.partition == 0]
    assert (lag.committed, lag.end, lag.lag) == (10, 11, 0)

    await _produce(settings, topic, 5, transactional=False)
    [lag] = [each for each in await read_lag(settings, group)
             if each.partition == 0]
    assert lag.lag == 5

    registry = CollectorRegistry()
    registry.register(ConsumerLagCollector(settings, group, [topic]))
    labels = {"group": group, "topic": topic, "partition": "0"}
    assert registry.get_sample_value("segments_consumer_lag_messages", labels) == 5
    assert registry.get_sample_value("segments_consumer_lag_up", {"group": group}) == 1


def test_collector_reports_down_when_kafka_does_not_answer() -> None:
    registry = CollectorRegistry()
    registry.register(ConsumerLagCollector(
        Settings(kafka_bootstrap_servers="127.0.0.1:1"), "g", timeout=1.0))
    assert registry.get_sample_value("segments_consumer_lag_up", {"group": "g"}) == 0
