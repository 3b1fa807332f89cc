"""The workers' consumer group protocol: one JoinGroup per join, and old and new
workers in one group.

aiokafka 0.14 sends one JoinGroup per configured assignor, the second with a longer
protocol list. Two workers that each offered two protocols (`segments-sticky`, then
`range`) kept restarting each other's rebalance: in the chaos test the leader assigned
569 times in 150 s and no task ever started. Every JoinGroup the group consumer sends
is recorded here (the protocol names at the moment of sending), on the real broker.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.protocol.group import JoinGroupRequest

from common import kafka
from common.settings import Settings
from common.topics import TopicSpec, ensure_topics
from stream.runtime import group_consumer
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 3


@pytest.fixture
def joins(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The protocol names of every JoinGroup sent."""
    sent: list[list[str]] = []
    original = GroupCoordinator._send_req

    async def recording(self: GroupCoordinator, request: Any) -> Any:
        if isinstance(request, JoinGroupRequest):
            # Copied now: aiokafka keeps appending to the list it passed.
            sent.append([name for name, _ in request._group_protocols])
        return await original(self, request)

    monkeypatch.setattr(GroupCoordinator, "_send_req", recording)
    return sent


async def topics(settings: Settings) -> list[str]:
    """Two co-partitioned topics of PARTITIONS partitions."""
    await ensure_topics(replace(settings, partitions=PARTITIONS),
                        (TopicSpec("proto.a"), TopicSpec("proto.b")))
    return [settings.topic("proto.a"), settings.topic("proto.b")]


async def settled(consumers: list[AIOKafkaConsumer]) -> dict[int, set[int]]:
    """Once every partition of every topic is assigned exactly once: the partition
    numbers per consumer."""
    async def done() -> dict[int, set[int]] | None:
        owned = [c.assignment() for c in consumers]
        every = [tp for tps in owned for tp in tps]
        if len(every) != 2 * PARTITIONS or len(set(every)) != len(every):
            return None
        return {i: {tp.partition for tp in tps} for i, tps in enumerate(owned)}

    found = await async_wait_for(done, 60, interval=0.2, what="one stable assignment")
    assert found is not None
    return found


def co_partitioned(consumers: list[AIOKafkaConsumer], names: list[str]) -> None:
    for consumer in consumers:
        numbers = {tp.partition for tp in consumer.assignment()}
        assert consumer.assignment() == {TopicPartition(t, n) for t in names
                                         for n in numbers}


async def test_two_workers_starting_together_send_one_protocol_per_join(
        settings: Settings, joins: list[list[str]]) -> None:
    names = await topics(settings)
    group = settings.topic("proto-group")
    consumers = [group_consumer(settings, group, list, 10_000) for _ in range(2)]
    for consumer in consumers:
        consumer.subscribe(names)
    try:
        await asyncio.gather(*(c.start() for c in consumers))
        owned = await settled(consumers)
        co_partitioned(consumers, names)
        assert sorted(len(n) for n in owned.values()) == [1, 2]
    finally:
        await asyncio.gather(*(c.stop() for c in consumers))
    assert joins, "no JoinGroup recorded: the probe is not on the path"
    # Every JoinGroup offers the one protocol, so a repeated join never changes a
    # member's metadata (which restarts the group's rebalance).
    assert {tuple(protocols) for protocols in joins} == {("range",)}


@pytest.mark.parametrize("old_first", [True, False], ids=["old-leads", "new-leads"])
async def test_an_older_range_worker_and_a_new_one_share_the_group(
        settings: Settings, old_first: bool) -> None:
    """A rolling upgrade: a worker of the version before the sticky assignor (aiokafka's
    range assignor) and a new one join one group; whichever leads, both are assigned,
    co-partitioned, each number once. Before this, the new worker's own protocol name
    would have refused the mix (InconsistentGroupProtocol) had it been its only one."""
    names = await topics(settings)
    group = settings.topic("proto-mixed")
    old = kafka.consumer(settings, group_id=group, enable_auto_commit=False,
                         partition_assignment_strategy=(RangePartitionAssignor,))
    new = group_consumer(settings, group, lambda: [0, 1, 2], 10_000)
    first, second = (old, new) if old_first else (new, old)
    for consumer in (first, second):
        consumer.subscribe(names)
    try:
        await first.start()
        await second.start()
        await settled([first, second])
        co_partitioned([first, second], names)
    finally:
        await asyncio.gather(first.stop(), second.stop())
