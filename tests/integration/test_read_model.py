"""The Redis read model on real Kafka and Redis: apply, replay, rebuild."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

import serving.read_model_rebuild as rebuild_module
from common.settings import Settings
from common.topics import MEMBERSHIP_TOPIC, RULES_TOPIC
from serving.metrics import ServingMetrics
from serving.read_model import (
    FENCED,
    MemberWrite,
    Namespace,
    ReadModelStore,
    RuleWrite,
    Write,
)
from serving.read_model_agent import ReadModelAgent
from serving.read_model_query import ReadModelReader
from serving.read_model_rebuild import rebuild
from tests.read_model_harness import (
    Feeder,
    change,
    delete_namespace,
    dump_namespace,
    feeder,
    rule_doc,
)
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def agent_running(settings: Settings, client: Redis, **kwargs: Any
                        ) -> AsyncIterator[ReadModelAgent]:
    agent = ReadModelAgent(settings, client, ServingMetrics(), **kwargs)
    task = asyncio.create_task(agent.run())
    try:
        await async_wait_for(_assigned(agent, task), 30, what="read-model partitions")
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)


def _assigned(agent: ReadModelAgent, task: asyncio.Task[None]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        if task.done():
            task.result()
        return agent.assigned.is_set()
    return check


def count_is(reader: ReadModelReader, account: str, segment: str,
             expected: int | None) -> Callable[[], Awaitable[bool]]:
    """Segment known with `expected` members (None: segment unknown)."""
    async def check() -> bool:
        found = await reader.segment(account, segment)
        if expected is None:
            return found is None
        return found is not None and found.member_count == expected
    return check


async def seed(f: Feeder) -> None:
    """Two accounts using the same segment id, joins, leaves and a deleted rule."""
    await f.rule("acme", "vip")
    await f.rule("globex", "vip", rule_doc("globex", "vip", name="Globex VIPs"))
    await f.rule("acme", "gone")
    await f.changes([change("acme", "vip", f"a{i:02d}@example.com") for i in range(30)])
    await f.changes([change("globex", "vip", "a00@example.com"),
                     change("globex", "vip", "g1@example.com"),
                     change("acme", "gone", "a01@example.com")])
    await f.changes([change("acme", "vip", f"a{i:02d}@example.com", "left", "time")
                     for i in range(0, 30, 3)])
    await f.changes([change("acme", "gone", "a01@example.com", "left", "rule")])
    await f.rule("acme", "gone", delete=True)


async def test_writes_are_idempotent_and_fenced(settings: Settings, redis: Redis) -> None:
    store = ReadModelStore(redis, Namespace(settings.topic_prefix))
    state = b'{"since": "2026-11-26T23:00:00Z"}'
    writes: list[Write] = [
        RuleWrite("acme", "vip", b'{"id": "vip"}'),
        MemberWrite("acme", "vip", "ann@example.com", state),
        MemberWrite("acme", "vip", "bob@example.com", state),
        MemberWrite("acme", "vip", "ann@example.com", None),
        RuleWrite("acme", "old", b'{"id": "old"}'),
        MemberWrite("acme", "old", "bob@example.com", state),
        RuleWrite("acme", "old", None),
        MemberWrite("acme", "old", "bob@example.com", None),
    ]
    applied = await store.apply(writes, "0")
    assert [a.member_count for a in applied] == [0, 1, 2, 1, 0, 1, 1, 0]
    seqs = [a.seq for a in applied]
    assert seqs == sorted(set(seqs))
    once = await dump_namespace(redis, settings.topic_prefix)
    assert once == {
        "segments": [b"acme:vip"],
        "accounts:vip": [b"acme"],
        "members:acme:vip": [(b"bob@example.com", 0.0)],
        "state:acme:vip": {b"bob@example.com": state},
        "rule:acme:vip": b'{"id": "vip"}',
        "contact:acme:bob@example.com": [b"vip"],
    }
    # At-least-once: a suffix, or everything, applied again changes nothing.
    await store.apply(writes[3:], "0")
    await store.apply(writes, "0")
    assert await dump_namespace(redis, settings.topic_prefix) == once
    # Seqs keep increasing even when Redis loses the counter (pages compare them).
    await redis.delete(f"{settings.topic_prefix}seg:seq")
    assert (await store.apply(writes[:1], "0"))[0].seq > seqs[-1]
    # Once another generation is served, writes for the old one are refused.
    assert await store.switch_generation("g2", {"x:0": 5}) == "0"
    assert await store.apply(writes[:2], "0") == [(FENCED, 0), (FENCED, 0)]
    assert [a.member_count for a in await store.apply(writes[:1], "g2", fence=False)] == [0]


async def test_replaying_the_topic_gives_the_same_state(settings: Settings, redis: Redis) -> None:
    reader = ReadModelReader(redis, Namespace(settings.topic_prefix))
    async with feeder(settings) as f:
        await seed(f)
    async with agent_running(settings, redis):
        await async_wait_for(count_is(reader, "acme", "vip", 20), 30, what="acme/vip = 20")
        await async_wait_for(count_is(reader, "acme", "gone", None), 30, what="acme/gone gone")
        first = await dump_namespace(redis, settings.topic_prefix)
    assert first["members:globex:vip"] == [(b"a00@example.com", 0.0), (b"g1@example.com", 0.0)]
    assert sorted(first["contact:globex:a00@example.com"]) == [b"vip"]
    assert b"a00@example.com" not in dict(first["members:acme:vip"])  # left, acme only
    assert not any("gone" in key for key in first)

    # A new consumer group replays both topics from the beginning over the same keys.
    async with agent_running(settings, redis, group=f"{settings.topic_prefix}replay") as agent:
        async def caught_up() -> bool:
            lag = agent.metrics.lag
            rule_left = agent.metrics.changes_applied.labels(cause="rule", change="left")
            return bool(rule_left._value.get() >= 1
                        and lag.labels(topic=MEMBERSHIP_TOPIC)._value.get() == 0
                        and lag.labels(topic=RULES_TOPIC)._value.get() == 0)

        await async_wait_for(caught_up, 30, what="replay caught up")
        assert await dump_namespace(redis, settings.topic_prefix) == first


async def test_rebuild_after_redis_lost_everything(settings: Settings, redis: Redis) -> None:
    reader = ReadModelReader(redis, Namespace(settings.topic_prefix))
    async with feeder(settings) as f:
        await seed(f)
        async with agent_running(settings, redis):
            await async_wait_for(count_is(reader, "acme", "gone", None), 30, what="seeded")
            await async_wait_for(count_is(reader, "acme", "vip", 20), 30, what="seeded")
            before = await dump_namespace(redis, settings.topic_prefix)

            await delete_namespace(redis, settings.topic_prefix)  # Redis lost its data
            assert await reader.segments() == []
            report = await rebuild(settings, redis)
            assert (report.members, report.rules, report.segments) == (22, 2, 2)
            assert await dump_namespace(redis, settings.topic_prefix) == before

            # The live writer, still running, moves to the new generation.
            await f.changes([change("acme", "vip", "late@example.com")])
            await async_wait_for(count_is(reader, "acme", "vip", 21), 30, what="late joiner")
            page = await reader.members_page("acme", "vip", None, 1000)
            assert "late@example.com" in [m["email"] for m in page.members]
            keys = [k async for k in redis.scan_iter(match=f"{settings.topic_prefix}seg:0:*")]
            assert keys == []  # nothing written to the old generation


async def test_rebuild_replays_what_the_snapshot_missed(
    settings: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change the live writer applied to the old generation after the snapshot's end
    offsets were taken reaches the new generation through the replay offsets."""
    reader = ReadModelReader(redis, Namespace(settings.topic_prefix))
    load = rebuild_module._load
    async with feeder(settings) as f:
        await f.rule("acme", "vip")
        await f.changes([change("acme", "vip", "ann@example.com"),
                         change("acme", "vip", "bob@example.com")])

        async def load_with_a_race(*args: Any) -> None:
            await f.changes([change("acme", "vip", "ann@example.com", "left", "time"),
                             change("acme", "vip", "cy@example.com")])

            async def applied() -> bool:
                page = await reader.members_page("acme", "vip", None, 10)
                return [m["email"] for m in page.members] == ["bob@example.com", "cy@example.com"]

            await async_wait_for(applied, 30, what="race applied to the old generation")
            await load(*args)

        monkeypatch.setattr(rebuild_module, "_load", load_with_a_race)
        async with agent_running(settings, redis) as agent:
            await async_wait_for(count_is(reader, "acme", "vip", 2), 30, what="ann and bob")
            report = await rebuild(settings, redis)
            assert report.members == 2  # the snapshot still has ann, not cy

            async def converged() -> bool:
                page = await reader.members_page("acme", "vip", None, 10)
                return [m["email"] for m in page.members] == ["bob@example.com", "cy@example.com"]

            await async_wait_for(converged, 30, what="replayed state")
            assert agent.generation == report.generation
            # Every input partition's replay offset was taken (membership and rules).
            assert await redis.hgetall(f"{settings.topic_prefix}seg:replay") == {}


async def test_bad_records_are_skipped_not_fatal(settings: Settings, redis: Redis) -> None:
    reader = ReadModelReader(redis, Namespace(settings.topic_prefix))
    async with feeder(settings) as f, agent_running(settings, redis) as agent:
        await f.raw(MEMBERSHIP_TOPIC, b"not json", b"k")
        bad_id = change("acme", "vip", "x@example.com").to_bytes().replace(b'"vip"', b'"a:b"')
        await f.raw(MEMBERSHIP_TOPIC, bad_id, b"k")
        await f.raw(RULES_TOPIC, b"[]", b"acme\x1fvip")
        await f.changes([change("acme", "vip", "ok@example.com")])
        await async_wait_for(count_is(reader, "acme", "vip", 1), 30, what="good change")
        rejected = agent.metrics.records_rejected
        assert rejected.labels(topic=MEMBERSHIP_TOPIC)._value.get() == 2
        assert rejected.labels(topic=RULES_TOPIC)._value.get() == 1


async def test_a_rule_failing_validation_leaves_the_version_in_force(
    settings: Settings, redis: Redis
) -> None:
    """Issue 14: a rule with errors written straight to `segments.rules` was shown as if
    in force; the workers dead-letter it and keep the previous version, so does this."""
    reader = ReadModelReader(redis, Namespace(settings.topic_prefix))
    good = rule_doc("acme", "vip", name="VIPs")
    broken = {**rule_doc("acme", "vip", name="Broken", version=2), "filter": "nope"}
    elsewhere = rule_doc("acme", "gold", version=3)  # the key names "vip"
    async with feeder(settings) as f, agent_running(settings, redis) as agent:
        await f.rule("acme", "vip", good)
        await f.rule("acme", "vip", broken)
        await f.rule("acme", "vip", elsewhere)
        await f.rule("acme", "other")  # after them: once shown, they were all read
        await async_wait_for(
            lambda: reader.segment("acme", "other"), 30, what="the rule after the bad ones")
        shown = await reader.segment("acme", "vip")
        assert shown is not None
        assert shown.rule == good
        assert agent.metrics.records_rejected.labels(topic=RULES_TOPIC)._value.get() == 2


async def test_a_fenced_batch_is_rewound_into_the_new_generation(
    settings: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch in flight when the generation switches is refused, then re-applied."""
    reader = ReadModelReader(redis, Namespace(settings.topic_prefix))
    store = ReadModelStore(redis, Namespace(settings.topic_prefix))
    async with feeder(settings) as f, agent_running(settings, redis) as agent:
        monkeypatch.setattr(agent, "_every_second", _no_check)  # only a write can notice
        await f.changes([change("acme", "vip", "ann@example.com")])
        await async_wait_for(count_is(reader, "acme", "vip", 1), 30, what="ann")
        await store.switch_generation("g2", {})  # e.g. a rebuild from empty topics
        assert await reader.segment("acme", "vip") is None
        await f.changes([change("acme", "vip", "bob@example.com")])
        await async_wait_for(count_is(reader, "acme", "vip", 1), 30, what="bob in g2")
        assert agent.metrics.fenced._value.get() == 1
        assert agent.generation == "g2"
        page = await reader.members_page("acme", "vip", None, 10)
        assert [m["email"] for m in page.members] == ["bob@example.com"]


async def _no_check(consumer: Any) -> None:
    return None
