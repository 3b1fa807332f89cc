"""Feeding the read model's topics and inspecting its Redis keys, for the serving tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from common.settings import Settings
from common.topics import MEMBERS_TOPIC, MEMBERSHIP_TOPIC, RULES_TOPIC, TOPICS, ensure_topics
from serving.read_model import glob_escape
from stream.changes import MembershipChange, member_key, member_state, rule_key, rule_record
from tests.tokens import ADMIN

SERVING_TOPICS = tuple(
    s for s in TOPICS if s.name in (MEMBERSHIP_TOPIC, MEMBERS_TOPIC, RULES_TOPIC)
)


def change(account: str, segment: str, email: str, kind: str = "joined", cause: str = "fact",
           at: str = "2026-11-26T23:00:00Z", version: int = 1) -> MembershipChange:
    fact_id = f"re_{uuid.uuid4().hex[:8]}" if cause == "fact" else None
    return MembershipChange(account, segment, email, kind, at, cause, fact_id,  # type: ignore[arg-type]
                            version, at)


def rule_doc(account: str, segment: str, name: str = "", filter_: str = "refunded",
             version: int = 1) -> dict[str, Any]:
    return {"id": segment, "account_id": account, "name": name or f"{segment} rule",
            "filter": filter_, "conditions": [], "timezone": "UTC", "version": version}


class Feeder:
    """Writes what the membership agents write: each change on `segments.membership` and
    its state on `segments.members`, in one transaction (as the worker's exactly-once does)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            transactional_id=f"{settings.topic_prefix}feeder-{uuid.uuid4().hex[:6]}",
            enable_idempotence=True, acks="all")

    async def start(self) -> None:
        await ensure_topics(self.settings, SERVING_TOPICS)
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def changes(self, changes: Iterable[MembershipChange], *, members: bool = True) -> None:
        async with self.producer.transaction():
            for c in changes:
                await self.producer.send(self.settings.topic(MEMBERSHIP_TOPIC), c.to_bytes(),
                                         key=c.key())
                if members:
                    await self.producer.send(
                        self.settings.topic(MEMBERS_TOPIC), member_state(c),
                        key=member_key(c.account_id, c.segment_id, c.email))

    async def rule(self, account: str, segment: str, doc: dict[str, Any] | None = None,
                   *, delete: bool = False) -> None:
        value = None if delete else rule_record(doc or rule_doc(account, segment))
        async with self.producer.transaction():
            await self.producer.send(self.settings.topic(RULES_TOPIC), value,
                                     key=rule_key(account, segment))

    async def raw(self, name: str, value: bytes | None, key: bytes | None) -> None:
        async with self.producer.transaction():
            await self.producer.send(self.settings.topic(name), value, key=key)


@asynccontextmanager
async def feeder(settings: Settings) -> AsyncIterator[Feeder]:
    f = Feeder(settings)
    await f.start()
    try:
        yield f
    finally:
        await f.stop()


async def delete_namespace(redis: Redis, prefix: str) -> int:
    """Delete this test's keys only (every key starts with its unique prefix)."""
    keys = [k async for k in redis.scan_iter(match=glob_escape(prefix) + "*", count=1000)]
    return int(await redis.unlink(*keys)) if keys else 0


async def dump_namespace(redis: Redis, prefix: str) -> dict[str, Any]:
    """The served state, comparable across generations: generation stripped from keys,
    bookkeeping left out (current generation, replay offsets, seqs)."""
    current = await redis.get(f"{prefix}seg:current")
    gen = _text(current) if current else "0"
    head = f"{prefix}seg:{gen}:"
    state: dict[str, Any] = {}
    async for raw in redis.scan_iter(match=glob_escape(head) + "*", count=1000):
        key = _text(raw)
        if key == head + "seqs":
            continue
        kind = _text(await redis.type(raw))
        if kind == "set":
            value: Any = sorted(await redis.smembers(raw))
        elif kind == "zset":
            value = await redis.zrange(raw, 0, -1, withscores=True)
        elif kind == "hash":
            value = dict(sorted((await redis.hgetall(raw)).items()))
        else:
            value = await redis.get(raw)
        state[key.removeprefix(head)] = value
    return state


def _text(raw: str | bytes) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


async def get_json(session: aiohttp.ClientSession, url: str, *,
                   headers: dict[str, str] | None = None, **params: Any) -> tuple[int, Any]:
    """GET with an admin token unless `headers` say otherwise (`headers={}`: none)."""
    async with session.get(url, params={k: str(v) for k, v in params.items()},
                           headers=ADMIN if headers is None else headers) as response:
        return response.status, await response.json()
