"""A compacted topic followed into memory, with read-your-writes: `segments.connections`.

`CompactedLog` keeps one idempotent `acks=all` producer and one consumer (no group:
every replica reads every record) on a compacted topic. At start it reads the topic to
the end offsets it found, handing each record to `apply` in offset order, then sets
`loaded` and keeps following, so several processes converge on the same table. A
`write` returns once the broker acknowledged the record AND this process's follower
applied it, so a caller that wrote a connection can use it at once.

Everything that mutates the caller's state runs in the follower task, in topic order:
`apply` for each record, `idle` every `idle_interval` seconds (the connection store
checks its Redis cache there). Kafka away at start: the task retries with a backoff;
`loaded` stays unset and `write` raises `LogUnavailable` until it connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from common import kafka
from common.settings import Settings
from common.topics import TopicSpec, ensure_topics
from connectors.errors import ConnectorError

log = logging.getLogger(__name__)

#: key, value (None: a tombstone), offset.
Apply = Callable[[str, bytes | None, int], Awaitable[None]]
#: Called once, connected, before the first read, when the topic has never held a record:
#: may write records (with the `produce` it is given) that the first load then reads.
Seed = Callable[[Callable[[str, bytes | None], Awaitable[int]]], Awaitable[None]]


class LogUnavailable(ConnectorError, RuntimeError):
    """The record was not acknowledged by Kafka (or no producer is connected)."""

    retriable = True


class CompactedLog:
    def __init__(
        self,
        settings: Settings,
        spec: TopicSpec,
        *,
        apply: Apply,
        on_loaded: Callable[[], Awaitable[None]] | None = None,
        idle: Callable[[], Awaitable[None]] | None = None,
        seed: Seed | None = None,
        idle_interval: float = 1.0,
        write_timeout: float = 10.0,
        retry_interval: float = 0.5,
        max_retry_interval: float = 5.0,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.topic = settings.topic(spec.name)
        self._apply = apply
        self._on_loaded = on_loaded
        self._idle = idle
        self._seed = seed
        self.idle_interval = idle_interval
        self.write_timeout = write_timeout
        self.retry_interval = retry_interval
        self.max_retry_interval = max_retry_interval
        #: Set once the table holds everything the topic held when this process started.
        self.loaded = asyncio.Event()
        self._producer: Any = None
        self._consumer: Any = None
        #: partition -> next offset to apply.
        self._positions: dict[int, int] = {}
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin connecting and loading in the background; returns at once."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"follow-{self.topic}")

    async def wait_loaded(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.loaded.wait(), timeout)
        return self.loaded.is_set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_clients()

    async def _close_clients(self) -> None:
        producer, self._producer = self._producer, None
        consumer, self._consumer = self._consumer, None
        for client in (producer, consumer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()

    # -- writing -------------------------------------------------------------------

    async def write(self, key: str, value: bytes | None) -> int:
        """Append a record (None: tombstone); returns its offset once applied here.

        Raises `LogUnavailable` when Kafka did not acknowledge it: then nothing was
        stored. Acknowledged but not applied within `write_timeout` (the follower is
        behind): logged and returned all the same, the record is durable.
        """
        partition, offset = await self._produce(key, value)
        try:
            async with asyncio.timeout(self.write_timeout):
                async with self._progress:
                    await self._progress.wait_for(
                        lambda: self._positions.get(partition, 0) > offset)
        except TimeoutError:
            log.warning("%s: record at offset %d acknowledged but not yet applied here",
                        self.topic, offset)
        return offset

    async def _produce(self, key: str, value: bytes | None) -> tuple[int, int]:
        from aiokafka.errors import KafkaError

        producer = self._producer
        if producer is None:
            raise LogUnavailable(f"not connected to Kafka (topic {self.topic})")
        try:
            meta = await asyncio.wait_for(
                producer.send_and_wait(self.topic, value, key=key.encode()),
                self.write_timeout)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise LogUnavailable(
                f"Kafka did not acknowledge the write to {self.topic}: {type(exc).__name__}"
            ) from exc
        return int(meta.partition), int(meta.offset)

    async def _seed_produce(self, key: str, value: bytes | None) -> int:
        return (await self._produce(key, value))[1]

    # -- following -----------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.retry_interval
        while True:
            try:
                ends = await self._connect()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Kafka away or refusing: try again later
                await self._close_clients()
                log.warning("%s: not connected (%s); retrying in %.1fs",
                            self.topic, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_interval)
        started = time.monotonic()
        while any(self._positions[partition] < end for partition, end in ends.items()):
            await self._poll(1000)
        if self._on_loaded is not None:
            await self._on_loaded()
        self.loaded.set()
        log.info("%s: loaded to offsets %s in %.2fs", self.topic, ends,
                 time.monotonic() - started)
        next_idle = time.monotonic() + self.idle_interval
        while True:
            try:
                await self._poll(200)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the consumer reconnects by itself; keep going
                log.warning("%s: read failed (%s)", self.topic, type(exc).__name__)
                await asyncio.sleep(self.retry_interval)
            if self._idle is not None and time.monotonic() >= next_idle:
                await self._idle()
                next_idle = time.monotonic() + self.idle_interval

    async def _connect(self) -> dict[int, int]:
        """Producer and consumer up, positioned at the start; returns the end offsets."""
        from aiokafka import TopicPartition

        await ensure_topics(self.settings, (self.spec,))
        self._producer = kafka.producer(
            self.settings, acks="all", enable_idempotence=True,
            request_timeout_ms=int(self.write_timeout * 1000))
        await self._producer.start()
        self._consumer = kafka.consumer(
            self.settings, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=100)
        await self._consumer.start()
        numbers = self._consumer.partitions_for_topic(self.topic) or {0}
        tps = [TopicPartition(self.topic, partition) for partition in sorted(numbers)]
        self._consumer.assign(tps)
        if self._positions:  # reconnecting: go on from where this process was
            for tp in tps:
                self._consumer.seek(tp, self._positions.get(tp.partition, 0))
        else:
            await self._consumer.seek_to_beginning(*tps)
            self._positions = {tp.partition: 0 for tp in tps}
        ends = await self._consumer.end_offsets(tps)
        if self._seed is not None and not any(ends.values()):
            await self._seed(self._seed_produce)
            ends = await self._consumer.end_offsets(tps)
        self._seed = None
        return {tp.partition: int(end) for tp, end in ends.items()}

    async def _poll(self, timeout_ms: int) -> None:
        consumer = self._consumer
        batch = await consumer.getmany(timeout_ms=timeout_ms, max_records=1000)
        for tp, records in batch.items():
            for record in records:
                if record.key is None:
                    log.error("%s: record at offset %d has no key; skipped",
                              self.topic, record.offset)
                else:
                    await self._apply(record.key.decode(errors="replace"), record.value,
                                      record.offset)
                self._positions[tp.partition] = record.offset + 1
        # Compaction leaves gaps: the position, not the last offset, says how far we are.
        for tp in consumer.assignment():
            self._positions[tp.partition] = max(self._positions.get(tp.partition, 0),
                                                await consumer.position(tp))
        async with self._progress:
            self._progress.notify_all()
