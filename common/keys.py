"""Record keys: how several ids are packed into one Kafka key, and split again.

Every key of this project that names more than one thing (account and email, account and
rule, account, segment and email) joins the parts with the ASCII unit separator, which no
account id, segment id or normalised email may contain (their validators refuse it). One
owner, so a consumer's split always matches our pack.
"""

from __future__ import annotations

from common.errors import SegmentsError

#: ASCII "unit separator": never part of an id or an email, so splitting is unambiguous.
KEY_SEPARATOR = "\x1f"


class MalformedKey(SegmentsError, ValueError):
    """A record key does not have the number of parts its topic's contract says."""


def pack(*parts: str) -> bytes:
    """One Kafka key from its parts, in order."""
    return KEY_SEPARATOR.join(parts).encode()


def split(key: bytes | str, parts: int) -> tuple[str, ...]:
    """The `parts` fields of a key packed by `pack`; MalformedKey when the count differs."""
    text = key.decode() if isinstance(key, bytes) else key
    fields = tuple(text.split(KEY_SEPARATOR))
    if len(fields) != parts:
        raise MalformedKey(f"expected {parts} key parts, got {len(fields)}")
    return fields
