"""Rules on the compacted `segments.rules` topic: read them back, publish, delete.

The topic is the only store of rules: one record per (account, rule id), the canonical
rule document as value, a tombstone on delete. Reading means consuming the single
partition from the beginning up to the end offset captured at the start, with no
consumer group (nothing is committed). Writes go through an idempotent producer with
`acks=all` and wait for the broker's ack, so a command that returns has been stored.

`publish_rule` reads the current version before writing the next one; two admins
changing the same rule at the same instant can both write the same version. The CLI is
an operator tool, so that race is accepted rather than locked against.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson

from common.keys import split
from common.settings import Settings
from common.topics import RULES_TOPIC, TOPICS, ensure_topics
from rules import Rule, parse_rule
from stream.changes import rule_document, rule_key, rule_record

RuleKey = tuple[str, str]

_RULES_SPECS = tuple(spec for spec in TOPICS if spec.name == RULES_TOPIC)


async def ensure_rules_topic(settings: Settings) -> None:
    """Create the rules topic if it is missing (the broker does not auto-create)."""
    await ensure_topics(settings, _RULES_SPECS)


def _split_key(key: bytes) -> RuleKey:
    account_id, rule_id = split(key, 2)
    return account_id, rule_id


async def read_rules(settings: Settings) -> dict[RuleKey, dict[str, Any]]:
    """Every live rule document, keyed by (account_id, rule_id); {} if no topic yet."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = settings.topic(RULES_TOPIC)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await consumer.start()
        if topic not in await consumer.topics():
            return {}
        # One partition by contract; metadata of a just-created topic may still be empty.
        numbers = consumer.partitions_for_topic(topic) or {0}
        partitions = [TopicPartition(topic, p) for p in sorted(numbers)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        rules: dict[RuleKey, dict[str, Any]] = {}
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp] or record.key is None:
                        continue
                    key = _split_key(record.key)
                    if record.value is None:
                        rules.pop(key, None)
                    else:
                        doc = rule_document(orjson.loads(record.value))
                        if isinstance(doc, dict):
                            rules[key] = doc
            # Compaction can leave gaps, so compare positions rather than counting records.
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        return rules
    finally:
        await consumer.stop()


async def _send(settings: Settings, key: bytes, value: bytes | None) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
    )
    try:
        await producer.start()
        await producer.send_and_wait(settings.topic(RULES_TOPIC), value, key=key)
    finally:
        await producer.stop()


async def publish_rule(settings: Settings, doc: object) -> Rule:
    """Validate `doc` and store it as the rule's next version; returns the stored rule.

    Raises `rules.RuleError` (and publishes nothing) when the document is invalid. Any
    `version` in `doc` is ignored: it is the previous version + 1, or 1 for a new rule.
    """
    if isinstance(doc, Mapping):
        doc = {k: v for k, v in doc.items() if k != "version"}
    rule = parse_rule(doc)
    await ensure_rules_topic(settings)
    previous = (await read_rules(settings)).get(rule.key)
    version = int(previous.get("version", 0)) + 1 if previous else 1
    rule = dataclasses.replace(rule, version=version)
    await _send(settings, rule_key(*rule.key), rule_record(rule.to_dict()))
    return rule


async def delete_rule(settings: Settings, account_id: str, rule_id: str) -> bool:
    """Publish a tombstone for the rule; False (and nothing written) if there is none."""
    if (account_id, rule_id) not in await read_rules(settings):
        return False
    await _send(settings, rule_key(account_id, rule_id), None)
    return True
