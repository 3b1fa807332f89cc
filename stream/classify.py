"""Stripe events → occurrences of the six filters: the pure heart of the stream.

`classify(event)` sees one Stripe Event (the `event` of a `RawEvent` envelope) and
returns the occurrences it announces, each named by a **fact id** that every other
announcement of the same real-world occurrence also computes, so the stream's dedup
table collapses webhook retries, backfill overlap and sibling event types to one fact.

Fact ids, and why
-----------------
- `charge_succeeded` — `"{charge_id}:succeeded"`. `charge.succeeded` (when captured),
  `charge.captured`, `payment_intent.succeeded` (`latest_charge`, or the pre-2022
  `charges.data`) and `invoice.paid` / `invoice.payment_succeeded` (`charge`, until API
  2025-03-31) all name the charge, so one payment is one fact. A sibling that cannot
  name its charge (an invoice paid out of band, the newest invoice shape) yields
  nothing: the charge's own event counts it.
- `charge_failed` — `"{charge_id}:failed"` from `charge.failed`,
  `payment_intent.payment_failed` (`last_payment_error.charge`, else the latest charge)
  and `invoice.payment_failed`. Each retry is a new charge, so two failures count twice.
  A payment intent that failed without making a charge (3-D Secure authentication
  failed) is `"{pi_id}:failed:{event_id}"`: the event id is stable across retries and
  backfill, and each such failure is its own event.
- `refunded` — the refund id (`re_…`), one fact per refund; `refund_amount` is that
  refund's amount, `amount` the charge's. Which event names the refund depends on the
  API version the event is rendered at (the event's own `api_version`):
    * before 2022-11-15, `charge.refunded` carries the refund list: the refund(s) new
      relative to `previous_attributes.refunds`, else the newest whose amount is the
      step of `amount_refunded`, else the newest. `refund.created` gives the same id;
    * from 2024-10-28 (changelog "refund webhook update"), `refund.created` is sent for
      every refund and counts it; a list-less `charge.refunded` yields nothing;
    * in between, `charge.refunded` has no list and Stripe sent `refund.created` only
      for refunds without a charge. The list-less `charge.refunded` counts the refund
      as `"{charge_id}:refund:{amount_refunded}"` (the cumulative total grows with
      every refund, so it names the n-th refund, the same on every delivery), and a
      charge's `refund.created` rendered in that window yields nothing, so an account
      that does receive both is not counted twice. Known gap: a refund that fails
      lowers `amount_refunded`, so a later refund reaching the same total would collide.
  This relies on webhooks and the backfill rendering an event at the same version,
  which holds while the webhook endpoint uses the account's default version (the
  connector sets no `api_version` on it).
  Pre-2014 payloads lack `amount_refunded` and the list; `refunded: true` then means
  refunded in full. A `refund.created` knows only the charge's id: its `amount` is None
  and it has no emails; `Occurrence.charge_id` lets the stream fill both in.
  A refund that later fails or is canceled (`refund.updated` / `refund.failed` from
  2024-10-28, `charge.refund.updated` before) is *retracted*: an occurrence with
  `retracts=True` and the refund's id, which the attribution by charge maps to the fact
  it was counted as (see `stream.attribution`).
- `subscription_created` — `"{sub_id}:created"`.
- `subscription_changed` — `"{sub_id}:changed:{event_id}"`: every change is its own
  occurrence. Only a different set of (price or plan, quantity) counts; a renewal
  (period dates, `latest_invoice`), a status or a metadata change does not.
- `subscription_cancelled` — `"{sub_id}:cancelled"` from `customer.subscription.deleted`
  and from an update that schedules the end, so scheduling then deleting is one fact.
  Un-scheduling (`cancel_at_period_end` back to false, `cancel_at` cleared) retracts
  that fact; scheduling again after that counts anew (dedup is last-writer-wins by
  event time, `stream.attribution`).
Pre-2014 subscriptions have no id; the customer (who had at most one) names them.

Times are the occurrence's own `created` (charge, refund), a subscription's
`canceled_at` for cancellations, else the event's `created`. Money is integer minor
units as Stripe sends it (JPY stays as is); a float or string amount is refused.

Errors: `ClassifyError` and nothing else, for an event of a needed type that cannot be
understood; the stream dead-letters it with `str(error)`. Unused types yield [].
"""

from __future__ import annotations

from collections.abc import Callable

from common.immutable import immutable
from stream import classify_payments as pay
from stream import classify_subscriptions as subs
from stream.facts import normalize_email
from stream.occurrence import Occurrence, StripeEvent
from stream.stripe_objects import ClassifyError, JsonObj, api_version, need_dict, need_int, need_str

__all__ = [
    "HANDLED_EVENT_TYPES",
    "ClassifyError",
    "Occurrence",
    "classify",
    "customer_email_update",
]

Classifier = Callable[[StripeEvent], list[Occurrence]]


def _nothing(ev: StripeEvent) -> list[Occurrence]:
    """Customer events feed the customer→email table, not the facts."""
    return []


#: type → (kind of `data.object`, handler)
_RULES: dict[str, tuple[str, Classifier]] = {
    "charge.succeeded": ("charge", pay.charge_succeeded),
    "charge.captured": ("charge", pay.charge_succeeded),
    "charge.failed": ("charge", pay.charge_failed),
    "charge.refunded": ("charge", pay.charge_refunded),
    "refund.created": ("refund", pay.refund_created),
    "refund.updated": ("refund", pay.refund_voided),
    "refund.failed": ("refund", pay.refund_voided),
    "charge.refund.updated": ("refund", pay.refund_voided),
    "payment_intent.succeeded": ("payment_intent", pay.intent_succeeded),
    "payment_intent.payment_failed": ("payment_intent", pay.intent_failed),
    "invoice.paid": ("invoice", pay.invoice_paid),
    "invoice.payment_succeeded": ("invoice", pay.invoice_paid),
    "invoice.payment_failed": ("invoice", pay.invoice_failed),
    "customer.subscription.created": ("subscription", subs.subscription_created),
    "customer.subscription.updated": ("subscription", subs.subscription_updated),
    "customer.subscription.deleted": ("subscription", subs.subscription_deleted),
    "customer.created": ("customer", _nothing),
    "customer.updated": ("customer", _nothing),
}

#: The event types this table handles: equal to `common.stripe_event_types`, which the
#: connector subscribes to (tests/unit keeps them equal). `customer.deleted` is left out
#: on purpose: a deleted customer's last email still attributes late events (a refund
#: of an old charge), so deletion changes nothing.
HANDLED_EVENT_TYPES: frozenset[str] = frozenset(_RULES)

_CUSTOMER_TYPES = frozenset({"customer.created", "customer.updated", "customer.deleted"})


def _event_type(event: object) -> tuple[JsonObj, str]:
    body = need_dict(event, "event")
    kind = body.get("type")
    if not isinstance(kind, str) or not kind:
        raise ClassifyError("event has no type")
    return body, kind


def _parse(event: JsonObj, kind: str) -> StripeEvent:
    data = need_dict(event.get("data"), "event.data")
    obj = need_dict(data.get("object"), "event.data.object")
    tag = obj.get("object")
    if tag is not None and tag != kind:
        raise ClassifyError(f"{event['type']} carries a {tag!r} object, expected {kind!r}")
    previous = data.get("previous_attributes")
    return StripeEvent(
        id=need_str(event, "id", "event"),
        type=event["type"],
        created=need_int(event, "created", "event"),
        obj=obj,
        previous={} if previous is None else need_dict(previous, "previous_attributes"),
        version=api_version(event),
    )


@immutable
class Classified:
    """Everything one Stripe event says, from one parse of it: the occurrences it
    announces, and for `customer.*` events `(customer_id, email or None)` for the
    stream's customer→email table (SPEC, "Contacts")."""

    occurrences: list[Occurrence]
    customer_email: tuple[str, str | None] | None = None


def classify_event(event: object) -> Classified:
    """The one entry point of classification: the pipeline calls it once per event and
    hands the result to contact resolution (`stream.contacts`).

    Raises `ClassifyError` (only) when the event, or a needed type's payload, cannot be
    understood. `customer.deleted` is handled for completeness (e.g. a replayed
    backfill) and reports the email the customer had, which keeps attributing late
    events.
    """
    body, kind = _event_type(event)
    if kind in _CUSTOMER_TYPES:
        customer = _parse(body, "customer").obj
        return Classified([], (need_str(customer, "id", "customer"),
                               normalize_email(customer.get("email"))))
    return Classified(_occurrences(body, kind))


def classify(event: object) -> list[Occurrence]:
    """The occurrences one Stripe event announces; [] for types the engine ignores."""
    body, kind = _event_type(event)
    return _occurrences(body, kind)


def _occurrences(body: JsonObj, kind: str) -> list[Occurrence]:
    rule = _RULES.get(kind)
    if rule is None:
        return []
    object_kind, handler = rule
    return handler(_parse(body, object_kind))


def customer_email_update(event: object) -> tuple[str, str | None] | None:
    """`(customer_id, email or None)` from `customer.*` events; None for any other type
    (whose payload is not looked at)."""
    if _event_type(event)[1] not in _CUSTOMER_TYPES:
        return None
    return classify_event(event).customer_email
