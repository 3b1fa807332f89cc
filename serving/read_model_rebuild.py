"""Rebuild the Redis read model from the compacted topics, while everything runs.

1. Note the end offsets of `segments.membership` (where the live writer will replay
   from), then of `segments.members` and `segments.rules` (the snapshot's end).
2. Read both compacted topics from the beginning to those ends into a fresh generation
   of keys; readers keep being served the old one meanwhile.
3. Switch the served generation and publish the replay offsets in one Redis script, then
   delete the old generation's keys.

The live writer is then fenced off the old generation and re-applies membership changes
from the offsets of step 1. Each member's state is the last change applied in order, so
re-applying from any point the snapshot already covers converges to the exact state; a
member may show an older state for the moment the replay takes. This relies on the
membership agents writing a change's `segments.members` record in the same transaction
as (or before) its `segments.membership` event.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from common import kafka
from common.settings import Settings
from common.topics import MEMBERS_TOPIC, MEMBERSHIP_TOPIC, RULES_TOPIC
from serving.errors import ServingError
from serving.read_model import (
    Namespace,
    ReadModelStore,
    RecordError,
    Write,
    write_from_member_record,
    write_from_rule_record,
)
from serving.read_model_agent import replay_field

log = logging.getLogger(__name__)


class RebuildError(ServingError, RuntimeError):
    pass


@dataclass
class RebuildReport:
    generation: str
    previous_generation: str = ""
    records_read: int = 0
    records_rejected: int = 0
    members: int = 0
    rules: int = 0
    segments: int = 0
    old_keys_deleted: int = 0
    seconds: float = 0.0
    replay_from: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"read model rebuilt as generation {self.generation} in {self.seconds:.1f}s: "
            f"{self.members} members in {self.segments} segments, {self.rules} rules "
            f"({self.records_read} records read, {self.records_rejected} rejected); "
            f"generation {self.previous_generation} removed ({self.old_keys_deleted} keys)"
        )


async def _partitions(settings: Settings, *topics: str) -> dict[str, list[TopicPartition]]:
    admin = kafka.admin(settings)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    found: dict[str, list[TopicPartition]] = {}
    for doc in described:
        if doc["error_code"] != 0 or not doc["partitions"]:
            raise RebuildError(f"cannot read topic {doc['topic']}: error {doc['error_code']}")
        numbers = sorted(entry["partition"] for entry in doc["partitions"])
        found[doc["topic"]] = [TopicPartition(doc["topic"], n) for n in numbers]
    return found


async def rebuild(settings: Settings, redis: Any, *, batch_size: int = 2000) -> RebuildReport:
    started = time.monotonic()
    ns = Namespace(settings.topic_prefix)
    store = ReadModelStore(redis, ns)
    report = RebuildReport(generation=uuid.uuid4().hex[:12])
    members_topic = settings.topic(MEMBERS_TOPIC)
    rules_topic = settings.topic(RULES_TOPIC)
    membership_topic = settings.topic(MEMBERSHIP_TOPIC)
    partitions = await _partitions(settings, membership_topic, members_topic, rules_topic)
    consumer = kafka.consumer(
        settings,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        replay = await consumer.end_offsets(partitions[membership_topic])
        snapshot_tps = partitions[members_topic] + partitions[rules_topic]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(snapshot_tps)
        for tp in snapshot_tps:
            if tp.topic != members_topic:
                replay[tp] = ends[tp]
        report.replay_from = {replay_field(tp.topic, tp.partition): o for tp, o in replay.items()}
        consumer.assign(snapshot_tps)
        await consumer.seek_to_beginning(*snapshot_tps)
        await _load(consumer, store, report, ends, members_topic, batch_size)
    except BaseException:
        with contextlib.suppress(Exception):  # keep the original error
            await store.delete_generation(report.generation)
        raise
    finally:
        await consumer.stop()
    report.previous_generation = await store.switch_generation(
        report.generation, report.replay_from
    )
    report.segments = int(await redis.scard(ns.segments(report.generation)))
    report.old_keys_deleted = await store.delete_generation(report.previous_generation)
    report.seconds = time.monotonic() - started
    log.info(report.summary())
    return report


async def _load(
    consumer: AIOKafkaConsumer,
    store: ReadModelStore,
    report: RebuildReport,
    ends: dict[TopicPartition, int],
    members_topic: str,
    batch_size: int,
) -> None:
    """Apply both compacted topics up to `ends` to the new generation (no fence)."""
    remaining = {tp for tp, end in ends.items() if end > 0}
    while remaining:
        for tp in list(remaining):
            if await consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)
                consumer.pause(tp)
        if not remaining:
            break
        batch = await consumer.getmany(timeout_ms=500, max_records=batch_size)
        writes: list[Write] = []
        for tp, records in batch.items():
            for record in records:
                if record.offset >= ends[tp]:
                    continue
                report.records_read += 1
                try:
                    if tp.topic == members_topic:
                        writes.append(write_from_member_record(record.key, record.value))
                    else:
                        writes.append(write_from_rule_record(record.key, record.value))
                except RecordError as exc:
                    report.records_rejected += 1
                    log.warning("rebuild: skipping %s[%d]@%d: %s",
                                tp.topic, tp.partition, record.offset, exc)
        await store.apply(writes, report.generation, fence=False)
    gen = report.generation
    ns = store.ns
    refs = await store.redis.smembers(ns.segments(gen))
    async with store.redis.pipeline(transaction=False) as pipe:
        for raw in refs:
            account, _, segment = (raw.decode() if isinstance(raw, bytes) else raw).partition(":")
            pipe.zcard(ns.members(gen, account, segment))
            pipe.exists(ns.rule(gen, account, segment))
        replies = await pipe.execute()
    report.members = sum(int(r) for r in replies[0::2])
    report.rules = sum(int(r) for r in replies[1::2])
