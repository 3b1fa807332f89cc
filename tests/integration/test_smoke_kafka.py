"""The foundation works: a real broker round trip."""

from __future__ import annotations

import uuid

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from common.settings import Settings
from common.topics import TopicSpec, ensure_topics
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration


async def test_produce_consume_round_trip(settings: Settings) -> None:
    await ensure_topics(settings, (TopicSpec("smoke"),))
    topic = settings.topic("smoke")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, orjson.dumps({"i": i}), key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap_servers,
                                auto_offset_reset="earliest", group_id=f"g-{uuid.uuid4()}")
    await consumer.start()
    try:
        got: list[int] = []

        async def all_read() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            got.extend(orjson.loads(m.value)["i"] for msgs in batch.values() for m in msgs)
            return len(got) >= 10

        await async_wait_for(all_read, 30, what="10 messages")
        assert got == list(range(10))
    finally:
        await consumer.stop()
