"""Charge, payment-intent, invoice and refund events → the three payment filters.

The fact-id scheme and its reasons are in `stream.classify`'s docstring; this module
applies it. Every handler takes a parsed `StripeEvent` and returns its occurrences.
"""

from __future__ import annotations

from dataclasses import replace

from rules.vocabulary import FilterId
from stream.occurrence import Occurrence, StripeEvent
from stream.stripe_objects import (
    ClassifyError,
    JsonObj,
    currency,
    emails,
    expanded,
    list_items,
    need_int,
    need_str,
    newest,
    opt_bool,
    opt_dict,
    opt_int,
    opt_str,
    ref_id,
    sub,
)

#: A payment intent that failed with one of these codes made no charge, even though
#: its `latest_charge` may still name the charge of an earlier, already counted attempt.
CHARGELESS_FAILURES = frozenset({"payment_intent_authentication_failure"})
#: From this API version on, a charge's `refunds` list is no longer included.
REFUNDS_UNLISTED_SINCE = "2022-11-15"
#: From this version on, `refund.created` is sent for refunds of charges too
#: (changelog 2024-10-28.acacia: before, only for refunds without a charge).
REFUND_EVENTS_FOR_CHARGES_SINCE = "2024-10-28"
#: A refund in these states gave nothing back.
VOID_REFUND_STATES = frozenset({"failed", "canceled"})


def _merge(*groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(email for group in groups for email in group))


def _customer_emails(obj: JsonObj) -> tuple[str, ...]:
    """An expanded `customer`'s email: last resort, after the object's own emails."""
    return emails((sub(obj, "customer"), "email"))


def charge_amount(charge: JsonObj, where: str) -> int:
    """What the customer was charged: the captured amount once (partially) captured."""
    amount = need_int(charge, "amount", where)
    captured = opt_int(charge, "amount_captured", where)
    return captured if captured else amount


def _from_charge(
    ev: StripeEvent,
    charge: JsonObj,
    where: str,
    filter_id: FilterId,
    outcome: str,
    *,
    more_emails: tuple[str, ...] = (),
    customer: str | None = None,
) -> Occurrence:
    """An occurrence read off a whole charge object (the event's, or an expanded one)."""
    charge_id = need_str(charge, "id", where)
    created = opt_int(charge, "created", where)
    own = emails((sub(charge, "billing_details"), "email"), (charge, "receipt_email"))
    return Occurrence(
        fact_id=f"{charge_id}:{outcome}",
        filter=filter_id,
        occurred_at=ev.created if created is None else created,
        source_event_id=ev.id,
        source_event_type=ev.type,
        customer_id=ref_id(charge, "customer", where) or customer,
        amount=charge_amount(charge, where),
        currency=currency(charge, where),
        email_candidates=_merge(own, more_emails, _customer_emails(charge)),
        charge_id=charge_id,
    )


def charge_succeeded(ev: StripeEvent) -> list[Occurrence]:
    """`charge.succeeded` / `charge.captured`; an uncaptured authorization is no charge
    yet (its capture sends `charge.captured` and `payment_intent.succeeded`)."""
    if opt_bool(ev.obj, "captured", "charge") is False:
        return []
    return [_from_charge(ev, ev.obj, "charge", "charge_succeeded", "succeeded")]


def charge_failed(ev: StripeEvent) -> list[Occurrence]:
    return [_from_charge(ev, ev.obj, "charge", "charge_failed", "failed")]


def _intent_charge(pi: JsonObj, wanted: str | None) -> tuple[str | None, JsonObj | None]:
    """The charge a payment intent names (`wanted`, else its latest) and, when the
    payload carries it (expanded `latest_charge`, pre-2022 `charges.data`), its object."""
    where = "payment_intent"
    latest_id = ref_id(pi, "latest_charge", where)
    candidates = list_items(pi, "charges", where) or []
    latest = expanded(pi, "latest_charge", where)
    if latest is not None:
        candidates = [latest, *candidates]
    charge_id = wanted or latest_id
    if charge_id is None:
        found = newest(candidates, f"{where}.charges")
        return (need_str(found, "id", f"{where}.charges"), found) if found else (None, None)
    match = next((c for c in candidates if c.get("id") == charge_id), None)
    return charge_id, match


def _from_intent(
    ev: StripeEvent,
    charge_id: str,
    charge: JsonObj | None,
    filter_id: FilterId,
    outcome: str,
    more_emails: tuple[str, ...] = (),
) -> Occurrence:
    pi, where = ev.obj, "payment_intent"
    need_str(pi, "id", where)
    customer = ref_id(pi, "customer", where)
    pi_emails = _merge(more_emails, emails((pi, "receipt_email")), _customer_emails(pi))
    if charge is not None:
        return _from_charge(
            ev,
            charge,
            f"{where}.charge",
            filter_id,
            outcome,
            more_emails=pi_emails,
            customer=customer,
        )
    received = opt_int(pi, "amount_received", where)
    return Occurrence(
        fact_id=f"{charge_id}:{outcome}",
        filter=filter_id,
        occurred_at=ev.created,
        source_event_id=ev.id,
        source_event_type=ev.type,
        customer_id=customer,
        amount=received if received and outcome == "succeeded" else need_int(pi, "amount", where),
        currency=currency(pi, where),
        email_candidates=pi_emails,
        charge_id=charge_id,
    )


def intent_succeeded(ev: StripeEvent) -> list[Occurrence]:
    charge_id, charge = _intent_charge(ev.obj, None)
    if charge_id is None:
        return []  # nothing names the charge; its charge.succeeded counts it
    return [_from_intent(ev, charge_id, charge, "charge_succeeded", "succeeded")]


def intent_failed(ev: StripeEvent) -> list[Occurrence]:
    """The failed charge named by `last_payment_error.charge` (else the latest charge);
    a failure that made no charge is its own occurrence, named by this event."""
    pi, where = ev.obj, "payment_intent"
    pi_id = need_str(pi, "id", where)
    error = opt_dict(pi, "last_payment_error", where) or {}
    err_where = f"{where}.last_payment_error"
    more = emails((sub(sub(error, "payment_method"), "billing_details"), "email"))
    wanted = ref_id(error, "charge", err_where)
    charge_id: str | None = None
    charge: JsonObj | None = None
    if wanted or opt_str(error, "code", err_where) not in CHARGELESS_FAILURES:
        charge_id, charge = _intent_charge(pi, wanted)
    if charge_id is not None:
        return [_from_intent(ev, charge_id, charge, "charge_failed", "failed", more)]
    return [
        Occurrence(
            fact_id=f"{pi_id}:failed:{ev.id}",
            filter="charge_failed",
            occurred_at=ev.created,
            source_event_id=ev.id,
            source_event_type=ev.type,
            customer_id=ref_id(pi, "customer", where),
            amount=need_int(pi, "amount", where),
            currency=currency(pi, where),
            email_candidates=_merge(more, emails((pi, "receipt_email")), _customer_emails(pi)),
        )
    ]


def _from_invoice(
    ev: StripeEvent, filter_id: FilterId, outcome: str, amount_key: str
) -> list[Occurrence]:
    inv, where = ev.obj, "invoice"
    need_str(inv, "id", where)
    charge_id = ref_id(inv, "charge", where)
    if charge_id is None:
        return []  # newest API versions dropped `invoice.charge`; the charge events count it
    customer = ref_id(inv, "customer", where)
    more = _merge(emails((inv, "customer_email")), _customer_emails(inv))
    charge = expanded(inv, "charge", where)
    if charge is not None:
        return [
            _from_charge(
                ev,
                charge,
                f"{where}.charge",
                filter_id,
                outcome,
                more_emails=more,
                customer=customer,
            )
        ]
    return [
        Occurrence(
            fact_id=f"{charge_id}:{outcome}",
            filter=filter_id,
            occurred_at=ev.created,
            source_event_id=ev.id,
            source_event_type=ev.type,
            customer_id=customer,
            amount=need_int(inv, amount_key, where),
            currency=currency(inv, where),
            email_candidates=more,
            charge_id=charge_id,
        )
    ]


def invoice_paid(ev: StripeEvent) -> list[Occurrence]:
    return _from_invoice(ev, "charge_succeeded", "succeeded", "amount_paid")


def invoice_failed(ev: StripeEvent) -> list[Occurrence]:
    return _from_invoice(ev, "charge_failed", "failed", "amount_due")


def _from_refund(
    ev: StripeEvent, refund: JsonObj, where: str, charge_id: str | None, charge: JsonObj | None
) -> Occurrence | None:
    refund_id = need_str(refund, "id", where)
    refund_amount = need_int(refund, "amount", where)
    created = opt_int(refund, "created", where)
    code = currency(refund, where, required=charge is None)
    if charge is not None:
        code = code or currency(charge, "charge")
    if opt_str(refund, "status", where) in VOID_REFUND_STATES:
        return None
    return Occurrence(
        fact_id=refund_id,
        filter="refunded",
        occurred_at=ev.created if created is None else created,
        source_event_id=ev.id,
        source_event_type=ev.type,
        customer_id=ref_id(refund, "customer", where)
        or (ref_id(charge, "customer", "charge") if charge else None),
        amount=charge_amount(charge, "charge") if charge else None,
        currency=code,
        refund_amount=refund_amount,
        email_candidates=_merge(
            emails((sub(charge, "billing_details"), "email"), (charge, "receipt_email")),
            _customer_emails(charge or {}),
        ),
        charge_id=charge_id,
    )


def refund_voided(ev: StripeEvent) -> list[Occurrence]:
    """`refund.updated` / `refund.failed` / `charge.refund.updated` for a refund that
    failed or was canceled: retract its fact (the refund id; the attribution by charge
    finds the fact a list-less `charge.refunded` counted it as). Any other update
    (a pending refund succeeding, metadata) yields nothing."""
    refund, where = ev.obj, "refund"
    refund_id = need_str(refund, "id", where)
    if opt_str(refund, "status", where) not in VOID_REFUND_STATES:
        return []
    return [
        Occurrence(
            fact_id=refund_id,
            filter="refunded",
            occurred_at=ev.created,
            source_event_id=ev.id,
            source_event_type=ev.type,
            customer_id=ref_id(refund, "customer", where),
            currency=currency(refund, where, required=False),
            refund_amount=opt_int(refund, "amount", where),
            charge_id=ref_id(refund, "charge", where),
            retracts=True,
        )
    ]


def refund_created(ev: StripeEvent) -> list[Occurrence]:
    refund, where = ev.obj, "refund"
    charge_id = ref_id(refund, "charge", where)
    occurrence = _from_refund(ev, refund, where, charge_id, expanded(refund, "charge", where))
    if occurrence is None:
        return []
    if charge_id is not None and _charge_refunded_counts(ev.version):
        return []  # in this version window charge.refunded is the one that counts it
    return [occurrence]


def _charge_refunded_counts(version: str | None) -> bool:
    """Whether list-less `charge.refunded` is the counting source for this version."""
    return version is not None and REFUNDS_UNLISTED_SINCE <= version < (
        REFUND_EVENTS_FOR_CHARGES_SINCE
    )


def _this_refund(refunds: list[JsonObj], ev: StripeEvent) -> list[JsonObj]:
    """Which refunds of the charge's list this `charge.refunded` announces."""
    where = "charge.refunds"
    before = list_items(ev.previous, "refunds", "previous_attributes")
    if before is not None:
        seen = {opt_str(r, "id", "previous_attributes.refunds") for r in before}
        new = [r for r in refunds if opt_str(r, "id", where) not in seen]
        if new:
            return new
    total = opt_int(ev.obj, "amount_refunded", "charge")
    total_before = opt_int(ev.previous, "amount_refunded", "previous_attributes")
    if total is not None and total_before is not None:
        step = [r for r in refunds if opt_int(r, "amount", where) == total - total_before]
        if step:
            refunds = step
    latest = newest(refunds, where)
    return [latest] if latest is not None else []


def charge_refunded(ev: StripeEvent) -> list[Occurrence]:
    charge, where = ev.obj, "charge"
    charge_id = need_str(charge, "id", where)
    refunds = list_items(charge, "refunds", where)
    if refunds:
        found = (_from_refund(ev, r, f"{where}.refunds", charge_id, charge) for r in refunds)
        named = {o.fact_id: o for o in found if o is not None}
        chosen = (need_str(r, "id", where) for r in _this_refund(refunds, ev))
        return [named[refund_id] for refund_id in chosen if refund_id in named]
    if ev.version is not None and ev.version >= REFUND_EVENTS_FOR_CHARGES_SINCE:
        return []  # the refund's own refund.created counts it, under its id
    total = opt_int(charge, "amount_refunded", where)
    if total is None:
        if opt_bool(charge, "refunded", where) is not True:
            raise ClassifyError("charge.amount_refunded is missing")
        total = charge_amount(charge, where)  # pre-2014 payloads: refunded in full
    step = total - (opt_int(ev.previous, "amount_refunded", "previous_attributes") or 0)
    if step <= 0:
        return []
    occurrence = _from_charge(ev, charge, where, "refunded", f"refund:{total}")
    # The refund's own time is unknown here; this event's is the closest.
    return [replace(occurrence, occurred_at=ev.created, refund_amount=step)]
