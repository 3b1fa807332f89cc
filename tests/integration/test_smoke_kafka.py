"""The foundation works: a real broker round trip, and Faust exactly-once on it."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from segments.settings import Settings
from segments.topics import TopicSpec, ensure_topics
from tests.faust_runner import running
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


async def test_faust_table_exactly_once(settings: Settings, tmp_path: Path) -> None:
    """A table-backed agent under exactly_once sends to a topic it does not consume."""
    import faust

    from stream.eos import install, processing

    install()
    await ensure_topics(settings, (TopicSpec("smoke.in"), TopicSpec("smoke.out")))
    app = faust.App(
        f"{settings.topic_prefix}smoke",
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        processing_guarantee="exactly_once",
        store="memory://",
        datadir=str(tmp_path),
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        web_enabled=False,
        broker_commit_interval=0.2,
    )
    source = app.topic(settings.topic("smoke.in"), key_serializer="raw",
                       value_serializer="raw", partitions=settings.partitions)
    sink = app.topic(settings.topic("smoke.out"), key_serializer="raw", value_serializer="raw")
    counts = app.Table("counts", default=int, partitions=settings.partitions)

    @app.agent(source)
    async def count(stream):  # type: ignore[no-untyped-def]
        async for key, _value in stream.items():
            async with processing(app):
                name = key.decode()
                counts[name] += 1
                await sink.send(key=key, value=b"%d" % counts[name], force=True)

    async with running(app):
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
        await producer.start()
        try:
            for i in range(40):
                await producer.send_and_wait(settings.topic("smoke.in"), b"v",
                                             key=b"k%d" % (i % 4))
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(settings.topic("smoke.out"),
                                    bootstrap_servers=settings.kafka_bootstrap_servers,
                                    auto_offset_reset="earliest", isolation_level="read_committed",
                                    group_id=f"g-{uuid.uuid4()}")
        await consumer.start()
        try:
            latest: dict[bytes, list[int]] = {}

            async def all_committed() -> bool:
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    for m in msgs:
                        assert m.key is not None
                        assert m.value is not None
                        latest.setdefault(m.key, []).append(int(m.value))
                return sum(len(v) for v in latest.values()) >= 40

            await async_wait_for(all_committed, 60, what="40 committed outputs")
        finally:
            await consumer.stop()
    # Each key's running count, exactly once and in order.
    assert latest == {b"k%d" % k: list(range(1, 11)) for k in range(4)}
