"""The membership topics' contract: what Center and downstream consumers read.

`segments.membership` carries one `MembershipChange` per change, keyed by the contact
(account + email), so one member's changes stay in order on one partition.
`segments.members` is compacted and holds the current state per (account, segment,
email); a leave writes a tombstone, so the topic alone rebuilds the whole picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from common.keys import pack, split
from common.records import RECORD_VERSION, UnsupportedRecordVersion, record_version, versioned
from rules.errors import FieldError, RuleError
from stream.facts import contact_key

Change = Literal["joined", "left"]
Cause = Literal["fact", "time", "rule"]


def iso(ts: int) -> str:
    """Epoch seconds as SPEC's UTC timestamp, e.g. 2026-11-26T23:00:00Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class MembershipChange:
    account_id: str
    segment_id: str
    email: str
    change: Change
    #: When membership changed (event time of the cause), ISO-8601 UTC.
    at: str
    cause: Cause
    fact_id: str | None
    rule_version: int

    def key(self) -> bytes:
        return contact_key(self.account_id, self.email)

    def to_bytes(self) -> bytes:
        # orjson serializes a (slotted) dataclass natively, fields in declaration order:
        # the same bytes as `orjson.dumps(asdict(self))`, without the deep copy; the
        # schema version "v" goes first.
        return versioned(orjson.dumps(self))

    @classmethod
    def from_bytes(cls, raw: bytes) -> MembershipChange:
        """Decode a `segments.membership` value: without `"v"` (an earlier release) it
        is version 1; another version raises UnsupportedRecordVersion (a ValueError);
        fields this release does not know are ignored."""
        doc: dict[str, Any] = orjson.loads(raw)
        if not isinstance(doc, dict):
            raise TypeError("a membership change is a JSON object")
        record_version(doc)
        return cls(**{k: v for k, v in doc.items() if k in _CHANGE_FIELDS})


_CHANGE_FIELDS = frozenset(MembershipChange.__dataclass_fields__)


def member_key(account_id: str, segment_id: str, email: str) -> bytes:
    """Key of `segments.members`: one record per (account, segment, email)."""
    return pack(account_id, segment_id, email)


def split_member_key(key: bytes) -> tuple[str, str, str]:
    account_id, segment_id, email = split(key, 3)
    return account_id, segment_id, email


def member_state(change: MembershipChange) -> bytes | None:
    """The `segments.members` value after `change`: the state, or a tombstone on leave."""
    if change.change == "left":
        return None
    return orjson.dumps(
        {
            "v": RECORD_VERSION,
            "account_id": change.account_id,
            "segment_id": change.segment_id,
            "email": change.email,
            "since": change.at,
            "fact_id": change.fact_id,
            "rule_version": change.rule_version,
        }
    )


def rule_key(account_id: str, rule_id: str) -> bytes:
    """Key of `segments.rules`: rule ids are unique per account, not globally."""
    return pack(account_id, rule_id)


def rule_record(document: dict[str, Any]) -> bytes:
    """The `segments.rules` value of a rule document (`Rule.to_dict()`): the document
    with the schema version `"v"` first."""
    return orjson.dumps({"v": RECORD_VERSION, **document})


def rule_document(record: object) -> object:
    """The rule document of a decoded `segments.rules` value, for `rules.parse_rule`:
    `"v"` checked (missing = 1; another version raises RuleError, as any rule this
    release cannot evaluate does) and removed. Anything but an object is returned as it
    is, for `parse_rule` to refuse."""
    if not isinstance(record, dict):
        return record
    try:
        record_version(record)
    except UnsupportedRecordVersion as exc:
        raise RuleError([FieldError("v", str(exc))]) from None
    return {k: v for k, v in record.items() if k != "v"}
