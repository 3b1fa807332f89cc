"""The membership topics' contract: what Center and downstream consumers read.

`segments.membership` carries one `MembershipChange` per change, keyed by the contact
(account + email), so one member's changes stay in order on one partition.
`segments.members` is compacted and holds the current state per (account, segment,
email); a leave writes a tombstone, so the topic alone rebuilds the whole picture.

Two instants per change (SPEC, "Membership over time"):

- `at`: when the change became true, in the terms of its `cause`:
  - `fact`: the fact's event time (Stripe's `created` of the occurrence, or of the
    retraction), or, when the fact predates the version of the rule in force, the
    instant that version came into force (the later of the two); never later than
    `observed_at` (an event dated ahead of the worker's clock, at most a day, counts
    from when it was seen). A late fact is dated by its event time, though its change
    is published when it arrives.
  - `time`: the due instant, when the relative window moved (not the tick that saw it).
  - `rule`: when the rule was created, changed or deleted: the instant the worker
    fanned the change out to the partitions, the same for every member.
- `observed_at`: processing time, when the worker made the change (its clock).

`segments.members` always states the rule version under which the member currently
qualifies: a rule edit that keeps a member rewrites its members record with the new
`rule_version` (same `since` and `fact_id`), without a membership event (nobody joined
or left).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from common.immutable import immutable
from common.keys import pack, split
from common.records import RECORD_VERSION, UnsupportedRecordVersion, record_version, versioned
from rules.errors import FieldError, RuleError
from stream.facts import contact_key

Change = Literal["joined", "left"]
#: `erased`: the person was erased (`segments forget`, stream.erasure).
Cause = Literal["fact", "time", "rule", "erased"]


@functools.lru_cache(maxsize=4096)
def iso(ts: int) -> str:
    """Epoch seconds as SPEC's UTC timestamp, e.g. 2026-11-26T23:00:00Z. Cached: every
    membership change carries the worker's current second, and formatting is slow."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@immutable
class MembershipChange:
    account_id: str
    segment_id: str
    email: str
    change: Change
    #: When the change became true, in the terms of its cause (see above), ISO UTC.
    at: str
    cause: Cause
    fact_id: str | None
    rule_version: int
    #: When the worker made the change (processing time), ISO-8601 UTC; empty only in
    #: records of earlier versions, which lacked it.
    observed_at: str = ""

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
    return member_record(change.account_id, change.segment_id, change.email, change.at,
                         change.fact_id, change.rule_version)


def member_record(account_id: str, segment_id: str, email: str, since: str,
                  fact_id: str | None, rule_version: int) -> bytes:
    """A `segments.members` value: a member since `since`, under `rule_version`."""
    return orjson.dumps(
        {
            "v": RECORD_VERSION,
            "account_id": account_id,
            "segment_id": segment_id,
            "email": email,
            "since": since,
            "fact_id": fact_id,
            "rule_version": rule_version,
        }
    )


def rule_key(account_id: str, rule_id: str) -> bytes:
    """Key of `segments.rules`: rule ids are unique per account, not globally."""
    return pack(account_id, rule_id)


@functools.lru_cache(maxsize=1 << 17)
def rule_key_text(account_id: str, rule_id: str) -> str:
    """`rule_key` as the state stores' str key, packed once per rule: every fact looks
    up when each rule it may affect came into force."""
    return pack(account_id, rule_id).decode()


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
