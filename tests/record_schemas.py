"""Every record a test reads from a public topic is checked against `schemas/`.

The test helpers that read topics (`tests/drain.py`, `tests/connector_harness.py`,
`tests/reliability/topics.py`, the readers of `tests/integration/test_pipeline.py`) pass
what they read through `check_records`, so an integration test fails as soon as a
producer writes a value its schema does not describe. Beyond the schema (draft 2020-12,
with format checks) a record must:

- name no top-level field the schema does not declare (the published schemas are open so
  that consumers survive additive changes; our own producers must document every field);
- have the key its topic's contract says (`docs/consumers.md`), naming the same
  account, segment or rule and email as the value.

`schemas/segments.rules.schema.json` is derived from the rule schema
(`rules/schema.json`) by `rules_record_schema`; regenerate it with
`python3 -m tests.record_schemas > schemas/segments.rules.schema.json`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from common.keys import MalformedKey, split
from common.topics import (
    EVENTS_TOPIC,
    FACTS_TOPIC,
    MEMBERS_TOPIC,
    MEMBERSHIP_TOPIC,
    RULES_TOPIC,
)
from rules.schema import build_schema

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
#: The topics with a schema, longest name first (so a suffix match picks the right one).
SCHEMA_TOPICS = tuple(sorted((EVENTS_TOPIC, FACTS_TOPIC, MEMBERSHIP_TOPIC, MEMBERS_TOPIC,
                              RULES_TOPIC), key=len, reverse=True))
#: Topics whose null value (a tombstone) is part of the contract.
TOMBSTONES = (MEMBERS_TOPIC, RULES_TOPIC)


class RecordSchemaError(AssertionError):
    """A record read from a topic does not follow its published schema or key format."""


def schema_path(topic: str) -> Path:
    return SCHEMAS_DIR / f"{topic}.schema.json"


@cache
def schema(topic: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(schema_path(topic).read_text())
    return doc


@cache
def validator(topic: str) -> Draft202012Validator:
    doc = schema(topic)
    Draft202012Validator.check_schema(doc)
    return Draft202012Validator(doc, format_checker=Draft202012Validator.FORMAT_CHECKER)


def rules_record_schema() -> dict[str, Any]:
    """The schema of a `segments.rules` value: the rule document (`rules/schema.json`)
    with `"v"`, as `segments/rules_admin.py` publishes it (canonical: `timezone` and
    `version` always present); open at the top level like the other record schemas."""
    doc = copy.deepcopy(build_schema())
    version = schema(MEMBERSHIP_TOPIC)["properties"]["v"]
    del doc["additionalProperties"]
    return {
        "$schema": doc.pop("$schema"),
        "$id": f"urn:stripe-segments:topic:{RULES_TOPIC}",
        "title": "Rule record",
        "description": "The rule in force for one segment (segments/rules_admin.py): the "
                       "rule document of rules/schema.json plus \"v\"; compacted. A null "
                       "value (tombstone) means the rule was deleted.",
        "x-kafka-key": "UTF-8 \"<account_id>\\u001f<rule id>\"",
        "type": "object",
        "required": ["v", *doc.pop("required"), "timezone", "version"],
        "properties": {"v": version, **doc.pop("properties")},
        **{k: v for k, v in doc.items() if k not in ("$id", "title", "description", "type")},
    }


def topic_of(name: str) -> str | None:
    """The schema topic a (prefixed) topic name is, or None for any other topic."""
    return next((t for t in SCHEMA_TOPICS if name.endswith(t)), None)


def _key_parts(topic: str, key: bytes | None, doc: dict[str, Any]) -> list[str]:
    """What is wrong with `key` for a value `doc` of `topic` (empty: nothing)."""
    if key is None:
        return ["the record has no key"]
    if topic == EVENTS_TOPIC:
        prefix = f"{doc.get('connection_id')}:".encode()
        return [] if key.startswith(prefix) and len(key) > len(prefix) else [
            f"key {key!r} is not <connection_id>:<subject>"]
    expected = {
        FACTS_TOPIC: ("account_id", "email"),
        MEMBERSHIP_TOPIC: ("account_id", "email"),
        MEMBERS_TOPIC: ("account_id", "segment_id", "email"),
        RULES_TOPIC: ("account_id", "id"),
    }[topic]
    try:
        parts = split(key, len(expected))
    except (MalformedKey, UnicodeDecodeError) as exc:
        return [f"key {key!r}: {exc}"]
    return [f"key part {i} ({field}) is {part!r}, the value says {doc.get(field)!r}"
            for i, (field, part) in enumerate(zip(expected, parts, strict=True))
            if doc.get(field) != part]


def problems(topic: str, key: bytes | None, value: bytes | None) -> list[str]:
    """Every way a record of `topic` (unprefixed) breaks its contract; [] if none."""
    if value is None:
        if topic not in TOMBSTONES:
            return [f"{topic} has no tombstones, got a null value"]
        return [] if key is not None else ["a tombstone without a key"]
    try:
        doc = json.loads(value)
    except ValueError as exc:
        return [f"value is not JSON: {exc}"]
    found = [f"{'/'.join(map(str, error.absolute_path)) or '(value)'}: {error.message}"
             for error in validator(topic).iter_errors(doc)]
    if isinstance(doc, dict):
        declared = schema(topic)["properties"]
        found += [f"{name}: not declared in the schema" for name in doc if name not in declared]
        if key is not None or topic != RULES_TOPIC:
            found += _key_parts(topic, key, doc)
    return found


def check_record(topic: str, key: bytes | None, value: bytes | None) -> None:
    """Raise RecordSchemaError unless the record follows its topic's contract."""
    found = problems(topic, key, value)
    if found:
        shown = value if value is None or len(value) < 2000 else value[:2000] + b"..."
        raise RecordSchemaError(
            f"a record on {topic} breaks schemas/{topic}.schema.json or its key format:\n  "
            + "\n  ".join(found) + f"\nkey: {key!r}\nvalue: {shown!r}")


def check_records(records: Iterable[Any]) -> None:
    """Check every Kafka record (`.topic`, `.key`, `.value`) that is on a schema topic."""
    for record in records:
        topic = topic_of(record.topic)
        if topic is not None:
            check_record(topic, record.key, record.value)


if __name__ == "__main__":
    print(json.dumps(rules_record_schema(), indent=2, ensure_ascii=False))
