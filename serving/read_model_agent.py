"""The read-model writer: `segments.membership` and `segments.rules` into Redis.

A plain aiokafka consumer: it keeps no table, only moves records
into Redis. Each batch is applied in one pipeline, then its offsets are committed, then
it is published on the live feed. A crash between apply and commit re-applies the batch,
which the idempotent writes make harmless: at-least-once delivery, exact state.

Rebuilds (`read_model_rebuild`) write a new generation while this keeps running. Every
write names the generation it is for and Redis refuses it once another is served; the
writer then rewinds the batch and takes the rebuild's replay offsets for its partitions
(committing them before deleting the marker, so a rebalance cannot lose one), and so
re-applies every change the snapshot may lack.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError

from common import kafka
from common.settings import Settings
from common.topics import MEMBERSHIP_TOPIC, RULES_TOPIC
from serving.change_feed import Event, change_event, publish, rule_event
from serving.metrics import ServingMetrics
from serving.read_model import (
    FENCED,
    INITIAL_GENERATION,
    Namespace,
    ReadModelStore,
    RecordError,
    RuleWrite,
    Write,
    decode_change,
    write_from_change,
    write_from_rule_record,
)
from stream.changes import MembershipChange

log = logging.getLogger(__name__)

Batch = dict[TopicPartition, list[Any]]


def group_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}segments-read-model"


def replay_field(topic: str, partition: int) -> str:
    """The field of `seg:replay` naming one input partition."""
    return f"{topic}:{partition}"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, agent: ReadModelAgent) -> None:
        self.agent = agent

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Nothing to flush: every applied batch is committed before the next poll."""

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.agent.claim_pending = True
        self.agent.assigned.set()


class ReadModelAgent:
    def __init__(
        self,
        settings: Settings,
        redis: Any,
        metrics: ServingMetrics,
        *,
        batch_size: int = 1000,
        group: str | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.metrics = metrics
        self.batch_size = batch_size
        self.group = group or group_id(settings)
        self.ns = Namespace(settings.topic_prefix)
        self.store = ReadModelStore(redis, self.ns)
        self.membership_topic = settings.topic(MEMBERSHIP_TOPIC)
        self.rules_topic = settings.topic(RULES_TOPIC)
        self.generation = INITIAL_GENERATION
        self.claim_pending = True
        #: Set once the group gave this process its partitions (tests wait on it).
        self.assigned = asyncio.Event()
        self._stopping = asyncio.Event()
        self._checked_at = 0.0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Until `stop()`; Kafka or Redis failures raise (the process must stop)."""
        consumer = kafka.consumer(
            self.settings,
            group_id=self.group,
            client_id=f"{self.settings.topic_prefix}segments-api",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Membership is written in Kafka transactions: never show an aborted change.
            isolation_level="read_committed",
        )
        consumer.subscribe([self.membership_topic, self.rules_topic], listener=_Rebalance(self))
        await consumer.start()
        try:
            self.generation = await self.store.current_generation()
            log.info("read model: consuming %s and %s into generation %s",
                     self.membership_topic, self.rules_topic, self.generation)
            while not self._stopping.is_set():
                batch: Batch = await consumer.getmany(timeout_ms=200, max_records=self.batch_size)
                await self._every_second(consumer)
                if self.claim_pending:
                    rewound = await self._claim_replay(consumer)
                    batch = {tp: msgs for tp, msgs in batch.items() if tp not in rewound}
                if batch:
                    await self._apply(consumer, batch)
        finally:
            await consumer.stop()

    def _decode(self, topic: str, record: Any) -> tuple[Write, MembershipChange | None]:
        if topic == self.membership_topic:
            change = decode_change(record.value)
            return write_from_change(change), change
        return write_from_rule_record(record.key, record.value), None

    async def _apply(self, consumer: AIOKafkaConsumer, batch: Batch) -> None:
        started = time.perf_counter()
        items: list[tuple[Write, MembershipChange | None]] = []
        for tp, records in batch.items():
            for record in records:
                try:
                    items.append(self._decode(tp.topic, record))
                except RecordError as exc:
                    log.warning("read model: skipping %s[%d]@%d: %s",
                                tp.topic, tp.partition, record.offset, exc)
                    name = MEMBERSHIP_TOPIC if tp.topic == self.membership_topic else RULES_TOPIC
                    self.metrics.records_rejected.labels(topic=name).inc()
        applied = await self.store.apply([write for write, _ in items], self.generation)
        if any(a.member_count == FENCED for a in applied):
            await self._fenced(consumer, batch)
            return
        try:
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
        except CommitFailedError as exc:
            # A rebalance took partitions away: their next owner re-applies (idempotent).
            log.warning("read model: commit failed after a rebalance: %s", exc)
        events: list[Event] = []
        for (write, change), (count, seq) in zip(items, applied, strict=True):
            if change is not None:
                self.metrics.changes_applied.labels(cause=change.cause, change=change.change).inc()
                events.append(change_event(change, count, seq))
            elif isinstance(write, RuleWrite):
                kind = "delete" if write.doc is None else "upsert"
                self.metrics.rules_applied.labels(kind=kind).inc()
                events.append(
                    rule_event(write.account_id, write.segment_id, write.doc, count, seq)
                )
        await publish(self.redis, self.ns.feed, events)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _fenced(self, consumer: AIOKafkaConsumer, batch: Batch) -> None:
        """A rebuild switched generations: rewind this batch and take its replay offsets."""
        self.metrics.fenced.inc()
        previous, self.generation = self.generation, await self.store.current_generation()
        log.info("read model: generation %s replaced by %s; rewinding", previous, self.generation)
        for tp, records in batch.items():
            consumer.seek(tp, records[0].offset)
        self.claim_pending = True

    async def _claim_replay(self, consumer: AIOKafkaConsumer) -> set[TopicPartition]:
        """Seek assigned partitions back to a rebuild's replay offsets; returns those moved."""
        self.claim_pending = False
        self.generation = await self.store.current_generation()
        markers: dict[bytes, bytes] = await self.redis.hgetall(self.ns.replay)
        if not markers:
            return set()
        rewound: set[TopicPartition] = set()
        for tp in consumer.assignment():
            field = replay_field(tp.topic, tp.partition)
            raw = markers.get(field.encode())
            if raw is None:
                continue
            target = int(raw)
            try:
                if target < await consumer.position(tp):
                    consumer.seek(tp, target)
                    await consumer.commit({tp: target})
                    rewound.add(tp)
            except (CommitFailedError, IllegalStateError) as exc:
                # The partition moved to another process, which takes the marker instead.
                log.warning("read model: %s reassigned before its replay: %s", field, exc)
                continue
            await self.redis.hdel(self.ns.replay, field)
            log.info("read model: replaying %s from offset %d", field, target)
        return rewound

    async def _every_second(self, consumer: AIOKafkaConsumer) -> None:
        """Notice a rebuild even when no record arrives to be fenced; update the lag."""
        now = time.monotonic()
        if now - self._checked_at < 1.0:
            return
        self._checked_at = now
        if await self.store.current_generation() != self.generation:
            self.claim_pending = True
        await self._update_lag(consumer)

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        lag = {self.membership_topic: 0, self.rules_topic: 0}
        for tp in consumer.assignment():
            end = consumer.last_stable_offset(tp)
            if end is None:
                end = consumer.highwater(tp)
            if end is None:
                continue
            try:
                position = await consumer.position(tp)
            except IllegalStateError:  # revoked meanwhile
                continue
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end - position)
        self.metrics.lag.labels(topic=MEMBERSHIP_TOPIC).set(lag[self.membership_topic])
        self.metrics.lag.labels(topic=RULES_TOPIC).set(lag[self.rules_topic])
