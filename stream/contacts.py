"""From occurrences to facts: pick the contact, deduplicate, park what has no email yet.

The state lives in mappings the caller provides (`stream.state` in the worker, plain
dicts in unit tests), so this logic is tested without a broker. All keys are scoped by
connection or account: one Center account never sees another's customers or facts.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from connectors.contract import RawEvent
from stream.attribution import (
    DEDUP_SECONDS,
    SeenTable,
    already_seen,
    expiry_of,
    payer_record,
    refund_record,
    remember,
    retract,
)
from stream.classify import Classified
from stream.facts import Fact
from stream.occurrence import Occurrence, occurrence_from_doc, occurrence_to_doc

__all__ = ["DEDUP_SECONDS", "ContactResolver", "ContactTables", "Outcome",
           "occurrence_from_doc", "occurrence_to_doc", "sweep"]
#: Occurrences waiting for one customer's email; beyond this the oldest are dropped.
MAX_PARKED_PER_CUSTOMER = 100
#: A customer's email (or that it has none) is forgotten after this long unused, so the
#: table is bounded by the customers active lately, not by every customer ever seen.
#: Longer than a month, so a monthly subscriber's renewals keep it; a customer idle
#: longer is asked of Stripe again (`StreamOptions.email_lookup`) or learnt from its
#: next `customer.*` event.
CUSTOMER_TTL_SECONDS = 40 * 24 * 3600


@dataclass
class Outcome:
    facts: list[Fact] = field(default_factory=list)
    duplicates: int = 0
    parked: int = 0
    #: Stripe customers whose email is unknown here, newly waited on: worth a look-up.
    parked_customers: list[str] = field(default_factory=list)
    released: int = 0
    dropped_no_email: int = 0
    #: (key, value) records for the by-charge topic (`stream.attribution`): payers of
    #: charges, and refunds to be attributed on their charge's partition.
    by_charge: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass
class ContactTables:
    """State views (or dicts): customer emails, fact ids seen, parked occurrences."""

    #: "{connection}:{customer}" -> [email, or "" when the customer has none, expiry]
    #: (a plain string in state written by earlier versions: see `sweep`).
    customers: MutableMapping[str, Any]
    #: "{account}\x1f{fact_id}" -> expiry, or [expiry, email, retracted_at]
    #: (`stream.attribution`).
    seen: SeenTable
    #: "{connection}:{customer}" -> occurrences (as dicts) waiting for an email.
    parked: MutableMapping[str, list[dict[str, Any]]]


class ContactResolver:
    """Turns one raw event into the facts it newly announces."""

    def __init__(self, tables: ContactTables) -> None:
        self.tables = tables

    def handle(self, raw: RawEvent, classified: Classified, now: int) -> Outcome:
        """The facts `raw` newly announces, from its classification (`classified`,
        made once by the caller before any table is written)."""
        out = Outcome()
        if classified.customer_email is not None:
            customer_id, email = classified.customer_email
            self._customer_email(raw, customer_id, email, now, out)
        for occurrence in classified.occurrences:
            self._occurrence(raw, occurrence, now, out)
        return out

    def learn(self, raw: RawEvent, customer_id: str, email: str | None, now: int) -> Outcome:
        """An email found elsewhere (the API look-up): remember it, release what waits."""
        out = Outcome()
        self._customer_email(raw, customer_id, email, now, out)
        return out

    def _known(self, key: str, now: int) -> str | None:
        """The customer's email ("" if it has none), None if unknown or expired; using an
        entry past half its life renews it (one write per half-life at most)."""
        entry = self.tables.customers.get(key)
        if entry is None:
            return None
        if isinstance(entry, str):  # from an earlier version: no expiry yet
            return entry
        email, expiry = entry
        if expiry <= now:
            return None
        if expiry - now < CUSTOMER_TTL_SECONDS // 2:
            self.tables.customers[key] = [email, now + CUSTOMER_TTL_SECONDS]
        return str(email)

    def _customer_email(self, raw: RawEvent, customer_id: str, email: str | None, now: int,
                        out: Outcome) -> None:
        key = f"{raw.connection_id}:{customer_id}"
        if self._known(key, now) != (email or ""):
            self.tables.customers[key] = [email or "", now + CUSTOMER_TTL_SECONDS]
        if email is None:
            return
        waiting = self.tables.parked.pop(key, None)
        for doc in waiting or ():
            out.released += 1
            self._emit(raw, occurrence_from_doc(doc), email, now, out)

    def _occurrence(self, raw: RawEvent, occ: Occurrence, now: int, out: Outcome) -> None:
        email = occ.email_candidates[0] if occ.email_candidates else None
        if email is None and occ.customer_id is not None:
            email = self._known(f"{raw.connection_id}:{occ.customer_id}", now) or None
        if occ.retracts and not (occ.filter == "refunded" and occ.charge_id is not None):
            self._retract(raw, occ, now, out)
            return
        if occ.filter == "refunded" and occ.charge_id is not None:
            # Attributed on its charge's partition (stream.attribution), with what is
            # known here; a customer whose email is unknown also parks it, so an email
            # learnt later still names the contact when the charge's payer never comes.
            out.by_charge.append(refund_record(raw.account_id, raw.connection_id, occ,
                                               email))
            if email is None and occ.customer_id is not None and not occ.retracts:
                self._park(raw, occ, now, out)
            return
        if email is None:
            self._park(raw, occ, now, out)
            return
        self._emit(raw, occ, email, now, out)

    def _park(self, raw: RawEvent, occ: Occurrence, now: int, out: Outcome) -> None:
        if occ.customer_id is None:
            # A guest with no email anywhere: nothing can ever name the contact.
            out.dropped_no_email += 1
            return
        key = f"{raw.connection_id}:{occ.customer_id}"
        waiting = list(self.tables.parked.get(key) or [])
        if any(doc["fact_id"] == occ.fact_id for doc in waiting):
            out.duplicates += 1
            return
        waiting.append(occurrence_to_doc(occ))
        if len(waiting) > MAX_PARKED_PER_CUSTOMER:
            out.dropped_no_email += len(waiting) - MAX_PARKED_PER_CUSTOMER
            waiting = waiting[-MAX_PARKED_PER_CUSTOMER:]
        self.tables.parked[key] = waiting
        out.parked += 1
        known = self._known(key, now) is not None  # "" means: known to have no email
        if not known and occ.customer_id not in out.parked_customers:
            out.parked_customers.append(occ.customer_id)

    def _emit(self, raw: RawEvent, occ: Occurrence, email: str, now: int, out: Outcome) -> None:
        if occ.filter == "refunded" and occ.charge_id is not None:
            # Released from parking: its charge's partition decides (and deduplicates).
            out.by_charge.append(refund_record(raw.account_id, raw.connection_id, occ,
                                               email))
            return
        if already_seen(self.tables.seen, raw.account_id, occ.fact_id, now, occ.occurred_at):
            out.duplicates += 1
            return
        try:
            fact = occ.to_fact(raw.account_id, raw.connection_id, email)
        except ValueError:
            out.dropped_no_email += 1
            return
        remember(self.tables.seen, raw.account_id, occ, now, fact.email)
        out.facts.append(fact)
        if occ.filter == "charge_succeeded" and occ.charge_id is not None:
            out.by_charge.append(payer_record(raw.account_id, raw.connection_id,
                                              occ.charge_id, fact.email, occ.amount,
                                              occ.currency))


    def _retract(self, raw: RawEvent, occ: Occurrence, now: int, out: Outcome) -> None:
        """A retraction on this partition (a cancellation unscheduled; a refund that
        names no charge): it reaches the contact its fact went to, which the dedup table
        remembers, so it never waits for an email."""
        email = retract(self.tables.seen, raw.account_id, occ, now)
        if email is None:
            out.duplicates += 1  # nothing held: a retry, or ahead of its fact (tombstone)
            return
        out.facts.append(occ.to_fact(raw.account_id, raw.connection_id, email))


def sweep(tables: ContactTables, now: int) -> tuple[int, int]:
    """Forget what the dedup window no longer needs, so memory is bounded by time.

    Returns (expired entries removed, parked occurrences dropped: their customer never
    got an email within the window, so they are counted as dropped for lack of email).
    Customers unused for `CUSTOMER_TTL_SECONDS` are forgotten too (and entries of
    earlier versions, without an expiry, are given one).
    """
    removed = 0
    for key in [k for k, entry in tables.seen.items() if expiry_of(entry) <= now]:
        del tables.seen[key]
        removed += 1
    for key, entry in list(tables.customers.items()):
        if isinstance(entry, str):
            tables.customers[key] = [entry, now + CUSTOMER_TTL_SECONDS]
        elif entry[1] <= now:
            del tables.customers[key]
            removed += 1
    dropped = 0
    horizon = now - DEDUP_SECONDS
    for key, docs in list(tables.parked.items()):
        kept = [doc for doc in docs if doc["occurred_at"] >= horizon]
        if len(kept) != len(docs):
            dropped += len(docs) - len(kept)
            if kept:
                tables.parked[key] = kept
            else:
                del tables.parked[key]
    return removed, dropped
