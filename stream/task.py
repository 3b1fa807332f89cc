"""One task: the work of one partition number, in one transaction per batch.

Its records (of every co-partitioned topic), its state writes and its output are sent
by the task's producer and committed with its input offsets (see `stream.runtime`).

A task that finds it no longer owns its partition, or that its transaction was aborted
under it (`ProducerFenced`, `InvalidProducerEpoch`, a failed offset commit, a producer
left outside its transaction by an aborted one), is *lost*, as Kafka Streams calls a
migrated task: nothing it did since its last commit counts, so its state is dropped and
the worker rejoins the group instead of exiting. Exiting would make the orchestrator
restart it, and every restart is one more rebalance for the whole group: under load
that turned one fenced task into a storm of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any, Protocol

from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    CommitFailedError,
    GroupAuthorizationFailedError,
    IllegalOperation,
    InvalidProducerEpoch,
    KafkaError,
    ProducerFenced,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from stream.outbox import Outbox, Processor
from stream.partitioning import partition_for

log = logging.getLogger(__name__)

#: Records a task processes in one go (and fetched per `getmany`).
FETCH_RECORDS = 2000
#: Batches a task may have queued before its partitions are paused (backpressure).
MAX_QUEUED_BATCHES = 8

#: Errors that say the task's partition moved on without it, or its transaction is gone.
MIGRATED_ERRORS: tuple[type[BaseException], ...] = (
    ProducerFenced, InvalidProducerEpoch, CommitFailedError, IllegalOperation)
#: Kafka errors no rejoin can mend: the worker stops and says why.
FATAL_KAFKA_ERRORS: tuple[type[BaseException], ...] = (
    TopicAuthorizationFailedError, GroupAuthorizationFailedError,
    ClusterAuthorizationFailedError, TransactionalIdAuthorizationFailed)


def migrated(exc: BaseException) -> bool:
    """Lose the task and rejoin, rather than exit: the partition moved, the transaction
    was aborted, or the cluster failed the task's writes (a broker lost mid-transaction
    answers `UnknownError` ending it). Nothing the task did since its last commit
    counts either way; a fresh producer and the partition's committed state start over."""
    if isinstance(exc, MIGRATED_ERRORS):
        return True
    return isinstance(exc, KafkaError) and not isinstance(exc, FATAL_KAFKA_ERRORS)


class TaskHost(Protocol):
    """What a task needs of the runtime that runs it (`stream.runtime.StreamRuntime`)."""

    handler: Processor
    group_id: str
    exactly_once: bool
    commit_interval: float
    tick_interval: float
    consumer: Any
    partition_counts: dict[str, int]
    failed: BaseException | None

    async def partition_count(self, topic: str, producer: Any) -> int: ...

    def fail(self, exc: BaseException) -> None: ...

    def lose(self, task: Task, exc: BaseException) -> None: ...

    def resume_fetching(self, task: Task) -> None: ...


class Task:
    """The work of one partition number: a queue of fetched batches and a loop."""

    def __init__(self, runtime: TaskHost, partition: int, producer: Any) -> None:
        self.runtime = runtime
        self.partition = partition
        self.producer = producer
        #: (topic-partition, records, the consumer's position after them)
        self.queue: asyncio.Queue[tuple[Any, list[Any], int]] = asyncio.Queue()
        self.paused: set[Any] = set()
        #: Next offset to process per topic-partition; older records are replays.
        self.next_offset: dict[Any, int] = {}
        self.uncommitted: dict[Any, int] = {}
        #: Sent batches: their acknowledgement, and how many records each holds.
        self.pending: list[tuple[asyncio.Future[Any], int]] = []
        #: (topic, partition) -> offset after this task's last durable record there.
        self.written: dict[tuple[str, int], int] = {}
        #: At-least-once: the latest background acknowledgement and offset commit.
        self.committing: asyncio.Task[None] | None = None
        self.stopping = False
        self.busy = False
        #: Stopped with everything it processed durable (its state may be kept).
        self.clean = False
        self.lost = False
        self.task: asyncio.Task[None] | None = None
        self.txn_started: float | None = None
        self.last_tick = 0.0

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"segments-task-{self.partition}")

    async def stop(self) -> None:
        """Finish the batch in hand, commit all processed, and end: nothing replays
        (queued batches are dropped uncommitted: the next owner reads them)."""
        self.stopping = True
        if self.task is None:
            return
        if idle := not self.busy:
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if idle and self.runtime.failed is None and not self.lost:
            # Cancelled while waiting: under at-least-once its last offsets may wait
            # for the commit interval (under exactly-once nothing is open when idle).
            try:
                await self._commit(final=True)
                self.clean = True
            except Exception as exc:  # the partition is read again, as after a crash
                log.warning("partition %d: final commit failed: %r", self.partition, exc)
        elif self.committing is not None:  # its commits still land
            with contextlib.suppress(Exception):
                await self.committing
        self.clean = self.clean and self.runtime.failed is None and not self.lost

    async def _run(self) -> None:
        runtime = self.runtime
        try:
            while not self.stopping:
                item = await self._next(self._wait_seconds())
                self.busy = True
                out = Outbox()
                count = 0
                while item is not None:
                    count += await self._process(item, out)
                    if count >= FETCH_RECORDS or self.queue.empty():
                        break
                    item = self.queue.get_nowait()
                self._maybe_resume()
                now = time.monotonic()
                if now - self.last_tick >= runtime.tick_interval:
                    self.last_tick = now
                    await runtime.handler.tick(self.partition, out)
                runtime.handler.state_writes(self.partition, out)
                await self._send(out)
                if self._commit_due():
                    await self._commit()
                self.busy = False
            self.busy = True
            await self._commit(final=True)
            self.clean = True
        except asyncio.CancelledError:
            if self.busy:
                raise
        except Exception as exc:
            self._failed(exc, "failed")
        finally:
            self.busy = False

    def _failed(self, exc: BaseException, what: str) -> None:
        """Lose the task (the worker rejoins) or fail the runtime (the worker exits)."""
        if migrated(exc):
            self.lost = True
            self.runtime.lose(self, exc)
        else:
            log.error("partition %d: %s: %r", self.partition, what, exc, exc_info=exc)
            self.runtime.fail(exc)

    def _wait_seconds(self) -> float:
        runtime = self.runtime
        waits = [runtime.tick_interval - (time.monotonic() - self.last_tick)]
        if self.txn_started is not None:
            waits.append(runtime.commit_interval - (time.monotonic() - self.txn_started))
        return max(0.0, min(waits))

    async def _next(self, timeout: float) -> tuple[Any, list[Any], int] | None:
        if not self.queue.empty():
            return self.queue.get_nowait()
        try:
            async with asyncio.timeout(timeout):
                return await self.queue.get()
        except TimeoutError:
            return None

    async def _process(self, item: tuple[Any, list[Any], int], out: Outbox) -> int:
        tp, records, position = item
        start = self.next_offset.get(tp)
        if start is not None:
            records = [r for r in records if r.offset >= start]
        if not records:
            return 0
        await self.runtime.handler.process(self.partition, tp.topic, records, out)
        # The position, not the last offset + 1: it is past the transaction markers
        # that follow the records, so a caught-up group shows no lag.
        self.next_offset[tp] = self.uncommitted[tp] = max(position, records[-1].offset + 1)
        if self.txn_started is None:
            self.txn_started = time.monotonic()
        return len(records)

    def _maybe_resume(self) -> None:
        if self.paused and self.queue.qsize() < MAX_QUEUED_BATCHES // 2:
            self.runtime.resume_fetching(self)

    async def _send(self, out: Outbox) -> None:
        """Send as one record batch per topic-partition: a per-message `send` (its
        future, partitioner and metadata look-up) cost more than the processing."""
        if not out.messages:
            return
        counts, producer = self.runtime.partition_counts, self.producer
        by_tp: dict[tuple[str, int], list[Any]] = {}
        for message in out.messages:
            topic, key, _, partition, _ = message
            if partition is None:
                count = counts.get(topic) or await self.runtime.partition_count(topic, producer)
                partition = (random.randrange(count) if key is None
                             else partition_for(key, count))
            by_tp.setdefault((topic, partition), []).append(message)
        for (topic, partition), messages in by_tp.items():
            batch = producer.create_batch()
            for _, key, value, _, headers in messages:
                if batch.append(timestamp=None, key=key, value=value,
                                headers=headers or []) is None:
                    await self._send_batch(batch, topic, partition)
                    batch = producer.create_batch()
                    if batch.append(timestamp=None, key=key, value=value,
                                    headers=headers or []) is None:
                        raise ValueError(f"a record for {topic} exceeds the batch size")
            await self._send_batch(batch, topic, partition)
        if self.txn_started is None:
            self.txn_started = time.monotonic()

    async def _send_batch(self, batch: Any, topic: str, partition: int) -> None:
        count = batch.record_count()
        future = await self.producer.send_batch(batch, topic, partition=partition)
        self.pending.append((future, count))

    @staticmethod
    async def _acknowledged(pending: list[tuple[asyncio.Future[Any], int]]
                            ) -> dict[tuple[str, int], int]:
        """Wait for these batches; where each topic-partition's records now end."""
        ends: dict[tuple[str, int], int] = {}
        # Every outcome is collected, so a failed batch among several leaves no
        # "exception was never retrieved" behind; the first failure is raised.
        results: list[Any] = await asyncio.gather(*(future for future, _ in pending),
                                                  return_exceptions=True)
        if failed := next((r for r in results if isinstance(r, BaseException)), None):
            raise failed
        for metadata, (_, count) in zip(results, pending, strict=True):
            key = (metadata.topic, metadata.partition)
            ends[key] = max(ends.get(key, 0), metadata.offset + count)
        return ends

    def _commit_due(self) -> bool:
        if self.txn_started is None:
            return False
        return (self.queue.empty()
                or time.monotonic() - self.txn_started >= self.runtime.commit_interval)

    async def _commit(self, final: bool = False) -> None:
        """Everything sent is acknowledged, then the offsets commit with it.

        Exactly-once: the transaction commits before anything else is sent (the
        producer's next transaction cannot start earlier). At-least-once: the
        acknowledgements and the offset commit run in the background, one after the
        other in order, so processing never waits for a round trip."""
        runtime = self.runtime
        if self.txn_started is not None and runtime.exactly_once:
            pending, offsets = self.pending, dict(self.uncommitted)
            self.pending, self.uncommitted = [], {}
            self.txn_started = None
            ends = await self._acknowledged(pending) if pending else {}
            if offsets:
                await self.producer.send_offsets_to_transaction(offsets, runtime.group_id)
            await self.producer.commit_transaction()
            self.written.update(ends)
            await self.producer.begin_transaction()
        elif self.txn_started is not None:
            # What was sent is visible once acknowledged, whatever the offsets: those
            # only bound the replay after a crash, so they commit once per interval
            # (each commit is a write to __consumer_offsets on the broker).
            pending, self.pending = self.pending, []
            offsets = {}
            if final or time.monotonic() - self.txn_started >= runtime.commit_interval:
                offsets, self.uncommitted = dict(self.uncommitted), {}
                self.txn_started = None
            if pending or offsets:
                self.committing = asyncio.create_task(
                    self._acknowledge(self.committing, pending, offsets, final))
                self.committing.add_done_callback(self._on_acknowledged)
        if final and self.committing is not None:
            await self.committing

    async def _acknowledge(self, previous: asyncio.Task[None] | None,
                           pending: list[tuple[asyncio.Future[Any], int]],
                           offsets: dict[Any, int], final: bool = False) -> None:
        if previous is not None:
            await previous
        if pending:
            self.written.update(await self._acknowledged(pending))
        try:
            if offsets:
                await self.runtime.consumer.commit(offsets)
        except KafkaError as exc:
            if not final:
                raise
            # Giving the partition up after this worker left the group (its session
            # expired): the next owner reads these records again, as after a crash.
            log.warning("partition %d: offsets not committed on giving it up: %r",
                        self.partition, exc)

    def _on_acknowledged(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or (exc := task.exception()) is None:
            return
        self._failed(exc, "output or offsets not acknowledged")

