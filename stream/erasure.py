"""Erasing one person (`segments forget`): what a worker partition holds about an email
within one Center account, and the control record that asks for it.

The record goes to every partition of `segments.control` (like a rule change), because
what names the person is spread by different keys: the contact's state lives on the
partition of its contact key, customer emails and charge payers on the partitions of
their raw events and charges. Each partition, inside its own transaction:

- the contact's state (its facts, memberships and timers): deleted (changelog
  tombstone on `segments.state.contacts`), and for each segment it was a member of, a
  `left` change with cause `erased` on `segments.membership` and a tombstone on
  `segments.members` (so Center and the read model drop the member; the `left` record
  itself names the email and lives for that topic's retention);
- customer emails of the account's connections (`segments.state.customers`), and the
  occurrences parked for those customers (`segments.state.parked`): deleted;
- charge payers of the account's connections with that email (`segments.state.charges`,
  the refunds join): deleted.

Erasure is not suppression: a new Stripe event naming the email later is processed as
usual. Dedup entries (`seen`: account + fact id) and refunds waiting for their payer
(`waiting`: no email until the payer is known) name no one and stay.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from common.control import FORGET, forget_record
from common.keys import split

__all__ = ["FORGET", "ForgetRequest", "erase_classify_state", "forget_record"]

@dataclass(frozen=True)
class ForgetRequest:
    account_id: str
    #: None: every contact of the account (a purge, `DELETE /connections/{id}?purge=true`).
    email: str | None
    connections: frozenset[str]

    @classmethod
    def from_control(cls, doc: dict[str, Any]) -> ForgetRequest:
        account, email, connections = doc["account_id"], doc["email"], doc["connections"]
        if not (isinstance(account, str) and (email is None or isinstance(email, str))
                and isinstance(connections, list)
                and all(isinstance(c, str) for c in connections)):
            raise ValueError("malformed forget record")
        return cls(account, email, frozenset(connections))


def _customer_email(entry: object) -> object:
    """A customers-table entry is `[email, expiry]` (stream.contacts); earlier releases
    stored the bare email."""
    return entry[0] if isinstance(entry, list) and entry else entry


def erase_classify_state(request: ForgetRequest, customers: MutableMapping[str, Any],
                         parked: MutableMapping[str, Any],
                         charges: MutableMapping[str, Any]) -> int:
    """Delete the email's customer entries (and their parked occurrences) and charge
    payers of the request's connections; returns how many entries went."""
    removed = 0
    everyone = request.email is None
    for key in [k for k, v in customers.items()
                if (everyone or _customer_email(v) == request.email)
                and k.split(":", 1)[0] in request.connections]:
        del customers[key]
        removed += 1
        if parked.pop(key, None) is not None:
            removed += 1
    for key in [k for k, v in charges.items()
                if isinstance(v, dict) and (everyone or v.get("email") == request.email)
                and split(k, 2)[0] in request.connections]:
        del charges[key]
        removed += 1
    return removed
