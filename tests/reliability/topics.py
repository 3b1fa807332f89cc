"""Reading whole topics back, to the end offsets taken when the read starts.

Every record read from a public topic is checked against its schema
(`tests/record_schemas.py`), aborted ones included when they are read too.
"""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.record_schemas import check_records


async def list_topics(bootstrap: str, prefix: str = "") -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sorted(t for t in await admin.list_topics() if t.startswith(prefix))
    finally:
        await admin.close()


async def read_topic(bootstrap: str, topic: str, *, committed_only: bool = True,
                     timeout: float = 60.0) -> list[Any]:
    """Every record of `topic` from the beginning to its current end.

    `committed_only=False` also returns records of aborted transactions (what a scan
    for leaked secrets must see too).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False,
        isolation_level="read_committed" if committed_only else "read_uncommitted")
    await consumer.start()
    try:
        numbers = consumer.partitions_for_topic(topic)
        if not numbers:
            await consumer._client.force_metadata_update()
            numbers = consumer.partitions_for_topic(topic) or set()
        partitions = [TopicPartition(topic, partition) for partition in sorted(numbers)]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while True:
            positions = {tp: await consumer.position(tp) for tp in partitions}
            if all(positions[tp] >= ends[tp] for tp in partitions):
                check_records(records)
                return records
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end in {timeout}s")
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                records.extend(msgs)
    finally:
        await consumer.stop()
