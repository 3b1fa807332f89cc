"""The Stripe event types the engine uses: one list for the connector and the worker.

The webhook endpoint is registered for exactly these types, the receiver drops
everything else with a 2xx, the backfill filters the Events API by them, and the
worker's classification handles each of them (tests/unit keeps its dispatch table equal
to this set). Stripe accepts at most 20 names in an
endpoint's `enabled_events` and the Events API's `types[]`.
"""

from __future__ import annotations

NEEDED_EVENT_TYPES: frozenset[str] = frozenset({
    "charge.succeeded",
    "charge.failed",
    "charge.captured",
    "charge.refunded",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.refund.updated",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.created",
    "customer.updated",
})

#: Stripe's limit on `enabled_events` and on the Events API's `types[]`.
STRIPE_TYPES_LIMIT = 20

