"""The stream runtime: one consumer, one task per partition, one transaction per batch.

Why not Faust: faust-streaming 0.15 needed four patches before its exactly-once mode
held under `kill -9` (transactions picked by destination partition, changelog writes
outside the transaction, commits splitting an event's output from its offset, table
recovery handing back empty tables), and its per-event machinery (streams, acks,
topic buffers, one awaited send per message) cost 55-60% of the worker's time. This
module is the part of Kafka Streams' model the pipeline needs, written out plainly:

- One consumer of the group reads every source topic. The group's assignor
  (`stream.assignor`) gives a worker the same partition numbers of every topic (the
  topics are co-partitioned), so the work of partition number p is one *task*: all its
  records, its state and its output.
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
- A rebalance moves as little as it can (`stream.assignor`: sticky, co-partitioned) and
  restores as little as it can: a task that stopped cleanly leaves its state in memory
  with where its last writes ended, and if the worker gets the partition back, its
  recovery reads the changelog from there (nothing, unless another worker wrote in
  between) instead of from the start.
- A task that lost its partition or its transaction (`stream.task`) drops its state and
  the worker rejoins the group; it does not exit.
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
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka.abc import ConsumerRebalanceListener

from common import kafka
from common.settings import Settings
from stream.assignor import StickyTaskAssignor
from stream.errors import StreamError
from stream.outbox import Processor
from stream.task import FETCH_RECORDS, MAX_QUEUED_BATCHES, Task

log = logging.getLogger(__name__)

#: How long the group waits for every member to rejoin in a rebalance. aiokafka's default
#: is the session timeout (10 s), which a member finishing a batch or a recovery on a
#: loaded machine overruns: it is then thrown out of the group, its tasks are fenced,
#: and its rejoin starts the next rebalance (the storm the chaos test saw). Kafka
#: Streams uses max.poll.interval.ms, 5 minutes; a dead member still leaves after its
#: session timeout.
REBALANCE_TIMEOUT_MS = 300_000
#: Largest record batch the producers build (the broker takes 1 MiB by default).
BATCH_BYTES = 512 * 1024


def group_consumer(settings: Settings, group_id: str, held: Callable[[], Iterable[int]],
                   session_timeout_ms: int) -> Any:
    """The worker's member of the group (not started): read_committed, offsets
    committed by the tasks, and the group's one assignor."""
    return kafka.consumer(
        settings, group_id=group_id,
        enable_auto_commit=False, auto_offset_reset="earliest",
        isolation_level="read_committed",
        # Exactly one assignor: aiokafka sends a JoinGroup per assignor, and two
        # workers offering two protocols kept restarting each other's rebalance
        # (stream.assignor). It speaks `range`, as older workers do.
        partition_assignment_strategy=(StickyTaskAssignor(held),),
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(1000, session_timeout_ms // 3),
        rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )


class RuntimeFailed(StreamError, RuntimeError):
    """A task failed in a way the handler did not turn into a dead letter."""


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
        self.tasks: dict[int, Task] = {}
        #: Partitions whose tasks stopped cleanly at the last rebalance: their state is
        #: kept (not served) until the next assignment says whether they stay.
        self.suspended: set[int] = set()
        self._losing: set[asyncio.Task[None]] = set()
        #: Tasks lost so far (see `lose`): each one a rejoin, not a restart.
        self.lost_tasks = 0
        #: topic -> its partition count, for the default (murmur2) partitioner.
        self.partition_counts: dict[str, int] = {}
        self.failed: BaseException | None = None
        self._done = asyncio.Event()
        self._fetcher: asyncio.Task[None] | None = None
        self._rebalance = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        listener = _Listener(self)
        self.consumer = group_consumer(self.settings, self.group_id, self.held,
                                       self.session_timeout_ms)
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

    def held(self) -> list[int]:
        """The partitions this worker holds state for (its claim in a rebalance)."""
        return sorted(self.suspended | set(self.tasks))

    def lose(self, task: Task, exc: BaseException) -> None:
        """`task` lost its partition or its transaction: forget it and rejoin."""
        log.warning("partition %d: lost (%r); its state is dropped and the worker "
                    "rejoins the group", task.partition, exc)
        self.lost_tasks += 1
        losing = asyncio.create_task(self._lose(task))
        self._losing.add(losing)
        losing.add_done_callback(self._losing.discard)

    async def _lose(self, task: Task) -> None:
        async with self._rebalance:
            if self.tasks.get(task.partition) is not task:
                return  # a rebalance already stopped it
            del self.tasks[task.partition]
            if self.exactly_once:
                with contextlib.suppress(Exception):
                    await task.producer.stop()
            self.handler.revoked([task.partition])
            consumer = self.consumer
            if consumer is None:
                return
            with contextlib.suppress(Exception):  # fetched records of it are dropped
                consumer.pause(*(tp for tp in consumer.assignment()
                                 if tp.partition == task.partition))
            # No public call asks for a rebalance; this is the one aiokafka's own
            # heartbeat uses when the coordinator asks the member to rejoin.
            consumer._coordinator.request_rejoin()

    def resume_fetching(self, task: Task) -> None:
        self.consumer.resume(*task.paused)
        task.paused.clear()

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
        clean = sorted(partition for partition, task in tasks.items() if task.clean)
        if dirty := sorted(set(tasks) - set(clean)):
            self.handler.revoked(dirty)
        if clean:
            written: dict[tuple[str, int], int] = {}
            for partition in clean:
                written.update(tasks[partition].written)
            self.handler.suspended(clean, written)
            self.suspended.update(clean)
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                self.consumer.resume(*self.consumer.assignment())

    async def _assign(self, assigned: list[Any]) -> None:
        async with self._rebalance:
            by_partition: dict[int, list[Any]] = defaultdict(list)
            for tp in assigned:
                by_partition[tp.partition].append(tp)
            partitions = sorted(by_partition)
            if gone := sorted(self.suspended - set(partitions)):
                self.handler.revoked(gone)
            self.suspended.clear()
            if not partitions:
                return
            started = time.monotonic()
            producers = await asyncio.gather(*(self._producer(partition)
                                               for partition in partitions))
            await self.handler.assigned(partitions)
            # The recovered state lives as long as the assignment and holds no cycles:
            # keep the cyclic collector from re-scanning it (refcounting still frees it).
            gc.collect()
            gc.freeze()
            for partition, producer in zip(partitions, producers, strict=True):
                task = self.tasks[partition] = Task(self, partition, producer)
                task.start()
            took = time.monotonic() - started
            # Heartbeats wait while the loop recovers: near the session timeout, the
            # group may give these partitions away again (see StreamOptions).
            level = logging.WARNING if took > self.session_timeout_ms / 2000 else logging.INFO
            log.log(level, "assigned partitions %s in %.2fs", partitions, took)

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
