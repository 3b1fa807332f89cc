"""Negative assertions without sleeping: "nothing more came" is checked at end offsets.

A test that wants to show an extra (late, duplicate) record did not appear must first
know that the input was fully processed, then read the output up to its end:

- `wait_processed`: until a consumer group has committed every partition of its
  source topics up to their end offsets. Under exactly-once the offsets commit in the
  same transaction as the output, so everything the input caused is then written;
  processing may write to its own sources (facts, control), so the end offsets are
  taken again until they stop moving.
- `read_to_end`: every committed record of a topic up to its high watermark taken now.
  A read_committed reader cannot pass a transaction still open or whose markers are
  not written yet, so this waits for those instead of stopping short of them (reading
  to the last stable offset would). Every record read is checked against its topic's
  schema (`tests/record_schemas.py`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from aiokafka import TopicPartition

from common import kafka
from common.settings import Settings
from tests.record_schemas import check_records
from tests.waiting import TimedOut, async_wait_for


async def _partitions(consumer: Any, topics: Iterable[str]) -> list[TopicPartition]:
    found = []
    for topic in topics:
        numbers = consumer.partitions_for_topic(topic)
        if not numbers:
            await consumer._client.force_metadata_update()
            numbers = consumer.partitions_for_topic(topic) or set()
        if not numbers:
            raise AssertionError(f"topic {topic} does not exist")
        found += [TopicPartition(topic, partition) for partition in sorted(numbers)]
    return found


async def end_offsets(settings: Settings, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """The high watermark of every partition of `topics` (transactions included)."""
    consumer = kafka.consumer(settings, isolation_level="read_uncommitted")
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topics)
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def committed_offsets(settings: Settings, group: str,
                            partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The group's committed offset of each partition (-1 where it committed none)."""
    admin = kafka.admin(settings)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group, partitions=partitions)
        return {tp: found[tp].offset if tp in found else -1 for tp in partitions}
    finally:
        await admin.close()


async def wait_processed(settings: Settings, group: str, topics: Iterable[str],
                         timeout: float = 60.0) -> dict[TopicPartition, int]:
    """Until `group` has committed all of `topics` to their end offsets, and those did
    not move meanwhile; returns the end offsets."""
    topics = list(topics)
    deadline = time.monotonic() + timeout
    ends = await end_offsets(settings, topics)
    behind: dict[str, tuple[int, int]] = {}
    while True:
        async def caught_up(ends: dict[TopicPartition, int] = ends) -> bool:
            done = await committed_offsets(settings, group, list(ends))
            # An empty partition has nothing to commit (-1): it is caught up.
            behind.clear()
            behind.update({f"{tp.topic}:{tp.partition}": (done[tp], end)
                           for tp, end in ends.items() if end > 0 and done[tp] < end})
            return not behind

        try:
            await async_wait_for(caught_up, max(0.0, deadline - time.monotonic()),
                                 interval=0.2)
        except TimedOut:
            raise TimedOut(f"{group} did not commit its inputs to their end in {timeout}s; "
                           f"behind (committed, end): {behind}") from None
        again = await end_offsets(settings, topics)
        if again == ends:
            return ends
        ends = again


async def read_to_end(settings: Settings, topic: str, timeout: float = 60.0) -> list[Any]:
    """Every committed record of `topic`, from the beginning to its high watermark."""
    consumer = kafka.consumer(settings, enable_auto_commit=False,
                              isolation_level="read_committed", auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = await _partitions(consumer, [topic])
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await end_offsets(settings, [topic])
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while True:
            positions = {tp: await consumer.position(tp) for tp in partitions}
            if all(positions[tp] >= ends[tp] for tp in partitions):
                check_records(records)
                return records
            if time.monotonic() > deadline:
                raise TimedOut(f"{topic}: at {positions}, not read to {ends} in {timeout}s "
                               "(a transaction left open?)")
            batch = await consumer.getmany(*partitions, timeout_ms=500)
            for msgs in batch.values():
                records.extend(msgs)
    finally:
        await consumer.stop()
