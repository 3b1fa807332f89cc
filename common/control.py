"""Erasure records on `segments.control`: the one format the query API, the CLI and the
connector write and the workers read.

An erasure goes to every partition of `segments.control` (like a rule change), because
what names a person is spread by different keys (contact state by contact key, customer
emails and charge payers by their raw events' and charges' keys). `email` null erases
everything of the account that the workers hold: `DELETE /connections/{id}?purge=true`.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

#: The control record's kind (`"k"`).
FORGET = "forget"


def forget_record(account_id: str, email: str | None, connection_ids: Sequence[str]) -> bytes:
    """The `segments.control` value that erases `email` within `account_id` (every contact
    of the account when `email` is None), and the customer state of `connection_ids`."""
    return orjson.dumps({"k": FORGET, "account_id": account_id, "email": email,
                         "connections": sorted(connection_ids)})
