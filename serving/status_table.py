"""Segment status for the query API: `segments.status` followed into memory.

Every membership partition writes, in the transaction of a rule change, the version of
the rule it has applied (`stream.status`). The topic is compacted, one partition and
small (segments x partitions records), so each API process reads it whole from the
beginning and then follows it, like a global table; nothing is kept in Redis, so a
read-model rebuild or the loss of Redis costs nothing here.

A segment is `ready` when every one of the `partitions` membership partitions reports
the version in force, `populating` otherwise (also before this table has caught up).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Literal

from aiokafka import TopicPartition

from common import kafka
from common.settings import Settings
from common.topics import STATUS_TOPIC
from stream.status import StatusMarker

log = logging.getLogger(__name__)

Status = Literal["populating", "ready"]
POPULATING: Final = "populating"
READY: Final = "ready"


class StatusTable:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.partitions = settings.partitions
        self.topic = settings.topic(STATUS_TOPIC)
        #: (account, segment) -> membership partition -> rule version applied.
        self.applied: dict[tuple[str, str], dict[int, int]] = {}
        #: Set once the topic was read to the end it had when following started.
        self.caught_up = asyncio.Event()
        self._stopping = asyncio.Event()

    def status(self, account_id: str, segment_id: str, version: int | None) -> Status:
        if version is None or not self.caught_up.is_set():
            return POPULATING
        applied = self.applied.get((account_id, segment_id), {})
        done = all(applied.get(partition) == version for partition in range(self.partitions))
        return READY if done else POPULATING

    def apply(self, key: bytes, value: bytes | None) -> None:
        try:
            marker = StatusMarker.from_record(key, value)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("status: skipping a malformed marker: %s", exc)
            return
        ref = (marker.account_id, marker.segment_id)
        if marker.rule_version is None:
            partitions = self.applied.get(ref, {})
            partitions.pop(marker.partition, None)
            if not partitions:
                self.applied.pop(ref, None)
        else:
            self.applied.setdefault(ref, {})[marker.partition] = marker.rule_version

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Follow the topic until `stop()`; waits for the topic if no worker made it yet."""
        consumer = kafka.consumer(
            self.settings, group_id=None,
            enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            while self.topic not in await consumer.topics():
                if await self._stopped_within(1.0):
                    return
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while not self._stopping.is_set():
                batches = await consumer.getmany(tp, timeout_ms=200)
                for record in batches.get(tp, []):
                    if record.key is not None:
                        self.apply(record.key, record.value)
                if not self.caught_up.is_set() and await consumer.position(tp) >= end:
                    self.caught_up.set()
        finally:
            await consumer.stop()

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True
