"""A fact before its contact is known, and the parsed event it comes from.

Classification is pure: it sees one Stripe event and cannot know the Stripe customer's
email (that lives in the stream's customer table). So it yields `Occurrence`s carrying
the emails found on the object itself; the stream picks the contact (the first
candidate, else the customer's email) and turns each into a `Fact` with `to_fact`.
"""

from __future__ import annotations

from dataclasses import asdict, field
from typing import Any

from common.immutable import immutable
from rules.vocabulary import FilterId
from stream.facts import Fact, normalize_email


@immutable
class Occurrence:
    """One real-world occurrence named by `fact_id`; fields mean what `Fact`'s do."""

    fact_id: str
    filter: FilterId
    occurred_at: int
    source_event_id: str
    source_event_type: str
    customer_id: str | None = None
    amount: int | None = None
    currency: str | None = None
    refund_amount: int | None = None
    plans: tuple[str, ...] = ()
    start_date: int | None = None
    end_date: int | None = None
    #: Normalized emails found on the object, best first (SPEC, "Contacts"):
    #: billing_details.email, receipt_email, the invoice's customer_email, and last an
    #: expanded customer's email. The customer table is the stream's fallback.
    email_candidates: tuple[str, ...] = field(default=())
    #: The charge this occurrence concerns, when known. Not part of the fact: it lets
    #: the stream fill a `refund.created` occurrence (which names only the charge)
    #: with the email and amount it learned from that charge's own events.
    charge_id: str | None = None
    #: A retraction: the occurrence named `fact_id` did not happen after all (a refund
    #: that failed or was canceled, a scheduled cancellation undone). `occurred_at` is
    #: when it was retracted.
    retracts: bool = False

    def to_fact(self, account_id: str, connection_id: str, email: str) -> Fact:
        """The fact for one contact; `email` is normalized here so keys never split."""
        contact = normalize_email(email)
        if contact is None:
            raise ValueError(f"not an email address: {email!r}")
        return Fact(
            fact_id=self.fact_id,
            filter=self.filter,
            account_id=account_id,
            connection_id=connection_id,
            email=contact,
            occurred_at=self.occurred_at,
            customer_id=self.customer_id,
            amount=self.amount,
            currency=self.currency,
            refund_amount=self.refund_amount,
            plans=self.plans,
            start_date=self.start_date,
            end_date=self.end_date,
            source_event_id=self.source_event_id,
            source_event_type=self.source_event_type,
            retracted=self.retracts,
        )


@immutable
class StripeEvent:
    """The parts of a Stripe Event every rule needs, already type-checked."""

    id: str
    type: str
    created: int
    #: `data.object`, rendered at `version`.
    obj: dict[str, Any]
    #: `data.previous_attributes` (update events), else empty.
    previous: dict[str, Any]
    #: Date part of `api_version`, None for pre-2014 events without one.
    version: str | None


def occurrence_to_doc(occurrence: Occurrence) -> dict[str, Any]:
    """An occurrence as JSON-ready data (parked in state, or sent to be attributed)."""
    doc = asdict(occurrence)
    doc["plans"] = list(occurrence.plans)
    doc["email_candidates"] = list(occurrence.email_candidates)
    return doc


def occurrence_from_doc(doc: dict[str, Any]) -> Occurrence:
    return Occurrence(**{
        **doc,
        "plans": tuple(doc.get("plans") or ()),
        "email_candidates": tuple(doc.get("email_candidates") or ()),
    })
