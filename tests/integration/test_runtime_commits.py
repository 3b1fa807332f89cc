"""At-least-once replays only after a crash: a clean stop and a rebalance commit what
was processed, so the next owner of a partition starts after it.

The runtime runs with an echo handler (each input record copied to the same partition
of an output topic) and a commit interval far longer than the test, so every offset
commit seen here is the one made when a task stops. Whether anything was processed
twice is read off the output: a sentinel per partition is sent once the new owners are
in place, and the output is read to its end offsets once every sentinel came out (on
each partition a replay would come out before the sentinel).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from common import kafka
from common.settings import Settings
from common.topics import TopicSpec, ensure_topics
from stream.outbox import Outbox, Written
from stream.runtime import StreamRuntime
from tests.drain import committed_offsets, end_offsets, read_to_end
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration

RECORDS = 400
#: Longer than the test: only the commit made on stopping a task can land.
COMMIT_INTERVAL = 600.0


class Echo:
    """Copies every record of `source` to the same partition of `sink`."""

    def __init__(self, source: str, sink: str) -> None:
        self.topics: Sequence[str] = [source]
        self.sink = sink

    async def assigned(self, partitions: list[int]) -> None:
        pass

    def suspended(self, partitions: list[int], written: Written) -> None:
        pass

    def revoked(self, partitions: list[int]) -> None:
        pass

    async def process(self, partition: int, topic: str, records: list[Any],
                      out: Outbox) -> None:
        for record in records:
            out.send(self.sink, record.key, record.value, partition)

    async def tick(self, partition: int, out: Outbox) -> None:
        pass

    def state_writes(self, partition: int, out: Outbox) -> None:
        pass


class Topics:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bootstrap = settings.kafka_bootstrap_servers
        self.source = settings.topic("runtime.in")
        self.sink = settings.topic("runtime.out")
        self.group = settings.topic("runtime")

    def runtime(self) -> StreamRuntime:
        return StreamRuntime(settings=self.settings, group_id=self.group,
                             handler=Echo(self.source, self.sink), exactly_once=False,
                             commit_interval=COMMIT_INTERVAL, tick_interval=COMMIT_INTERVAL)

    async def send(self, values: list[str]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            for n, value in enumerate(values):
                await producer.send(self.source, value.encode(), key=str(n).encode(),
                                    partition=n % self.settings.partitions)
            await producer.flush()
        finally:
            await producer.stop()

    async def output(self) -> list[str]:
        return [r.value.decode() for r in await read_to_end(self.settings, self.sink)]

    async def wait_output(self, values: list[str]) -> None:
        async def there() -> bool:
            return set(values) <= set(await self.output())

        await async_wait_for(there, 60, interval=0.3, what=f"{len(values)} outputs")


@pytest.fixture
async def topics(settings: Settings) -> Topics:
    await ensure_topics(settings, (TopicSpec("runtime.in"), TopicSpec("runtime.out")))
    return Topics(settings)


@asynccontextmanager
async def started(runtime: StreamRuntime) -> AsyncIterator[StreamRuntime]:
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
    assert runtime.failed is None, runtime.failed


async def wait_owners(*runtimes: StreamRuntime, partitions: int) -> None:
    async def owned() -> bool:
        for runtime in runtimes:
            assert runtime.failed is None, runtime.failed
        sets = [runtime.assigned() for runtime in runtimes]
        numbers = sorted(partition for assigned in sets for partition in assigned)
        return all(sets) and numbers == list(range(partitions))

    await async_wait_for(owned, 60, interval=0.2, what="every partition owned once")


async def assert_nothing_replayed(topics: Topics, first: list[str]) -> None:
    sentinels = [f"sentinel-{partition}" for partition in range(topics.settings.partitions)]
    await topics.send(sentinels)
    await topics.wait_output(sentinels)
    counts = Counter(await topics.output())
    assert {v: n for v, n in counts.items() if n != 1} == {}, "processed more than once"
    assert set(counts) == {*first, *sentinels}


async def test_a_clean_stop_commits_what_was_processed(topics: Topics) -> None:
    first = [f"r{n}" for n in range(RECORDS)]
    await topics.send(first)
    async with started(topics.runtime()) as runtime:
        await wait_owners(runtime, partitions=topics.settings.partitions)
        await topics.wait_output(first)
    ends = await end_offsets(topics.settings, [topics.source])
    assert await committed_offsets(topics.settings, topics.group, list(ends)) == ends

    async with started(topics.runtime()) as successor:
        await wait_owners(successor, partitions=topics.settings.partitions)
        await assert_nothing_replayed(topics, first)


async def test_a_rebalance_commits_what_was_processed(topics: Topics) -> None:
    first = [f"r{n}" for n in range(RECORDS)]
    await topics.send(first)
    async with started(topics.runtime()) as one:
        await wait_owners(one, partitions=topics.settings.partitions)
        await topics.wait_output(first)
        async with started(topics.runtime()) as two:  # joins: the partitions it takes move
            await wait_owners(one, two, partitions=topics.settings.partitions)
            await assert_nothing_replayed(topics, first)


async def test_a_fenced_task_rejoins_and_nothing_is_lost_or_doubled(topics: Topics) -> None:
    """A task whose producer another one fenced (as a new owner or a transaction timeout
    does) drops its work and the worker rejoins: it does not exit, and what came after
    the fence comes out exactly once."""
    first = [f"r{n}" for n in range(RECORDS)]
    await topics.send(first)
    runtime = StreamRuntime(settings=topics.settings, group_id=topics.group,
                            handler=Echo(topics.source, topics.sink), exactly_once=True,
                            commit_interval=0.1, tick_interval=COMMIT_INTERVAL)
    async with started(runtime):
        await wait_owners(runtime, partitions=topics.settings.partitions)
        await topics.wait_output(first)
        fence = kafka.producer(topics.settings, transactional_id=f"{topics.group}-0",
                               enable_idempotence=True)
        await fence.start()  # a new epoch for partition 0's transactional id
        await fence.stop()
        second = [f"s{n}" for n in range(RECORDS)]
        await topics.send(second)
        await topics.wait_output(second)
        assert runtime.lost_tasks >= 1, "the fence never reached the task"
        assert runtime.failed is None
        counts = Counter(await topics.output())
        assert {v: n for v, n in counts.items() if n != 1} == {}
        assert set(counts) == {*first, *second}


async def test_a_restart_elsewhere_moves_only_the_restarted_workers_partitions(
        topics: Topics) -> None:
    """Sticky: when one of two workers is replaced by a new one, the other keeps the
    partitions it had (the range assignor reshuffles by member id), and it keeps their
    state: they are suspended, not revoked."""
    handler = Recording(topics.source, topics.sink)
    one = StreamRuntime(settings=topics.settings, group_id=topics.group, handler=handler,
                        exactly_once=True, commit_interval=0.1,
                        tick_interval=COMMIT_INTERVAL)
    async with started(one):
        await wait_owners(one, partitions=topics.settings.partitions)
        async with started(topics.runtime()) as two:
            await wait_owners(one, two, partitions=topics.settings.partitions)
            kept = one.assigned()
        async with started(topics.runtime()) as three:
            await wait_owners(one, three, partitions=topics.settings.partitions)
            assert one.assigned() == kept
    assert kept
    assert handler.suspended_calls[-1] == sorted(kept)
    assert not any(set(call) & kept for call in handler.revoked_calls)


class Recording(Echo):
    def __init__(self, source: str, sink: str) -> None:
        super().__init__(source, sink)
        self.suspended_calls: list[list[int]] = []
        self.revoked_calls: list[list[int]] = []

    def suspended(self, partitions: list[int], written: Written) -> None:
        self.suspended_calls.append(partitions)

    def revoked(self, partitions: list[int]) -> None:
        self.revoked_calls.append(partitions)
