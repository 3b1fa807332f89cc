"""The facts topic contract: one normalized fact per real-world occurrence.

A fact is what the six filters of SPEC are evaluated on. It satisfies the
`rules.FactView` protocol structurally, so `rules/` evaluates it without importing us.
Times are integer epoch seconds (UTC), money integer minor units: no floats, no
time zones in the hot path; rules convert calendar dates to instants once, at load.
"""

from __future__ import annotations

import sys
from dataclasses import field
from typing import Any

import orjson

from common.emails import normalize_email as normalize_email  # the stream's callers' name
from common.immutable import immutable
from common.keys import pack
from common.records import UnsupportedRecordVersion, record_version, versioned
from rules.vocabulary import FilterId
from stream.errors import StreamError


class FactDecodeError(StreamError, ValueError):
    """A message on the facts topic does not follow this contract."""


@immutable
class Fact:
    #: Names the occurrence, so every announcement of it collapses to one fact:
    #: e.g. "ch_123:succeeded", "ch_123:failed", "re_456", "sub_789:created".
    fact_id: str
    filter: FilterId
    account_id: str
    connection_id: str
    email: str
    #: Event time: Stripe's `created` of the occurrence, epoch seconds.
    occurred_at: int
    customer_id: str | None = None
    #: Charge amount (charge filters and `refunded`), or the recurring amount of a
    #: subscription (price x quantity summed over items); minor units.
    amount: int | None = None
    #: Lower-case ISO code.
    currency: str | None = None
    #: This refund's own amount (`refunded` only), minor units.
    refund_amount: int | None = None
    #: Price, plan and product ids the occurrence concerns (subscription filters).
    plans: tuple[str, ...] = field(default=())
    #: Subscription start, and its end or scheduled end, epoch seconds.
    start_date: int | None = None
    end_date: int | None = None
    source_event_id: str = ""
    source_event_type: str = ""
    #: A retraction record: the contact no longer has the fact `fact_id` (the other
    #: fields say what is known of it); membership forgets it and re-decides.
    retracted: bool = False

    def key(self) -> bytes:
        """Kafka key: one contact's facts share a partition (account + email)."""
        return contact_key(self.account_id, self.email)

    def to_dict(self) -> dict[str, Any]:
        # Spelled out rather than `dataclasses.asdict`, which deep-copies every field
        # recursively: this runs for every fact published and every fact of a contact
        # whose state is saved (several times per event). Same keys, same order.
        doc: dict[str, Any] = {
            "fact_id": self.fact_id,
            "filter": self.filter,
            "account_id": self.account_id,
            "connection_id": self.connection_id,
            "email": self.email,
            "occurred_at": self.occurred_at,
            "customer_id": self.customer_id,
            "amount": self.amount,
            "currency": self.currency,
            "refund_amount": self.refund_amount,
            "plans": list(self.plans),
            "start_date": self.start_date,
            "end_date": self.end_date,
            "source_event_id": self.source_event_id,
            "source_event_type": self.source_event_type,
        }
        if self.retracted:  # only on retractions: facts keep their shape
            doc["retracted"] = True
        return doc

    def to_bytes(self) -> bytes:
        """The `stripe.facts` value: `to_dict` with the schema version `"v"` first."""
        return versioned(orjson.dumps(self.to_dict()))

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Fact:
        """`doc` is a decoded record, and is changed: its strings are interned."""
        try:
            plans = doc.get("plans")
            doc["plans"] = tuple(_shared(plan) for plan in plans) if plans else ()
            for name in _FEW_VALUES:
                value = doc.get(name)
                if type(value) is str:
                    doc[name] = _shared(value)
            return cls(**doc)
        except TypeError as exc:
            unknown = doc.keys() - _FIELDS
            if not unknown:
                raise FactDecodeError(str(exc)) from None
        # Fields added by a later release (additive changes keep "v"): ignored.
        return cls.from_dict({k: v for k, v in doc.items() if k in _FIELDS})

    @classmethod
    def from_bytes(cls, raw: bytes) -> Fact:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise FactDecodeError(f"not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise FactDecodeError("fact is not a JSON object")
        try:
            record_version(doc)
        except UnsupportedRecordVersion as exc:
            raise FactDecodeError(str(exc)) from None
        doc.pop("v", None)
        return cls.from_dict(doc)


_FIELDS = frozenset(Fact.__dataclass_fields__)

#: Fields with few distinct values: a worker holds millions of facts, so each of these
#: strings is kept once (interned), not once per fact as decoded from JSON.
_FEW_VALUES = ("filter", "account_id", "connection_id", "currency", "source_event_type")


def _shared(value: str) -> str:
    return sys.intern(value) if len(value) <= 64 else value


def contact_key(account_id: str, email: str) -> bytes:
    """One contact = one email within one Center account (SPEC, "Contacts")."""
    return pack(account_id, email)


