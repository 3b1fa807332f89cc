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
from stream.facts import contact_key

Change = Literal["joined", "left"]
#: `erased`: the person was erased (`segments forget`, stream.erasure).
Cause = Literal["fact", "time", "rule", "erased"]


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
        # the same bytes as `orjson.dumps(asdict(self))`, without the deep copy.
        return orjson.dumps(self)

    @classmethod
    def from_bytes(cls, raw: bytes) -> MembershipChange:
        doc: dict[str, Any] = orjson.loads(raw)
        return cls(**doc)


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
