"""On the real broker: what the shared readers see is checked against `schemas/`.

The readers of the test helpers run `tests.record_schemas.check_records` on every record,
so a record that breaks its topic's schema fails whichever test reads it; and the rule
records that `segments rules` publishes follow `schemas/segments.rules.schema.json`.
"""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer

from common.settings import Settings
from common.topics import MEMBERSHIP_TOPIC, RULES_TOPIC, TOPICS, ensure_topics
from segments.rules_admin import delete_rule, publish_rule
from stream.changes import MembershipChange
from tests.drain import read_to_end
from tests.record_schemas import RecordSchemaError
from tests.reliability.topics import read_topic

pytestmark = pytest.mark.integration

CHANGE = MembershipChange("acme", "vip", "ann@example.com", "joined", "2026-11-26T23:00:00Z",
                          "fact", "ch_1:succeeded", 1, "2026-11-26T23:00:02Z")


async def _produce(settings: Settings, topic: str, key: bytes, value: bytes | None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(topic), value, key=key)
    finally:
        await producer.stop()


async def test_the_shared_readers_fail_on_a_record_that_breaks_its_schema(
        settings: Settings) -> None:
    await ensure_topics(settings, tuple(s for s in TOPICS if s.name == MEMBERSHIP_TOPIC))
    await _produce(settings, MEMBERSHIP_TOPIC, CHANGE.key(), CHANGE.to_bytes())
    topic = settings.topic(MEMBERSHIP_TOPIC)
    assert [r.value for r in await read_to_end(settings, topic)] == [
        CHANGE.to_bytes()]

    # A change without its schema version, as a producer that forgot it would write.
    await _produce(settings, MEMBERSHIP_TOPIC, CHANGE.key(),
                   CHANGE.to_bytes().replace(b'"v":1,', b""))
    with pytest.raises(RecordSchemaError, match="'v' is a required property"):
        await read_to_end(settings, topic)
    with pytest.raises(RecordSchemaError, match="'v' is a required property"):
        await read_topic(settings.kafka_bootstrap_servers, topic)


async def test_published_rules_follow_the_rules_record_schema(settings: Settings) -> None:
    await publish_rule(settings, {
        "id": "vip", "account_id": "acme", "name": "VIP", "filter": "charge_succeeded",
        "conditions": [{"field": "amount", "op": "between", "value": ["10", "99.90"]},
                       {"field": "date", "op": "after", "value": "2026-11-01"}]})
    await publish_rule(settings, {"id": "vip", "account_id": "acme", "name": "VIP 2",
                                  "filter": "charge_succeeded", "conditions": []})
    assert await delete_rule(settings, "acme", "vip")
    records = await read_to_end(settings, settings.topic(RULES_TOPIC))
    assert [r.value is None for r in records] == [False, False, True]
    assert [r.value[:7] for r in records[:2]] == [b'{"v":1,'] * 2
