"""The schema version `"v"` every record value on our public topics carries.

`schemas/` holds the JSON Schema of each topic's value; `schemas/README.md` the
compatibility policy: an additive change (a new optional field) keeps `v`, anything else
bumps it and is announced. So a reader accepts the version it knows, ignores fields it
does not know, and refuses a version it does not know rather than misread it.

Records written before `v` existed have none: they read as version 1, so a reader of
this release understands every record an earlier release wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from common.errors import SegmentsError

#: The version of facts, membership changes, members values and rule records.
RECORD_VERSION: Final = 1
#: Its field name in every record value.
VERSION_FIELD: Final = "v"


class UnsupportedRecordVersion(SegmentsError, ValueError):
    """A record value says it follows a schema version this release does not know."""

    retriable = False


def record_version(doc: Mapping[str, Any], known: int = RECORD_VERSION) -> int:
    """The version of a decoded record value (missing = 1); refuses any but `known`."""
    version = doc.get(VERSION_FIELD, 1)
    if type(version) is not int or version != known:
        raise UnsupportedRecordVersion(
            f"record schema version {version!r} is not supported (this release reads {known})")
    return version


def versioned(payload: bytes, version: int = RECORD_VERSION) -> bytes:
    """`payload`, a serialized non-empty JSON object, with `"v"` as its first field.

    Splices bytes rather than building a new dict, so the hot paths that serialize a
    dataclass natively (orjson) keep doing so.
    """
    if not payload.startswith(b"{") or payload.startswith(b"{}"):
        raise ValueError("versioned() needs a serialized non-empty JSON object")
    prefix = _PREFIXES.get(version)
    if prefix is None:
        prefix = _PREFIXES[version] = b'{"%s":%d,' % (VERSION_FIELD.encode(), version)
    return prefix + payload[1:]


#: version -> the bytes `versioned` puts first (it runs for every record published).
_PREFIXES: dict[int, bytes] = {}
