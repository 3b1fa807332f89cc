"""Rule writes on `segments.rules`: the query API (and the CLI) own the rule `version`.

The compacted topic is the only store of rules: one record per (account, segment), the
canonical rule document with its `version` as value, a tombstone on delete. The version
in force is read from the topic itself, the new one is that + 1 (1 for a new rule).

Concurrent writers of one segment are serialised by Kafka's own fencing, not by a lock
that can expire: each write uses a transactional producer whose transactional id names
the segment (`{prefix}segments-rules:{account}:{segment}`). Starting it
(`InitProducerId`) bumps the id's epoch, which aborts a transaction another writer of
the same segment has open and makes that writer's later send or commit fail
(`ProducerFenced`); only then is the topic read, read_committed, up to its high
watermark. So of two overlapping writers of one segment at most one commits, and the
one that commits read every version committed before it: the compare (`If-Match`) and
the +1 are made on the latest version. A fenced writer answers a conflict (409) when the
caller gave `If-Match`, and otherwise starts over (a few times).

Limits: a writer that bypasses this (a raw producer on the topic) is not serialised;
each write reads the whole single-partition topic (fine for thousands of rules, a
cached table would be the next step); a transactional id lives in the broker's
transaction coordinator until `transactional.id.expiration.ms` (7 days by default) after
its last use. The read model (`GET`) follows the topic a moment later; writes answer
only once the record is committed (acks=all).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import InvalidProducerEpoch, ProducerFenced

from common import kafka
from common.keys import split
from common.settings import Settings
from common.topics import RULES_TOPIC, TOPICS, ensure_topics
from rules import Rule
from serving.errors import ServingError
from stream.changes import rule_document, rule_key, rule_record

RuleKey = tuple[str, str]

_RULES_SPECS = tuple(spec for spec in TOPICS if spec.name == RULES_TOPIC)
#: What a writer's send or commit raises once a newer writer of its segment started.
FENCED = (ProducerFenced, InvalidProducerEpoch)
#: Starts over of a write without If-Match that a concurrent writer fenced.
ATTEMPTS = 8
#: Upper bound of the random pause before the first start-over, doubled for each next
#: one: writers that fenced each other at once spread out instead of fencing each other
#: again (three at once with no pause ran out of three attempts: a spurious 409).
BACKOFF_S = 0.05

#: How long reading the topic to its end may take (an open transaction holds it up).
READ_TIMEOUT_S = 30.0


class VersionConflict(ServingError):
    """If-Match named another version than the one in force (or a concurrent write won)."""

    @classmethod
    def mismatch(cls, expected: int, found: int | None) -> VersionConflict:
        in_force = "no rule" if found is None else f"version {found}"
        return cls(f"If-Match: {expected}, but {in_force} is in force")

    @classmethod
    def overtaken(cls) -> VersionConflict:
        return cls("a concurrent write to this segment won; read it again and retry")


class RuleNotFound(ServingError, LookupError):
    pass


class ReadTimeout(ServingError):
    retriable = True


@dataclasses.dataclass(frozen=True, slots=True)
class Stored:
    rule: Rule
    created: bool


async def ensure_rules_topic(settings: Settings) -> None:
    """Create the rules topic if it is missing (the broker does not auto-create)."""
    await ensure_topics(settings, _RULES_SPECS)


def _split_key(key: bytes) -> RuleKey:
    account_id, rule_id = split(key, 2)
    return account_id, rule_id


async def read_rules(settings: Settings) -> dict[RuleKey, dict[str, Any]]:
    """Every live rule document, keyed by (account_id, rule_id); {} if no topic yet.

    Committed records only, up to the high watermark seen at the first fetch: records
    of another writer's still open transaction are waited for, never skipped, so a
    record committed after it is not missed (reading to the last stable offset would).
    """
    topic = settings.topic(RULES_TOPIC)
    consumer = kafka.consumer(
        settings, group_id=None,
        enable_auto_commit=False, auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    try:
        await consumer.start()
        if topic not in await consumer.topics():
            return {}
        tp = TopicPartition(topic, 0)  # one partition by contract
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        rules: dict[RuleKey, dict[str, Any]] = {}
        target: int | None = None
        deadline = asyncio.get_running_loop().time() + READ_TIMEOUT_S
        while target is None or await consumer.position(tp) < target:
            if asyncio.get_running_loop().time() > deadline:
                raise ReadTimeout(f"{topic} not read to its end in {READ_TIMEOUT_S:.0f} s")
            batches = await consumer.getmany(tp, timeout_ms=200)
            for record in batches.get(tp, []):
                if record.key is None:
                    continue
                key = _split_key(record.key)
                if record.value is None:
                    rules.pop(key, None)
                else:
                    doc = rule_document(orjson.loads(record.value))
                    if isinstance(doc, dict):
                        rules[key] = doc
            if target is None:
                target = consumer.highwater(tp)
        return rules
    finally:
        await consumer.stop()


async def _back_off(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0, BACKOFF_S * 2**attempt))


def transactional_id(settings: Settings, account_id: str, segment_id: str) -> str:
    return f"{settings.topic_prefix}segments-rules:{account_id}:{segment_id}"


@asynccontextmanager
async def _fenced(settings: Settings, account_id: str,
                  segment_id: str) -> AsyncIterator[AIOKafkaProducer]:
    """A producer that has fenced every earlier writer of this segment."""
    producer = kafka.producer(
        settings,
        transactional_id=transactional_id(settings, account_id, segment_id),
        acks="all", enable_idempotence=True,
    )
    await producer.start()  # InitProducerId: bumps the epoch, aborts an open transaction
    try:
        yield producer
    finally:
        await producer.stop()


async def _write(producer: AIOKafkaProducer, settings: Settings, key: bytes,
                 value: bytes | None) -> None:
    async with producer.transaction():
        await producer.send_and_wait(settings.topic(RULES_TOPIC), value, key=key)


def _version(doc: dict[str, Any] | None) -> int | None:
    if doc is None:
        return None
    raw = doc.get("version", 1)
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else 1


async def put_rule(settings: Settings, rule: Rule, if_match: int | None = None) -> Stored:
    """Store `rule` (already validated) as its segment's next version.

    VersionConflict when `if_match` is not the version in force (or a concurrent
    writer of the segment won meanwhile)."""
    await ensure_rules_topic(settings)
    for attempt in range(ATTEMPTS):
        try:
            async with _fenced(settings, *rule.key) as producer:
                previous = _version((await read_rules(settings)).get(rule.key))
                if if_match is not None and previous != if_match:
                    raise VersionConflict.mismatch(if_match, previous)
                stored = dataclasses.replace(rule, version=(previous or 0) + 1)
                await _write(producer, settings, rule_key(*rule.key),
                             rule_record(stored.to_dict()))
                return Stored(stored, previous is None)
        except FENCED:
            if if_match is not None or attempt == ATTEMPTS - 1:
                raise VersionConflict.overtaken() from None
            await _back_off(attempt)
    raise AssertionError("unreachable")


async def delete_rule(settings: Settings, account_id: str, segment_id: str,
                      if_match: int | None = None) -> None:
    """Publish the segment's tombstone; RuleNotFound (nothing written) if it has no rule."""
    await ensure_rules_topic(settings)
    for attempt in range(ATTEMPTS):
        try:
            async with _fenced(settings, account_id, segment_id) as producer:
                previous = _version((await read_rules(settings)).get((account_id, segment_id)))
                if previous is None:
                    raise RuleNotFound(f"segment {segment_id!r} not found in account "
                                       f"{account_id!r}")
                if if_match is not None and previous != if_match:
                    raise VersionConflict.mismatch(if_match, previous)
                await _write(producer, settings, rule_key(account_id, segment_id), None)
                return
        except FENCED:
            if if_match is not None or attempt == ATTEMPTS - 1:
                raise VersionConflict.overtaken() from None
            await _back_off(attempt)
