"""The published record contract: `schemas/` and the golden records of `tests/golden/`.

Each golden file holds the exact bytes of one record value as the producing code writes
it (the file is compared byte for byte, so any change of a field, its order or its type
shows up in review as a changed golden file), and validates against its topic's schema
together with its key. The validation hook the integration tests use
(`tests/record_schemas.py`) is shown to fail on records that break the contract.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from jsonschema import Draft202012Validator

from common.topics import (
    EVENTS_TOPIC,
    FACTS_TOPIC,
    MEMBERS_TOPIC,
    MEMBERSHIP_TOPIC,
    RULES_TOPIC,
)
from connectors.contract import RawEvent
from rules import parse_rule
from stream.changes import MembershipChange, member_key, member_state, rule_key, rule_record
from stream.facts import Fact
from tests.record_schemas import (
    SCHEMA_TOPICS,
    RecordSchemaError,
    check_record,
    check_records,
    rules_record_schema,
    schema,
    schema_path,
    topic_of,
)

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).resolve().parent.parent / "golden"

EVENT = RawEvent("conn1", "acme", "backfill", 1_764_198_000_123, {
    "id": "evt_1", "object": "event", "api_version": "2024-06-20", "type": "charge.refunded",
    "created": 1_764_198_000, "livemode": False,
    "data": {"object": {"id": "ch_1", "object": "charge", "customer": "cus_1",
                        "amount": 7500, "amount_refunded": 6000, "currency": "usd"}}})
FACT = Fact("re_1", "refunded", "acme", "conn1", "ann@example.com", 1_764_198_000,
            customer_id="cus_1", amount=7500, currency="usd", refund_amount=6000,
            source_event_id="evt_1", source_event_type="charge.refunded")
CHANGE = MembershipChange("acme", "big-refunds", "ann@example.com", "joined",
                          "2025-11-26T23:00:00Z", "fact", "re_1", 2, "2025-11-26T23:00:04Z")
RULE = dataclasses.replace(parse_rule({
    "id": "big-refunds", "account_id": "acme", "name": "Refunded over $50 this month",
    "filter": "refunded", "conditions": [
        {"field": "refund_amount", "op": "gt", "value": "50"},
        {"field": "currency", "op": "in", "value": ["usd", "eur"]},
        {"field": "date", "op": "within_last", "value": {"count": 30, "unit": "days"}}],
    "timezone": "UTC"}), version=2)

#: topic -> (key, the value as the producing code writes it)
PRODUCED: dict[str, tuple[bytes, Callable[[], bytes | None]]] = {
    EVENTS_TOPIC: (EVENT.key(), EVENT.to_bytes),
    FACTS_TOPIC: (FACT.key(), FACT.to_bytes),
    MEMBERSHIP_TOPIC: (CHANGE.key(), CHANGE.to_bytes),
    MEMBERS_TOPIC: (member_key("acme", "big-refunds", "ann@example.com"),
                    lambda: member_state(CHANGE)),
    RULES_TOPIC: (rule_key(*RULE.key), lambda: rule_record(RULE.to_dict())),
}


def golden(topic: str) -> bytes:
    return (GOLDEN / f"{topic}.json").read_bytes()


def test_there_is_a_schema_and_a_golden_record_for_each_public_topic() -> None:
    assert set(PRODUCED) == set(SCHEMA_TOPICS)
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(f"{t}.json" for t in PRODUCED)
    for topic in SCHEMA_TOPICS:
        Draft202012Validator.check_schema(schema(topic))
        assert schema(topic)["$id"] == f"urn:stripe-segments:topic:{topic}"
        assert "v" in schema(topic)["required"]


@pytest.mark.parametrize("topic", sorted(PRODUCED))
def test_the_producer_writes_the_golden_bytes(topic: str) -> None:
    _, produce = PRODUCED[topic]
    assert produce() == golden(topic)


@pytest.mark.parametrize("topic", sorted(PRODUCED))
def test_the_golden_record_follows_its_schema_and_key_format(topic: str) -> None:
    key, _ = PRODUCED[topic]
    check_record(topic, key, golden(topic))
    assert json.loads(golden(topic))["v"] == 1


def test_the_rules_schema_is_the_rule_document_schema_plus_v() -> None:
    """Regenerate with `python3 -m tests.record_schemas > schemas/segments.rules.schema.json`."""
    assert json.loads(schema_path(RULES_TOPIC).read_text()) == rules_record_schema()


def test_tombstones_where_the_contract_has_them() -> None:
    check_record(MEMBERS_TOPIC, PRODUCED[MEMBERS_TOPIC][0], member_state(
        dataclasses.replace(CHANGE, change="left")))
    check_record(RULES_TOPIC, PRODUCED[RULES_TOPIC][0], None)


def test_topic_names_with_a_prefix() -> None:
    assert topic_of("t123.segments.members") == MEMBERS_TOPIC
    assert topic_of("t123.segments.membership") == MEMBERSHIP_TOPIC
    assert topic_of("t123.stripe.events") == EVENTS_TOPIC
    assert topic_of("t123.stripe.events.dlq") is None
    assert topic_of("t123.segments.state.rules") is None


def _replace(topic: str, **fields: object) -> bytes:
    doc = json.loads(golden(topic))
    doc.update(fields)
    return json.dumps(doc).encode()


def _without(topic: str, name: str) -> bytes:
    doc = json.loads(golden(topic))
    del doc[name]
    return json.dumps(doc).encode()


BROKEN = [
    (MEMBERSHIP_TOPIC, None, _without(MEMBERSHIP_TOPIC, "v"), "'v' is a required property"),
    (MEMBERSHIP_TOPIC, None, _replace(MEMBERSHIP_TOPIC, v=2), "1 was expected"),
    (MEMBERSHIP_TOPIC, None, _replace(MEMBERSHIP_TOPIC, change="moved"), "is not one of"),
    (MEMBERSHIP_TOPIC, None, _replace(MEMBERSHIP_TOPIC, at="2025-11-26 23:00"), "at:"),
    (MEMBERSHIP_TOPIC, None, _replace(MEMBERSHIP_TOPIC, email="Ann@Example.com"), "email:"),
    (MEMBERSHIP_TOPIC, None, _replace(MEMBERSHIP_TOPIC, extra=1), "extra: not declared"),
    (MEMBERSHIP_TOPIC, b"acme\x1fbob@example.com", None, "no tombstones"),
    (MEMBERSHIP_TOPIC, b"acme\x1fbob@example.com", golden(MEMBERSHIP_TOPIC), "key part 1"),
    (MEMBERSHIP_TOPIC, b"acme:ann@example.com", golden(MEMBERSHIP_TOPIC), "key parts"),
    (FACTS_TOPIC, None, _replace(FACTS_TOPIC, amount=75.5), "amount:"),
    (FACTS_TOPIC, None, _replace(FACTS_TOPIC, filter="paid"), "filter:"),
    (FACTS_TOPIC, None, _without(FACTS_TOPIC, "plans"), "'plans' is a required"),
    (EVENTS_TOPIC, None, _replace(EVENTS_TOPIC, event={"id": "evt_1", "type": "x"}),
     "'created' is a required"),
    (EVENTS_TOPIC, b"conn2:cus_1", golden(EVENTS_TOPIC), "<connection_id>:<subject>"),
    (MEMBERS_TOPIC, None, _without(MEMBERS_TOPIC, "since"), "'since' is a required"),
    (MEMBERS_TOPIC, b"acme\x1fother\x1fann@example.com", golden(MEMBERS_TOPIC), "segment_id"),
    (RULES_TOPIC, None, _replace(RULES_TOPIC, filter="paid"), "filter:"),
    (RULES_TOPIC, None, _without(RULES_TOPIC, "version"), "'version' is a required"),
    (RULES_TOPIC, None, b"not json", "not JSON"),
]


@pytest.mark.parametrize(("topic", "key", "value", "message"), BROKEN)
def test_the_hook_fails_a_record_that_breaks_the_contract(
        topic: str, key: bytes | None, value: bytes | None, message: str) -> None:
    """What the integration tests' readers run on every record: a broken one fails."""
    record = SimpleNamespace(topic=f"tprefix.{topic}", key=key or PRODUCED[topic][0],
                             value=value)
    with pytest.raises(RecordSchemaError, match=message.replace("(", r"\(")):
        check_records([record])
    check_records([SimpleNamespace(topic="tprefix.stripe.events.dlq", key=None,
                                   value=b"anything")])  # not a contract topic
