"""The topics' bytes are a contract with other programs (Center, the read model, a
worker of the previous release): each record here is written out as the literal bytes
of its key and value, so renaming, reordering, dropping or re-typing a field fails.

Decoding goes the other way: the literal is parsed back to the same object. Every
literal also follows its topic's published schema (`schemas/`) and key format.
"""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from common.records import UnsupportedRecordVersion, versioned
from common.topics import EVENTS_TOPIC, FACTS_TOPIC, MEMBERS_TOPIC, MEMBERSHIP_TOPIC, RULES_TOPIC
from connectors.contract import RawEvent
from rules import parse_rule
from rules.errors import RuleError
from stream.changes import (
    MembershipChange,
    member_key,
    member_state,
    rule_document,
    rule_key,
    rule_record,
)
from stream.facts import Fact, FactDecodeError
from stream.partition_state import rule_from_doc
from tests.record_schemas import check_record

pytestmark = pytest.mark.unit


def test_the_envelope_on_stripe_events() -> None:
    event = {"id": "evt_1", "object": "event", "type": "charge.succeeded",
             "created": 1_700_000_000,
             "data": {"object": {"id": "ch_1", "object": "charge", "customer": "cus_1",
                                 "amount": 1000}}}
    envelope = RawEvent("conn1", "acme", "webhook", 1_700_000_000_123, event)
    literal = (
        b'{"v":1,"connection_id":"conn1","account_id":"acme","source":"webhook",'
        b'"received_at_ms":1700000000123,'
        b'"event":{"id":"evt_1","object":"event","type":"charge.succeeded",'
        b'"created":1700000000,"data":{"object":{"id":"ch_1","object":"charge",'
        b'"customer":"cus_1","amount":1000}}}}'
    )
    assert envelope.key() == b"conn1:cus_1"
    assert envelope.to_bytes() == literal
    assert RawEvent.from_bytes(literal) == envelope
    check_record(EVENTS_TOPIC, envelope.key(), literal)


@pytest.mark.parametrize(("fact", "key", "literal"), [
    (Fact("ch_1:succeeded", "charge_succeeded", "acme", "conn1", "ann@example.com",
          1_700_000_000, customer_id="cus_1", amount=1000, currency="usd",
          source_event_id="evt_1", source_event_type="charge.succeeded"),
     b"acme\x1fann@example.com",
     b'{"v":1,"fact_id":"ch_1:succeeded","filter":"charge_succeeded","account_id":"acme",'
     b'"connection_id":"conn1","email":"ann@example.com","occurred_at":1700000000,'
     b'"customer_id":"cus_1","amount":1000,"currency":"usd","refund_amount":null,'
     b'"plans":[],"start_date":null,"end_date":null,"source_event_id":"evt_1",'
     b'"source_event_type":"charge.succeeded"}'),
    (Fact("sub_1:changed:evt_2", "subscription_changed", "acme", "conn1", "bob@example.com",
          1_700_000_100, plans=("price_1", "prod_1"), start_date=1_690_000_000,
          end_date=1_710_000_000),
     b"acme\x1fbob@example.com",
     b'{"v":1,"fact_id":"sub_1:changed:evt_2","filter":"subscription_changed",'
     b'"account_id":"acme","connection_id":"conn1","email":"bob@example.com",'
     b'"occurred_at":1700000100,"customer_id":null,"amount":null,"currency":null,'
     b'"refund_amount":null,"plans":["price_1","prod_1"],"start_date":1690000000,'
     b'"end_date":1710000000,"source_event_id":"","source_event_type":""}'),
    (Fact("re_1", "refunded", "acme", "conn1", "cy@example.com", 1, amount=5000,
          currency="jpy", refund_amount=2500),
     b"acme\x1fcy@example.com",
     b'{"v":1,"fact_id":"re_1","filter":"refunded","account_id":"acme",'
     b'"connection_id":"conn1","email":"cy@example.com","occurred_at":1,"customer_id":null,"amount":5000,'
     b'"currency":"jpy","refund_amount":2500,"plans":[],"start_date":null,'
     b'"end_date":null,"source_event_id":"","source_event_type":""}'),
    # A retraction (issue 14): only retractions carry the flag, so every other fact
    # keeps the bytes above.
    (Fact("re_1", "refunded", "acme", "conn1", "cy@example.com", 1_700_000_000, amount=5000,
          currency="usd", refund_amount=2500, retracted=True),
     b"acme\x1fcy@example.com",
     b'{"v":1,"fact_id":"re_1","filter":"refunded","account_id":"acme","connection_id":"conn1",'
     b'"email":"cy@example.com","occurred_at":1700000000,"customer_id":null,"amount":5000,'
     b'"currency":"usd","refund_amount":2500,"plans":[],"start_date":null,'
     b'"end_date":null,"source_event_id":"","source_event_type":"","retracted":true}'),
])
def test_a_fact_on_stripe_facts(fact: Fact, key: bytes, literal: bytes) -> None:
    assert fact.key() == key
    assert fact.to_bytes() == literal
    assert Fact.from_bytes(literal) == fact
    check_record(FACTS_TOPIC, key, literal)


@pytest.mark.parametrize(("change", "literal", "members_value"), [
    # `observed_at` (issue 14): processing time, added at the end.
    (MembershipChange("acme", "big", "ann@example.com", "joined", "2026-11-26T23:00:00Z",
                      "fact", "re_3Q", 2, "2026-11-26T23:00:04Z"),
     b'{"v":1,"account_id":"acme","segment_id":"big","email":"ann@example.com",'
     b'"change":"joined","at":"2026-11-26T23:00:00Z","cause":"fact","fact_id":"re_3Q",'
     b'"rule_version":2,"observed_at":"2026-11-26T23:00:04Z"}',
     b'{"v":1,"account_id":"acme","segment_id":"big","email":"ann@example.com",'
     b'"since":"2026-11-26T23:00:00Z","fact_id":"re_3Q","rule_version":2}'),
    (MembershipChange("acme", "big", "ann@example.com", "left", "2026-11-27T00:00:00Z",
                      "rule", None, 1, "2026-11-27T00:00:01Z"),
     b'{"v":1,"account_id":"acme","segment_id":"big","email":"ann@example.com",'
     b'"change":"left","at":"2026-11-27T00:00:00Z","cause":"rule","fact_id":null,'
     b'"rule_version":1,"observed_at":"2026-11-27T00:00:01Z"}',
     None),  # a leave is a tombstone on the compacted topic
])
def test_a_membership_change_and_the_members_value(
        change: MembershipChange, literal: bytes, members_value: bytes | None) -> None:
    assert change.key() == b"acme\x1fann@example.com"
    assert change.to_bytes() == literal
    assert MembershipChange.from_bytes(literal) == change
    assert member_key("acme", "big", "ann@example.com") == b"acme\x1fbig\x1fann@example.com"
    assert member_state(change) == members_value
    check_record(MEMBERSHIP_TOPIC, change.key(), literal)
    check_record(MEMBERS_TOPIC, member_key("acme", "big", "ann@example.com"), members_value)


def test_a_membership_change_of_the_previous_release_still_decodes() -> None:
    literal = (b'{"account_id":"acme","segment_id":"big","email":"ann@example.com",'
               b'"change":"left","at":"2026-11-27T00:00:00Z","cause":"rule","fact_id":null,'
               b'"rule_version":1}')
    assert MembershipChange.from_bytes(literal) == MembershipChange(
        "acme", "big", "ann@example.com", "left", "2026-11-27T00:00:00Z", "rule", None, 1)


def test_a_rule_record_on_segments_rules() -> None:
    """What `segments rules put` publishes (`segments.rules_admin.publish_rule`: the
    parsed rule, normalised, with its version), and what the worker reads back."""
    document = {"id": "big", "account_id": "acme", "name": "Big spenders",
                "filter": "charge_succeeded", "timezone": "Europe/Berlin",
                "conditions": [
                    {"field": "amount", "op": "gte", "value": "100.50"},
                    {"field": "currency", "op": "in", "value": ["usd", "EUR"]},
                    {"field": "date", "op": "within_last",
                     "value": {"count": 30, "unit": "days"}},
                    {"field": "occurrences", "op": "gte", "value": 2}]}
    rule = dataclasses.replace(parse_rule(document), version=3)
    literal = (
        b'{"v":1,"id":"big","account_id":"acme","name":"Big spenders","filter":"charge_succeeded",'
        b'"conditions":[{"field":"amount","op":"gte","value":"100.5"},'
        b'{"field":"currency","op":"in","value":["usd","eur"]},'
        b'{"field":"date","op":"within_last","value":{"count":30,"unit":"days"}},'
        b'{"field":"occurrences","op":"gte","value":2}],'
        b'"timezone":"Europe/Berlin","version":3}'
    )
    assert rule_key(*rule.key) == b"acme\x1fbig"
    assert rule_record(rule.to_dict()) == literal
    assert rule_from_doc(literal) == rule
    assert rule_document(orjson.loads(literal)) == rule.to_dict()
    check_record(RULES_TOPIC, rule_key(*rule.key), literal)


# -- the schema version "v" across a rolling upgrade ----------------------------------

def _without_v(literal: bytes) -> bytes:
    assert literal.startswith(b'{"v":1,')
    return b"{" + literal[len(b'{"v":1,'):]


def _with(literal: bytes, extra: bytes) -> bytes:
    return literal[:-1] + b"," + extra + b"}"


FACT = Fact("re_1", "refunded", "acme", "conn1", "cy@example.com", 1, amount=5000,
            currency="jpy", refund_amount=2500)
CHANGE = MembershipChange("acme", "big", "ann@example.com", "joined", "2026-11-26T23:00:00Z",
                          "fact", "re_3Q", 2)
RULE = parse_rule({"id": "big", "account_id": "acme", "name": "Big", "filter": "refunded",
                   "conditions": []})


def test_records_of_an_earlier_release_without_v_read_as_version_1() -> None:
    assert Fact.from_bytes(_without_v(FACT.to_bytes())) == FACT
    assert MembershipChange.from_bytes(_without_v(CHANGE.to_bytes())) == CHANGE
    assert rule_from_doc(_without_v(rule_record(RULE.to_dict()))) == RULE


def test_fields_added_later_without_a_new_version_are_ignored() -> None:
    assert Fact.from_bytes(_with(FACT.to_bytes(), b'"new_field":[1]')) == FACT
    assert MembershipChange.from_bytes(_with(CHANGE.to_bytes(), b'"new_field":"x"')) == CHANGE


@pytest.mark.parametrize("version", [b"2", b"0", b'"1"', b"null", b"1.0"])
def test_a_version_this_release_does_not_know_is_refused(version: bytes) -> None:
    def other(literal: bytes) -> bytes:
        return b'{"v":' + version + b"," + literal[len(b'{"v":1,'):]

    with pytest.raises(FactDecodeError, match="version"):
        Fact.from_bytes(other(FACT.to_bytes()))
    with pytest.raises(UnsupportedRecordVersion):
        MembershipChange.from_bytes(other(CHANGE.to_bytes()))
    with pytest.raises(RuleError, match="version"):
        rule_from_doc(other(rule_record(RULE.to_dict())))


def test_versioned_needs_a_non_empty_object() -> None:
    assert versioned(b'{"a":1}') == b'{"v":1,"a":1}'
    for payload in (b"{}", b"[1]", b""):
        with pytest.raises(ValueError, match="non-empty JSON object"):
            versioned(payload)
