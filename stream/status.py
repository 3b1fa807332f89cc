"""The `segments.status` contract: which rule version each membership partition applied.

When a membership partition has applied a rule change (every contact it holds for the
account re-evaluated, the resulting `cause: "rule"` changes written), it writes one
marker in the same transaction: key (account, segment, partition), value
`{"v": 1, "account_id", "segment_id", "partition", "rule_version", "at"}`. A deleted
rule leaves a tombstone per partition. The topic is compacted, so it holds the latest
marker of every partition; a segment is `ready` once every partition's marker carries
the version in force, `populating` until then.

Downstream consumers can use it to tell a segment's initial fill from live changes:
on membership partition p, the `cause: "rule"` changes of version N all come before
p's marker for N (one transaction, one ordered partition), and every later change of
the segment has cause `fact` or `time` until the rule changes again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from common.keys import pack, split

#: The schema version of a marker's value.
STATUS_V = 1


@dataclass(frozen=True, slots=True)
class StatusMarker:
    account_id: str
    segment_id: str
    partition: int
    #: The applied rule version; None for a tombstone (the rule was deleted).
    rule_version: int | None
    at: str | None = None

    def key(self) -> bytes:
        return status_key(self.account_id, self.segment_id, self.partition)

    def to_bytes(self) -> bytes | None:
        if self.rule_version is None:
            return None
        return orjson.dumps({"v": STATUS_V, "account_id": self.account_id,
                             "segment_id": self.segment_id, "partition": self.partition,
                             "rule_version": self.rule_version, "at": self.at})

    @classmethod
    def from_record(cls, key: bytes, value: bytes | None) -> StatusMarker:
        """ValueError (or a subclass) when the record does not follow the contract."""
        account_id, segment_id, partition = split(key, 3)
        if value is None:
            return cls(account_id, segment_id, int(partition), None)
        doc: dict[str, Any] = orjson.loads(value)
        version = doc["rule_version"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValueError("rule_version must be an integer")
        return cls(account_id, segment_id, int(partition), version, doc.get("at"))


def status_key(account_id: str, segment_id: str, partition: int) -> bytes:
    """Key of `segments.status`: one record per (account, segment, partition)."""
    return pack(account_id, segment_id, str(partition))
