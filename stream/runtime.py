"""The stream runtime: one consumer, one task per partition, one transaction per batch.

Why not Faust: faust-streaming 0.15 needed four patches before its exactly-once mode
held under `kill -9` (transactions picked by destination partition, changelog writes
outside the transaction, commits splitting an event's output from its offset, table
recovery handing back empty tables), and its per-event machinery (streams, acks,
topic buffers, one awaited send per message) cost 55-60% of the worker's time. This
module is the part of Kafka Streams' model the pipeline needs, written out plainly:

- One consumer of the group reads every source topic. The range assignor gives a worker
  the same partition numbers of every topic (the topics are co-partitioned), so the
  work of partition number p is one *task*: all its records, its state and its output.
- Records are fetched in batches (`getmany`) and handed to the task of their partition.
  A task processes a batch, sends everything it produced and its state writes, and
  commits: under exactly-once, output, state and input offsets go in ONE Kafka
  transaction of the task's own transactional producer (`{group}-{p}`), so they commit
  together or not at all; under at-least-once, the offsets are committed once every
  output is acknowledged, and when a task stops (clean stop, rebalance): only a crash replays.
- A task owns its transactional id: a worker taking over partition p initialises the
  producer `{group}-{p}`, which fences the previous owner and aborts any transaction it
  left open. Only then is p's state recovered (read_committed, to the last stable
  offset), so no half-written state is ever read.
- A task commits at most every `commit_interval` seconds while records keep coming, so
  a busy task writes few, large transactions and an idle one commits right away.
- The clock: each task calls the handler's `tick` every `tick_interval`, in its transaction.
- Any error the handler does not turn into a dead letter stops the runtime (`failed`):
  the process exits and its orchestrator restarts it; nothing past the last commit
  counts, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError

from common import kafka
from common.settings import Settings
from stream.errors import StreamError
from stream.partitioning import partition_for

log = logging.getLogger(__name__)

#: Batches a task may have queued before its partitions are paused (backpressure).
MAX_QUEUED_BATCHES = 8
#: Records fetched per `getmany`.
FETCH_RECORDS = 2000
#: Largest record batch the producers build (the broker takes 1 MiB by default).
BATCH_BYTES = 512 * 1024


@dataclass(slots=True)
class Outbox:
    """What a task produced while processing: sent and committed by the runtime."""

    messages: list[tuple[str, bytes | None, bytes | None, int | None,
                         list[tuple[str, bytes]] | None]] = field(default_factory=list)

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None,
             headers: list[tuple[str, bytes]] | None = None) -> None:
        # An exact-size copy: orjson's result holds a 4 KiB buffer whatever its length
        # (orjson#483), and one batch can hold 100,000 messages (a rule recompute).
        if value is not None:
            value = bytes(memoryview(value))
        self.messages.append((topic, key, value, partition, headers))


class Processor(Protocol):
    """The pipeline the runtime drives (see `stream.pipeline`)."""

    topics: Sequence[str]

    async def assigned(self, partitions: list[int]) -> None:
        """Recover the state of these partition numbers (their producers are fenced)."""

    def revoked(self, partitions: list[int]) -> None:
        """Forget these partitions: another worker may change their state from now on."""

    async def process(self, partition: int, topic: str, records: list[Any],
                      out: Outbox) -> None:
        """Handle a batch of one topic-partition's records, in order."""

    async def tick(self, partition: int, out: Outbox) -> None:
        """The clock moved on: time-driven work of this partition."""

    def state_writes(self, partition: int, out: Outbox) -> None:
        """Add the partition's pending state changelog writes to `out`."""


class RuntimeFailed(StreamError, RuntimeError):
    """A task failed in a way the handler did not turn into a dead letter."""


class _Task:
    """The work of one partition number: a queue of fetched batches and a loop."""

    def __init__(self, runtime: StreamRuntime, partition: int, producer: Any) -> None:
        self.runtime = runtime
        self.partition = partition
        self.producer = producer
        #: (topic-partition, records, the consumer's position after them)
        self.queue: asyncio.Queue[tuple[Any, list[Any], int]] = asyncio.Queue()
        self.paused: set[Any] = set()
        #: Next offset to process per topic-partition; older records are replays.
        self.next_offset: dict[Any, int] = {}
        self.uncommitted: dict[Any, int] = {}
        self.pending: list[asyncio.Future[Any]] = []
        #: At-least-once: the latest background acknowledgement and offset commit.
        self.committing: asyncio.Task[None] | None = None
        self.stopping = False
        self.busy = False
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
        if idle and self.runtime.failed is None:
            # Cancelled while waiting: under at-least-once its last offsets may wait
            # for the commit interval (under exactly-once nothing is open when idle).
            try:
                await self._commit(final=True)
            except Exception as exc:  # the partition is read again, as after a crash
                log.warning("partition %d: final commit failed: %r", self.partition, exc)
        elif self.committing is not None:  # its commits still land
            with contextlib.suppress(Exception):
                await self.committing

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
        except asyncio.CancelledError:
            if self.busy:
                raise
        except Exception as exc:
            log.exception("partition %d failed", self.partition)
            runtime.fail(exc)
        finally:
            self.busy = False

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
            self.runtime.consumer.resume(*self.paused)
            self.paused.clear()

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
                    self.pending.append(
                        await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(timestamp=None, key=key, value=value,
                                    headers=headers or []) is None:
                        raise ValueError(f"a record for {topic} exceeds the batch size")
            self.pending.append(await producer.send_batch(batch, topic, partition=partition))
        if self.txn_started is None:
            self.txn_started = time.monotonic()

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
            if pending:
                await asyncio.gather(*pending)
            if offsets:
                await self.producer.send_offsets_to_transaction(offsets, runtime.group_id)
            await self.producer.commit_transaction()
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
                self.committing.add_done_callback(self._acknowledged)
        if final and self.committing is not None:
            await self.committing

    async def _acknowledge(self, previous: asyncio.Task[None] | None,
                           pending: list[asyncio.Future[Any]], offsets: dict[Any, int],
                           final: bool = False) -> None:
        if previous is not None:
            await previous
        if pending:
            await asyncio.gather(*pending)
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

    def _acknowledged(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("partition %d: output or offsets not acknowledged: %r", self.partition,
                      task.exception())
            self.runtime.fail(task.exception())  # type: ignore[arg-type]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's rebalance callbacks, forwarded to the runtime."""

    def __init__(self, runtime: StreamRuntime) -> None:
        self.runtime = runtime

    async def on_partitions_revoked(self, revoked: Any) -> None:
        try:
            await self.runtime._revoke()
        except Exception as exc:  # aiokafka would only log it and carry on
            log.exception("giving up partitions failed")
            self.runtime.fail(exc)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        try:
            await self.runtime._assign(list(assigned))
        except Exception as exc:  # e.g. state recovery stalled: never run without state
            log.exception("taking over partitions %s failed", sorted(
                {tp.partition for tp in assigned}))
            self.runtime.fail(exc)


class StreamRuntime:
    def __init__(self, *, settings: Settings, group_id: str, handler: Processor,
                 exactly_once: bool = True, commit_interval: float = 0.1,
                 tick_interval: float = 1.0, linger_ms: int = 0,
                 session_timeout_ms: int = 10_000) -> None:
        self.settings = settings
        self.group_id = group_id
        self.handler = handler
        self.exactly_once = exactly_once
        self.commit_interval = commit_interval
        self.tick_interval = tick_interval
        self.linger_ms = linger_ms
        self.session_timeout_ms = session_timeout_ms
        self.consumer: Any = None
        self.producer: Any = None  # shared producer under at-least-once
        self.tasks: dict[int, _Task] = {}
        #: topic -> its partition count, for the default (murmur2) partitioner.
        self.partition_counts: dict[str, int] = {}
        self.failed: BaseException | None = None
        self._done = asyncio.Event()
        self._fetcher: asyncio.Task[None] | None = None
        self._rebalance = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        listener = _Listener(self)
        self.consumer = kafka.consumer(
            self.settings, group_id=self.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=max(1000, self.session_timeout_ms // 3),
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        if not self.exactly_once:
            self.producer = kafka.producer(
                self.settings, acks="all",
                enable_idempotence=True, linger_ms=self.linger_ms,
                max_batch_size=BATCH_BYTES)
            await self.producer.start()
        self.consumer.subscribe(list(self.handler.topics), listener=listener)
        await self.consumer.start()
        self._fetcher = asyncio.create_task(self._fetch(), name="segments-fetch")

    async def stop(self) -> None:
        """Commit what was processed and leave the group."""
        if self._fetcher is not None:
            self._fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._fetcher
            self._fetcher = None
        async with self._rebalance:
            await self._stop_tasks()
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None
        self._done.set()

    async def wait(self) -> None:
        """Until `stop()`, or until a task fails (then raises `RuntimeFailed`)."""
        await self._done.wait()
        if self.failed is not None:
            raise RuntimeFailed(str(self.failed)) from self.failed

    def fail(self, exc: BaseException) -> None:
        if self.failed is None:
            self.failed = exc
        self._done.set()

    def assigned(self) -> set[int]:
        return set(self.tasks)

    async def partition_count(self, topic: str, producer: Any) -> int:
        """Learnt once per topic (adding partitions to a running pipeline's topics would
        move keys anyway, so it is not supported)."""
        await producer.client._wait_on_metadata(topic)
        count = len(producer.client.cluster.partitions_for_topic(topic) or ())
        if not count:
            raise RuntimeError(f"topic {topic} has no partitions")
        self.partition_counts[topic] = count
        return count

    # -- fetching --------------------------------------------------------------------

    async def _fetch(self) -> None:
        consumer = self.consumer
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=FETCH_RECORDS)
                for tp, records in batches.items():
                    task = self.tasks.get(tp.partition)
                    if task is None or task.stopping:
                        # Fetched in the middle of a rebalance: read them again later
                        # (whoever owns the partition then starts from its commit).
                        with contextlib.suppress(Exception):  # no longer assigned
                            consumer.seek(tp, records[0].offset)
                        continue
                    task.queue.put_nowait((tp, records, await consumer.position(tp)))
                    if task.queue.qsize() >= MAX_QUEUED_BATCHES and tp not in task.paused:
                        consumer.pause(tp)
                        task.paused.add(tp)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("fetching failed")
            self.fail(exc)

    # -- rebalancing -----------------------------------------------------------------

    async def _revoke(self) -> None:
        async with self._rebalance:
            await self._stop_tasks()

    async def _stop_tasks(self) -> None:
        tasks, self.tasks = self.tasks, {}
        if not tasks:
            return
        await asyncio.gather(*(t.stop() for t in tasks.values()), return_exceptions=True)
        if self.exactly_once:
            await asyncio.gather(*(t.producer.stop() for t in tasks.values()),
                                 return_exceptions=True)
        self.handler.revoked(sorted(tasks))
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                self.consumer.resume(*self.consumer.assignment())

    async def _assign(self, assigned: list[Any]) -> None:
        async with self._rebalance:
            by_partition: dict[int, list[Any]] = defaultdict(list)
            for tp in assigned:
                by_partition[tp.partition].append(tp)
            partitions = sorted(by_partition)
            if not partitions:
                return
            started = time.monotonic()
            producers = await asyncio.gather(*(self._producer(p) for p in partitions))
            await self.handler.assigned(partitions)
            # The recovered state lives as long as the assignment and holds no cycles:
            # keep the cyclic collector from re-scanning it (refcounting still frees it).
            gc.collect()
            gc.freeze()
            for p, producer in zip(partitions, producers, strict=True):
                task = self.tasks[p] = _Task(self, p, producer)
                task.start()
            log.info("assigned partitions %s in %.2fs", partitions, time.monotonic() - started)

    async def _producer(self, partition: int) -> Any:
        """Under exactly-once, the task's transactional producer, already fencing any
        previous owner of the partition (its open transaction is aborted)."""
        if not self.exactly_once:
            return self.producer
        producer = kafka.producer(
            self.settings, acks="all", enable_idempotence=True,
            transactional_id=f"{self.group_id}-{partition}", linger_ms=self.linger_ms,
            max_batch_size=BATCH_BYTES)
        await producer.start()
        await producer.begin_transaction()
        return producer
