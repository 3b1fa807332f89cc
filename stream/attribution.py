"""Refunds meet their charge's payer by charge id, whatever partition each arrived on.

A raw event is keyed by its Stripe customer, else its payment intent, else its object
(`connectors.contract.message_key`). A refund rendered at API 2024-10-28.acacia or later
is counted from its own `refund.created`, whose object names the charge and the payment
intent but not the customer: it lands on another partition than the charge's events,
which carry the payer's email. So, as Kafka Streams would do it, attribution is a keyed
join through an internal repartition topic, `segments.by-charge`, keyed by connection +
charge id (co-partitioned with the worker's other topics, so partition p of it belongs to
task p like everything else):

- the classify task that publishes a charge's `charge_succeeded` fact also publishes a
  *payer* record (account, email the fact went to, charge amount, currency);
- every `refunded` occurrence that names its charge is published as a *refund* record,
  with the email found on the spot if any (the charge object's own emails, or the
  customer's email known on that partition);
- the task owning the charge's partition keeps payers in the changelog-backed `charges`
  table and refunds that cannot be attributed yet in `waiting`; it deduplicates refund
  fact ids there (the one place every announcement of a refund meets, so
  `charge.refunded` and `refund.created` on different partitions count once) and
  publishes the fact to `stripe.facts`. A refund that arrives before its charge waits
  and is released when the payer record arrives.

The email of a refund is, in order: the payer's (the contact its charge was attributed
to), the charge object's own emails, the email sent along. The amount missing from a
bare refund is the payer record's charge amount. All of it runs in the owning task's
transaction (output, state writes, input offsets), like the rest of the pipeline.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from common.immutable import immutable
from common.keys import pack
from common.windows import HISTORY_FLOOR_SECONDS
from stream.facts import Fact
from stream.occurrence import Occurrence, occurrence_from_doc, occurrence_to_doc

#: How long a fact id is remembered, a payer kept and a refund left waiting: the
#: backfill window plus Stripe's retry period.
DEDUP_SECONDS = HISTORY_FLOOR_SECONDS
#: Refunds waiting for one charge's payer; beyond this the oldest are dropped.
MAX_WAITING_PER_CHARGE = 100


class ByChargeDecodeError(ValueError):
    """A record of the by-charge topic does not follow its format."""


# -- deduplication of fact ids (both sides) -------------------------------------------
#
# `seen` maps "{account}\x1f{fact_id}" to the expiry of the entry (epoch seconds), or,
# for the filters whose facts can be retracted, to `[expiry, email, retracted_at]`: the
# contact the fact went to (so its retraction reaches the same contact even if the
# customer's email changed since) and, once retracted, when. It is last-writer-wins by
# event time: an announcement dated after the retraction is a new occurrence (a
# cancellation scheduled again), one dated before it (a webhook retry, the backfill) is
# stale; a retraction that arrives first leaves a tombstone that later, older
# announcements meet.

#: Filters whose facts a later event can retract (`Occurrence.retracts`).
RETRACTABLE = frozenset({"refunded", "subscription_cancelled"})
SeenTable = MutableMapping[str, Any]


def seen_key(account_id: str, fact_id: str) -> str:
    return pack(account_id, fact_id).decode()


def expiry_of(entry: Any) -> int:
    """The expiry of a `seen` entry, whichever form it has."""
    return entry if isinstance(entry, int) else int(entry[0])


def already_seen(seen: SeenTable, account_id: str, fact_id: str, now: int,
                 occurred_at: int | None = None) -> bool:
    """Whether an announcement of `fact_id` dated `occurred_at` adds nothing."""
    entry = seen.get(seen_key(account_id, fact_id))
    if entry is None or expiry_of(entry) <= now:
        return False
    if isinstance(entry, int) or entry[2] is None:
        return True
    return occurred_at is None or occurred_at <= entry[2]


def remember(seen: SeenTable, account_id: str, occ: Occurrence, now: int,
             email: str | None = None) -> None:
    expiry = max(now, occ.occurred_at) + DEDUP_SECONDS
    key = seen_key(account_id, occ.fact_id)
    seen[key] = [expiry, email, None] if occ.filter in RETRACTABLE else expiry


def retract(seen: SeenTable, account_id: str, occ: Occurrence, now: int) -> str | None:
    """Record the retraction `occ` of `occ.fact_id`; the contact whose fact it removes,
    or None when no fact is held (never announced, or already retracted): then only a
    tombstone is left for announcements dated before it."""
    key = seen_key(account_id, occ.fact_id)
    entry = seen.get(key)
    expiry = max(now, occ.occurred_at) + DEDUP_SECONDS
    if entry is None or isinstance(entry, int) or expiry_of(entry) <= now:
        seen[key] = [expiry, None, occ.occurred_at]
        return None
    old_expiry, email, retracted_at = entry
    if retracted_at is not None:
        if occ.occurred_at > retracted_at:
            seen[key] = [max(old_expiry, expiry), email, occ.occurred_at]
        return None
    seen[key] = [max(old_expiry, expiry), email, occ.occurred_at]
    return str(email) if email else None


# -- the records ----------------------------------------------------------------------

def charge_key(connection_id: str, charge_id: str) -> bytes:
    """The by-charge topic's key, and the key of both its tables."""
    return pack(connection_id, charge_id)


def payer_record(account_id: str, connection_id: str, charge_id: str, email: str,
                 amount: int | None, currency: str | None) -> tuple[bytes, bytes]:
    value = orjson.dumps({"k": "payer", "account_id": account_id,
                          "connection_id": connection_id, "email": email,
                          "amount": amount, "currency": currency})
    return charge_key(connection_id, charge_id), value


def refund_record(account_id: str, connection_id: str, occ: Occurrence,
                  email: str | None) -> tuple[bytes, bytes]:
    if occ.charge_id is None:
        raise ValueError("only a refund that names its charge is attributed by charge")
    value = orjson.dumps({"k": "refund", "account_id": account_id,
                          "connection_id": connection_id, "email": email,
                          "occurrence": occurrence_to_doc(occ)})
    return charge_key(connection_id, occ.charge_id), value


@immutable
class ByCharge:
    kind: str
    account_id: str
    connection_id: str
    email: str | None
    amount: int | None = None
    currency: str | None = None
    occurrence: Occurrence | None = None


def decode(raw: bytes | None) -> ByCharge:
    try:
        doc = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise ByChargeDecodeError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("k") not in ("payer", "refund"):
        raise ByChargeDecodeError("not a payer or refund record")
    account, connection, email = doc.get("account_id"), doc.get("connection_id"), doc.get("email")
    if not isinstance(account, str) or not isinstance(connection, str):
        raise ByChargeDecodeError("record lacks account_id or connection_id")
    if email is not None and not isinstance(email, str):
        raise ByChargeDecodeError("email is not a string")
    if doc["k"] == "payer":
        if email is None:
            raise ByChargeDecodeError("payer record without an email")
        amount, code = doc.get("amount"), doc.get("currency")
        if (amount is not None and (type(amount) is not int)) or (
                code is not None and not isinstance(code, str)):
            raise ByChargeDecodeError("payer amount or currency of the wrong type")
        return ByCharge("payer", account, connection, email, amount, code)
    occ_doc = doc.get("occurrence")
    if not isinstance(occ_doc, dict):
        raise ByChargeDecodeError("refund record without an occurrence")
    try:
        occ = occurrence_from_doc(occ_doc)
    except TypeError as exc:
        raise ByChargeDecodeError(f"bad occurrence: {exc}") from None
    if occ.filter != "refunded" or occ.charge_id is None:
        raise ByChargeDecodeError("not a refund that names its charge")
    return ByCharge("refund", account, connection, email, occurrence=occ)


# -- the join, on the charge's partition ----------------------------------------------

@dataclass
class JoinTables:
    """State views (or dicts), all keyed by `charge_key` as text."""

    #: -> {"email", "amount", "currency", "x"(expiry), "r"}: who paid the charge, and
    #: "r", the refunds counted on it as [fact id, email, refund amount] (for their
    #: retraction).
    charges: MutableMapping[str, dict[str, Any]]
    #: -> refund records (as dicts) waiting for the charge's payer.
    waiting: MutableMapping[str, list[dict[str, Any]]]
    #: "{account}\x1f{fact_id}" -> expiry, or [expiry, email, retracted_at] (see above).
    seen: SeenTable


@dataclass
class JoinOutcome:
    facts: list[Fact] = field(default_factory=list)
    duplicates: int = 0
    waiting: int = 0
    released: int = 0
    dropped_no_email: int = 0


class ChargeJoin:
    """Handles the by-charge records of one partition."""

    def __init__(self, tables: JoinTables) -> None:
        self.tables = tables

    def handle(self, key: bytes | None, value: bytes | None, now: int) -> JoinOutcome:
        """Raises `ByChargeDecodeError` for a record that does not follow the format."""
        if not key:
            raise ByChargeDecodeError("record without a key")
        record = decode(value)
        out = JoinOutcome()
        text = key.decode()
        if record.kind == "payer":
            self._payer(text, record, now, out)
        else:
            self._refund(text, record, now, out)
        return out

    def _payer(self, key: str, record: ByCharge, now: int, out: JoinOutcome) -> None:
        known = self.tables.charges.get(key) or {}
        merged = {  # the first payer named stays: the contact the charge's fact went to
            "email": known.get("email") or record.email,
            "amount": known["amount"] if known.get("amount") is not None else record.amount,
            "currency": known.get("currency") or record.currency,
            "x": max(known.get("x", 0), now + DEDUP_SECONDS),
        }
        if known.get("r"):
            merged["r"] = known["r"]
        if merged != known:
            self.tables.charges[key] = merged
        for doc in self.tables.waiting.pop(key, None) or ():
            out.released += 1
            self._refund(key, _record_from_doc(doc), now, out)

    def _refund(self, key: str, record: ByCharge, now: int, out: JoinOutcome) -> None:
        occ = record.occurrence
        assert occ is not None  # decode() guarantees it for refund records
        if occ.retracts:
            self._retract(key, record, occ, now, out)
            return
        if already_seen(self.tables.seen, record.account_id, occ.fact_id, now, occ.occurred_at):
            out.duplicates += 1
            self._unwait(key, occ.fact_id)
            return
        payer = self.tables.charges.get(key)
        email = (payer or {}).get("email") or next(iter(occ.email_candidates), None) \
            or record.email
        if email is None:
            self._wait(key, record, out)
            return
        if occ.amount is None and payer is not None and payer.get("amount") is not None:
            occ = replace(occ, amount=payer["amount"])
        if occ.currency is None and payer is not None and payer.get("currency"):
            occ = replace(occ, currency=payer["currency"])
        try:
            fact = occ.to_fact(record.account_id, record.connection_id, email)
        except ValueError:
            out.dropped_no_email += 1
            return
        remember(self.tables.seen, record.account_id, occ, now, fact.email)
        self._unwait(key, occ.fact_id)
        doc = dict(self.tables.charges.get(key) or {"x": now + DEDUP_SECONDS})
        doc["r"] = [*(doc.get("r") or ()), [occ.fact_id, fact.email, occ.refund_amount]]
        self.tables.charges[key] = doc
        out.facts.append(fact)

    def _retract(self, key: str, record: ByCharge, occ: Occurrence, now: int,
                 out: JoinOutcome) -> None:
        """A refund of this charge failed or was canceled: retract the fact it was
        counted as. That is the refund's id, or, for a refund counted from a list-less
        `charge.refunded` (API 2022-11-15 to 2024-10-28, `"{charge}:refund:{total}"`),
        the first such fact of the same amount still held: the refund id is not known
        there, and two refunds of one charge with the same amount are interchangeable
        except for their dates."""
        self._unwait(key, occ.fact_id)  # a refund waiting for its payer never counts
        target = occ.fact_id
        counted = (self.tables.charges.get(key) or {}).get("r") or ()
        if not any(entry[0] == target for entry in counted):
            for fact_id, _, amount in counted:
                if (":refund:" in fact_id and amount == occ.refund_amount
                        and already_seen(self.tables.seen, record.account_id, fact_id, now)):
                    target = fact_id
                    break
        if target != occ.fact_id:
            retract(self.tables.seen, record.account_id, occ, now)  # tombstone the refund id
        email = retract(self.tables.seen, record.account_id, replace(occ, fact_id=target), now)
        if email is None:
            out.duplicates += 1
            return
        out.facts.append(replace(occ, fact_id=target).to_fact(
            record.account_id, record.connection_id, email))

    def _wait(self, key: str, record: ByCharge, out: JoinOutcome) -> None:
        occ = record.occurrence
        assert occ is not None
        waiting = list(self.tables.waiting.get(key) or [])
        if any(doc["occurrence"]["fact_id"] == occ.fact_id for doc in waiting):
            out.duplicates += 1
            return
        waiting.append(_record_to_doc(record))
        if len(waiting) > MAX_WAITING_PER_CHARGE:
            out.dropped_no_email += len(waiting) - MAX_WAITING_PER_CHARGE
            waiting = waiting[-MAX_WAITING_PER_CHARGE:]
        self.tables.waiting[key] = waiting
        out.waiting += 1

    def _unwait(self, key: str, fact_id: str) -> None:
        waiting = self.tables.waiting.get(key)
        if not waiting:
            return
        kept = [doc for doc in waiting if doc["occurrence"]["fact_id"] != fact_id]
        if len(kept) == len(waiting):
            return
        if kept:
            self.tables.waiting[key] = kept
        else:
            del self.tables.waiting[key]


def _record_to_doc(record: ByCharge) -> dict[str, Any]:
    assert record.occurrence is not None
    return {"account_id": record.account_id, "connection_id": record.connection_id,
            "email": record.email, "occurrence": occurrence_to_doc(record.occurrence)}


def _record_from_doc(doc: dict[str, Any]) -> ByCharge:
    return ByCharge("refund", doc["account_id"], doc["connection_id"], doc.get("email"),
                    occurrence=occurrence_from_doc(doc["occurrence"]))


def sweep_join(tables: JoinTables, now: int) -> tuple[int, int]:
    """Forget payers past their window and refunds that waited for one too long.

    Returns (payers removed, waiting refunds dropped: no payer ever came, so they are
    counted as dropped for lack of email)."""
    removed = 0
    for key in [k for k, doc in tables.charges.items() if doc.get("x", 0) <= now]:
        del tables.charges[key]
        removed += 1
    dropped = 0
    horizon = now - DEDUP_SECONDS
    for key, docs in list(tables.waiting.items()):
        kept = [doc for doc in docs if doc["occurrence"]["occurred_at"] >= horizon]
        if len(kept) != len(docs):
            dropped += len(docs) - len(kept)
            if kept:
                tables.waiting[key] = kept
            else:
                del tables.waiting[key]
    return removed, dropped
