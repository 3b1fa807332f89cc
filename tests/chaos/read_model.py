"""The serving side under chaos: the Redis read-model writer (`segments api`'s
`ReadModelAgent`) keeping the session Redis in step with `segments.membership` and
`segments.rules` of the chaos cluster, and what it holds at the end.

It runs in-process for the whole run, broker bounces included. When it stops on a Kafka
or Redis failure (the serving process exits non-zero on purpose) it is restarted, as an
orchestrator would, and counted. Catching up is judged by its own progress marker: its
group's committed offsets must reach, on every partition, the offset after the last
committed record of the topic (a transaction's commit marker takes an offset the
writer never commits past, so the end offset itself is not the target).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from common.settings import Settings
from serving.metrics import ServingMetrics
from serving.read_model import Namespace
from serving.read_model_agent import ReadModelAgent, group_id
from serving.read_model_query import ReadModelReader
from tests.drain import committed_offsets
from tests.waiting import TimedOut, async_wait_for

log = logging.getLogger(__name__)


class SupervisedReadModel:
    def __init__(self, settings: Settings, redis: Any) -> None:
        self.settings = settings
        self.redis = redis
        self.group = group_id(settings)
        self.restarts = 0
        self.failures: list[str] = []
        self.agent: ReadModelAgent | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="read model")

    async def _supervise(self) -> None:
        while not self._stopping:
            self.agent = ReadModelAgent(self.settings, self.redis, ServingMetrics())
            try:
                await self.agent.run()
            except (KafkaError, RedisError, OSError) as exc:
                if self._stopping:
                    return
                self.restarts += 1
                self.failures.append(f"{type(exc).__name__}: {exc}")
                log.warning("read model stopped (%s); restarting", exc)
                await asyncio.sleep(1.0)  # an orchestrator's restart delay, not a wait

    async def stop(self) -> None:
        self._stopping = True
        if self.agent is not None:
            self.agent.stop()
        if self._task is not None:
            await asyncio.wait_for(self._task, 30)

    def check_alive(self) -> None:
        """A failure other than Kafka or Redis going away is a bug: raise it."""
        if self._task is not None and self._task.done():
            self._task.result()
            raise AssertionError("the read-model supervisor stopped")

    async def caught_up(self, last: dict[TopicPartition, int], timeout: float) -> None:
        """Until the writer's group committed past `last` (per partition, the offset of
        the last committed record of each of its input topics)."""
        behind: dict[str, tuple[int, int]] = {}

        async def done() -> bool:
            self.check_alive()
            try:
                now = await committed_offsets(self.settings, self.group, list(last))
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                return False
            behind.clear()
            behind.update({f"{tp.topic}:{tp.partition}": (now[tp], off + 1)
                           for tp, off in last.items() if now[tp] <= off})
            return not behind

        try:
            await async_wait_for(done, timeout, interval=0.2, what="the read model")
        except TimedOut:
            raise TimedOut(f"the read model did not catch up in {timeout}s; behind "
                           f"(committed, needed): {behind}; {self.restarts} restarts "
                           f"({self.failures[-3:]})") from None


def last_offsets(records: list[Any]) -> dict[TopicPartition, int]:
    """The offset of the last record read per partition."""
    last: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        last[tp] = max(last.get(tp, -1), r.offset)
    return last


async def members_in_redis(settings: Settings, redis: Any, account_id: str,
                           segments: list[str]) -> tuple[dict[str, set[str]], dict[str, int]]:
    """Per segment: the member emails the read model holds (its members set of the
    generation it serves) and the member count it answers with."""
    ns = Namespace(settings.topic_prefix)
    reader = ReadModelReader(redis, ns)
    generation = await reader.generation()
    members: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for segment in segments:
        raw = await redis.zrange(ns.members(generation, account_id, segment), 0, -1)
        members[segment] = {m.decode() if isinstance(m, bytes) else m for m in raw}
        found = await reader.segment(account_id, segment)
        counts[segment] = -1 if found is None else found.member_count
    return members, counts
