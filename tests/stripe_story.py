"""One real-world story, rendered as Stripe would send it at each API version family.

`Story` holds the version-independent model (customers, charges, refunds,
subscriptions) and, for each thing that happens, appends the webhook events Stripe sends
for it, rendered at the story's current `version` (`story.version = ...` between steps:
an account that upgrades mid-month renders later events at the newer version, and each
event's `data` stays at the version it was created with [S4]). Ids and times come from
the story (not a global counter), so rendering the same steps at another version yields
the same ids: only the shapes differ.

Every shape change below cites its source in `shared/stripe-versions.md` ([S#]).
Base objects: the 2020-08-27 `stripe trigger` captures for every version up to
2026-07-29.dahlia (changed as each version changed them), and the current schema
(`object.*.json`, stripe/openapi fixtures3, snapshot 2026-08-21, last changed
2026-07-29) for `NEWEST`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from tests.stripe_events import CLI, load

Obj = dict[str, Any]

#: The version families a connected account can have, oldest first.
VERSIONS = (
    "2020-08-27",
    "2022-11-15",
    "2023-10-16",
    "2024-06-20",
    "2024-10-28.acacia",
    "2025-03-31.basil",
    "2025-09-30.clover",
    "2026-03-25.dahlia",
    "2026-07-29.dahlia",
)
#: The newest schema: objects cut from fixtures3 (their last change is dated
#: 2026-07-29, so events say that version).
NEWEST = "fixtures3"
FAMILIES = (*VERSIONS, NEWEST)
NEWEST_API_VERSION = "2026-07-29.dahlia"
MONTH = 30 * 86400


def _date(version: str) -> str:
    return (NEWEST_API_VERSION if version == NEWEST else version)[:10]


@dataclass
class Refund:
    id: str
    charge: Charge
    amount: int
    created: int
    status: str = "succeeded"


@dataclass
class Charge:
    id: str
    pi: str
    customer: str | None
    email: str | None  # billing_details.email
    amount: int
    currency: str
    created: int
    failed: bool = False
    invoice: str | None = None
    refunds: list[Refund] = field(default_factory=list)

    @property
    def amount_refunded(self) -> int:
        return sum(r.amount for r in self.refunds if r.status not in ("failed", "canceled"))


@dataclass
class Sub:
    id: str
    customer: str
    item: str
    price: str
    unit: int
    quantity: int
    created: int
    period_start: int
    latest_invoice: str | None = None
    cancel_at_period_end: bool = False
    cancel_at: int | None = None
    canceled_at: int | None = None
    status: str = "active"
    ended_at: int | None = None

    @property
    def period_end(self) -> int:
        return self.period_start + MONTH


class Story:
    """Append-only list of rendered events; `version` is what the next step renders at.

    `refund_events_before_acacia`: Stripe's changelog says `refund.created` was sent
    only for refunds without a charge before 2024-10-28.acacia [S18]; whether endpoints
    on older versions also get it for charge refunds is unverified (stripe-versions.md,
    open point 1), so a story can include it to cover both readings.
    """

    def __init__(self, t0: int, version: str = VERSIONS[0], *, key: str = "s",
                 refund_events_before_acacia: bool = False) -> None:
        self.now = t0
        self.version = version
        self.key = key
        self.refund_events_before_acacia = refund_events_before_acacia
        self.events: list[Obj] = []
        self.emails: dict[str, str] = {}
        #: Charges of invoices (subscription payments), in order.
        self.invoice_charges: list[Charge] = []
        self._n = 0

    # -- plumbing -------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self.key}{self._n:05d}"

    def _tick(self) -> int:
        self.now += 60
        return self.now

    @property
    def _d(self) -> str:
        return _date(self.version)

    @property
    def newest(self) -> bool:
        return self.version == NEWEST

    def _emit(self, event_type: str, obj: Obj, *, previous: Obj | None = None,
              automatic: bool = False) -> Obj:
        data: Obj = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = copy.deepcopy(previous)
        event = {
            "id": self._id("evt"),
            "object": "event",
            # The version `data` was rendered at, static for the event's life [S4].
            "api_version": NEWEST_API_VERSION if self.newest else self.version,
            "created": self.now,
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            # request.id null: an automatic action (renewals, period-end cancels) [S4].
            "request": {"id": None if automatic else self._id("req"),
                        "idempotency_key": None},
            "type": event_type,
        }
        self.events.append(event)
        return event

    def _base(self, cli_type: str, newest: str) -> Obj:
        if self.newest:
            return load(f"object.{newest}.json")
        obj: Obj = load(f"{CLI}/{cli_type}.json")["data"]["object"]
        return obj

    # -- object renderings ---------------------------------------------------------

    def _customer(self, cus_id: str) -> Obj:
        # Current schema for every version: since 2020-08-27 `subscriptions`, `sources`
        # and `tax_ids` are not embedded unless expanded [S10], as in object.customer.
        obj = load("object.customer.json")
        obj.update(id=cus_id, email=self.emails[cus_id], created=self.now)
        return obj

    def _charge(self, c: Charge) -> Obj:
        obj = self._base("charge.failed" if c.failed else "charge.succeeded", "charge")
        obj.update(id=c.id, amount=c.amount, amount_captured=0 if c.failed else c.amount,
                   currency=c.currency, created=c.created, customer=c.customer,
                   payment_intent=c.pi, receipt_email=None, captured=not c.failed,
                   paid=not c.failed, status="failed" if c.failed else "succeeded",
                   amount_refunded=c.amount_refunded,
                   refunded=c.amount_refunded >= c.amount and not c.failed)
        if c.failed:
            obj.update(failure_code="card_declined", failure_message="Your card was declined.")
        obj["billing_details"]["email"] = c.email
        if self._d < "2022-11-15":
            # Refunds listed on the charge until 2022-11-15 [S13], newest first.
            obj["refunds"] = {"object": "list", "has_more": False,
                              "url": f"/v1/charges/{c.id}/refunds",
                              "data": [self._refund(r) for r in reversed(c.refunds)],
                              "total_count": len(c.refunds)}
        else:
            obj.pop("refunds", None)  # not included from 2022-11-15 [S13][S36]
        if self._d < "2025-03-31":
            obj["invoice"] = c.invoice
        else:
            obj.pop("invoice", None)  # Charge.invoice removed in basil [S20][S9]
        return obj

    def _intent(self, c: Charge) -> Obj:
        failed = c.failed
        obj = self._base("payment_intent.payment_failed" if failed
                         else "payment_intent.succeeded", "payment_intent")
        obj.update(id=c.pi, amount=c.amount, amount_received=0 if failed else c.amount,
                   currency=c.currency, customer=c.customer, created=c.created - 1,
                   status="requires_payment_method" if failed else "succeeded",
                   receipt_email=None)
        error = None
        if failed:
            error = copy.deepcopy(load(f"{CLI}/payment_intent.payment_failed.json")
                                  ["data"]["object"]["last_payment_error"])
            error["charge"] = c.id
        obj["last_payment_error"] = error
        if self._d < "2022-11-15":
            # Payment intents list their charges until 2022-11-15 [S15].
            obj["charges"] = {"object": "list", "data": [self._charge(c)], "has_more": False,
                              "total_count": 1, "url": f"/v1/charges?payment_intent={c.pi}"}
            obj.pop("latest_charge", None)
        else:
            obj.pop("charges", None)  # removed; `latest_charge` names it [S15]
            obj["latest_charge"] = c.id
        if self._d < "2025-03-31":
            obj["invoice"] = c.invoice
        else:
            obj.pop("invoice", None)  # PaymentIntent.invoice removed in basil [S20][S9]
        return obj

    def _refund(self, r: Refund) -> Obj:
        obj = self._base("charge.refunded", "refund") if self.newest else copy.deepcopy(
            load(f"{CLI}/charge.refunded.json")["data"]["object"]["refunds"]["data"][0])
        obj.update(id=r.id, amount=r.amount, charge=r.charge.id, currency=r.charge.currency,
                   created=r.created, payment_intent=r.charge.pi, status=r.status)
        if r.status == "failed":
            obj["failure_reason"] = "expired_or_canceled_card"
        if self._d >= "2026-07-29":
            # Refund gains customer, customer_account, payment_method [S34][S35].
            obj.update(customer=r.charge.customer, customer_account=None,
                       payment_method=obj.get("payment_method"))
        else:
            for key in ("customer", "customer_account"):
                obj.pop(key, None)
        return obj

    def _invoice(self, c: Charge, sub: Sub, reason: str) -> Obj:
        obj = self._base("invoice.payment_failed", "invoice")
        obj.update(id=c.invoice, customer=c.customer, customer_email=self.emails[c.customer or ""],
                   currency=c.currency, amount_due=c.amount, amount_paid=c.amount,
                   amount_remaining=0, status="paid", billing_reason=reason,
                   created=c.created - 2, attempted=True, attempt_count=1)
        if self._d < "2025-03-31":
            obj.update(charge=c.id, payment_intent=c.pi, subscription=sub.id, paid=True)
        else:
            # Basil: invoices no longer name their charge or payment intent, nor `paid`
            # [S20][S9]; the subscription moves under `parent` [S21][S22].
            for key in ("charge", "payment_intent", "paid", "paid_out_of_band",
                        "application_fee_amount", "subscription", "quote",
                        "subscription_details"):
                obj.pop(key, None)
            obj["parent"] = {"type": "subscription_details", "quote_details": None,
                             "subscription_details": {"metadata": {},
                                                      "subscription": sub.id}}
        return obj

    def _item(self, sub: Sub) -> Obj:
        base = self._base("customer.subscription.created", "subscription")
        item: Obj = copy.deepcopy(base["items"]["data"][0])
        item.update(id=sub.item, quantity=sub.quantity, subscription=sub.id)
        item["price"].update(id=sub.price, unit_amount=sub.unit, currency="usd",
                             unit_amount_decimal=str(sub.unit))
        # The legacy `plan` mirror of the price (fixtures3 keeps it, with placeholder
        # values; Stripe fills it with the price's own).
        item["plan"].update(id=sub.price, amount=sub.unit, currency="usd",
                            product=item["price"]["product"])
        if self._d >= "2025-03-31":
            # Period dates live on the items from basil [S23].
            item.update(current_period_start=sub.period_start,
                        current_period_end=sub.period_end)
        else:
            item.pop("current_period_start", None)
            item.pop("current_period_end", None)
        return item

    def _items(self, sub: Sub) -> Obj:
        return {"object": "list", "data": [self._item(sub)], "has_more": False,
                "total_count": 1, "url": f"/v1/subscription_items?subscription={sub.id}"}

    def _subscription(self, sub: Sub) -> Obj:
        obj = self._base("customer.subscription.created", "subscription")
        obj.update(id=sub.id, customer=sub.customer, created=sub.created,
                   start_date=sub.created, status=sub.status,
                   cancel_at_period_end=sub.cancel_at_period_end, cancel_at=sub.cancel_at,
                   canceled_at=sub.canceled_at, ended_at=sub.ended_at,
                   latest_invoice=sub.latest_invoice, items=self._items(sub))
        if self._d < "2025-03-31":
            obj.update(current_period_start=sub.period_start,
                       current_period_end=sub.period_end,
                       plan=copy.deepcopy(obj["items"]["data"][0]["plan"]),
                       quantity=sub.quantity)
        else:
            # Basil: no period dates on the subscription [S23]. The top-level `plan` and
            # `quantity` mirrors are not in the spec; real 2025-08-27.basil payloads
            # still had them [S24], later versions unverified (open point 5): kept for
            # basil, dropped from clover on.
            obj.pop("current_period_start", None)
            obj.pop("current_period_end", None)
            if self._d < "2025-09-30":
                obj.update(plan=copy.deepcopy(obj["items"]["data"][0]["plan"]),
                           quantity=sub.quantity)
            else:
                obj.pop("plan", None)
                obj.pop("quantity", None)
        if self._d >= "2025-09-30":
            obj["billing_mode"] = {"type": "flexible"}  # default in clover [S28]
        if sub.status == "canceled":
            obj["cancellation_details"] = {"comment": None, "feedback": None,
                                           "reason": "cancellation_requested"}
        return obj

    # -- what happens ----------------------------------------------------------------

    def customer(self, email: str) -> str:
        """A customer is created with an email."""
        self._tick()
        cus_id = self._id("cus")
        self.emails[cus_id] = email
        self._emit("customer.created", self._customer(cus_id))
        return cus_id

    def _payment(self, customer: str | None, amount: int, *, email: str | None = None,
                 failed: bool = False, invoice: str | None = None) -> Charge:
        self._tick()
        c = Charge(self._id("ch"), self._id("pi"), customer, email, amount, "usd", self.now,
                   failed=failed, invoice=invoice)
        if failed:
            self._emit("charge.failed", self._charge(c))
            self._emit("payment_intent.payment_failed", self._intent(c))
        else:
            self._emit("charge.succeeded", self._charge(c))
            self._emit("payment_intent.succeeded", self._intent(c))
        return c

    def pay(self, customer: str, amount: int) -> Charge:
        """A saved card is charged (no billing email on the card: the customer's)."""
        return self._payment(customer, amount)

    def fail(self, customer: str, amount: int) -> Charge:
        return self._payment(customer, amount, failed=True)

    def guest_checkout(self, email: str, amount: int) -> Charge:
        """A one-off Checkout payment. Since 2022-08-01 Checkout creates no customer by
        default and the email is on the charge's billing details [S12] (email location
        unverified, open point 2); before, it created a customer with that email."""
        customer = None
        if self._d < "2022-08-01":
            customer = self.customer(email)
        return self._payment(customer, amount, email=email)

    def refund(self, c: Charge, amount: int) -> Refund:
        """A (partial) refund: `charge.refunded` for partial refunds too [S14], with the
        cumulative `amount_refunded` [S36]; `refund.created` from 2024-10-28.acacia [S18]."""
        self._tick()
        before = {"amount_refunded": c.amount_refunded,
                  "refunded": c.amount_refunded >= c.amount}
        if self._d < "2022-11-15":
            before["refunds"] = {"data": [self._refund(r) for r in reversed(c.refunds)],
                                 "total_count": len(c.refunds)}
        r = Refund(self._id("re"), c, amount, self.now)
        c.refunds.append(r)
        self._emit("charge.refunded", self._charge(c), previous=before)
        if self._d >= "2024-10-28" or self.refund_events_before_acacia:
            self._emit("refund.created", self._refund(r))
        return r

    def refund_fails(self, r: Refund, status: str = "failed") -> None:
        """A refund fails (or is canceled) after it was made. From acacia,
        `refund.updated` and `refund.failed` are sent for card refunds [S18][S9];
        before, `charge.refund.updated` (a refund object) [S19]."""
        self._tick()
        r.status = status
        if self._d >= "2024-10-28" or self.refund_events_before_acacia:
            self._emit("refund.updated", self._refund(r), previous={"status": "succeeded"})
            if status == "failed":
                self._emit("refund.failed", self._refund(r))
        else:
            self._emit("charge.refund.updated", self._refund(r),
                       previous={"status": "succeeded"})

    def _invoice_payment(self, sub: Sub, reason: str) -> None:
        c = Charge(self._id("ch"), self._id("pi"), sub.customer, None,
                   sub.unit * sub.quantity, "usd", self.now, invoice=self._id("in"))
        sub.latest_invoice = c.invoice
        self._emit("charge.succeeded", self._charge(c))
        self._emit("payment_intent.succeeded", self._intent(c))
        invoice = self._invoice(c, sub, reason)
        self._emit("invoice.payment_succeeded", invoice)
        self._emit("invoice.paid", invoice)
        self.invoice_charges.append(c)

    def subscribe(self, customer: str, price: str, unit: int, quantity: int = 1) -> Sub:
        """A subscription is created and its first invoice paid
        (`billing_reason: subscription_create` [S36])."""
        self._tick()
        sub = Sub(self._id("sub"), customer, self._id("si"), price, unit, quantity,
                  self.now, self.now)
        self._invoice_payment(sub, "subscription_create")
        self._emit("customer.subscription.created", self._subscription(sub))
        return sub

    def change_plan(self, sub: Sub, price: str, unit: int, quantity: int) -> None:
        """The plan (price) and/or quantity change: `previous_attributes` holds the old
        `items` array whole [S4], plus the top-level `plan`/`quantity` mirrors while the
        object has them."""
        self._tick()
        old = self._subscription(sub)
        sub.price, sub.unit, sub.quantity = price, unit, quantity
        previous: Obj = {"items": old["items"]}
        for key in ("plan", "quantity"):
            if key in old and old[key] != self._subscription(sub).get(key):
                previous[key] = old[key]
        self._emit("customer.subscription.updated", self._subscription(sub), previous=previous)

    def renew(self, sub: Sub) -> None:
        """The period rolls over and the renewal invoice is paid
        (`billing_reason: subscription_cycle` [S36]). Before basil the update's
        `previous_attributes` holds the period dates (implied by [S23]); from basil the
        whole `items` array (an item's period changed) and `latest_invoice` [S23][S24]."""
        self._tick()
        old = self._subscription(sub)
        sub.period_start = sub.period_end
        self._invoice_payment(sub, "subscription_cycle")
        if self._d < "2025-03-31":
            previous = {k: old[k] for k in ("current_period_start", "current_period_end",
                                            "latest_invoice")}
        else:
            previous = {"items": old["items"], "latest_invoice": old["latest_invoice"]}
        self._emit("customer.subscription.updated", self._subscription(sub),
                   previous=previous, automatic=True)

    def schedule_cancel(self, sub: Sub, *, by_date: bool = False) -> None:
        """Cancellation scheduled: `cancel_at_period_end` becomes true (Stripe then also
        sets `cancel_at` to the period end), or, `by_date`, only `cancel_at` is set (what
        basil's `cancel_at` enums resolve to, an inference [S29]). `canceled_at` is the
        request time [S37][S36]."""
        self._tick()
        previous = {"cancel_at": sub.cancel_at, "canceled_at": sub.canceled_at}
        if not by_date:
            previous["cancel_at_period_end"] = sub.cancel_at_period_end
            sub.cancel_at_period_end = True
        sub.cancel_at, sub.canceled_at = sub.period_end, self.now
        self._emit("customer.subscription.updated", self._subscription(sub), previous=previous)

    def unschedule(self, sub: Sub) -> None:
        """A scheduled cancellation is undone before it takes effect."""
        self._tick()
        previous: Obj = {"cancel_at": sub.cancel_at, "canceled_at": sub.canceled_at}
        if sub.cancel_at_period_end:
            previous["cancel_at_period_end"] = True
        sub.cancel_at_period_end, sub.cancel_at, sub.canceled_at = False, None, None
        self._emit("customer.subscription.updated", self._subscription(sub), previous=previous)

    def cancel(self, sub: Sub) -> None:
        """The subscription ends (now, or at the scheduled end): `.deleted`, status
        canceled, `canceled_at` kept from the request if scheduled [S37]."""
        self._tick()
        scheduled = sub.canceled_at is not None
        sub.status, sub.ended_at = "canceled", self.now
        sub.canceled_at = sub.canceled_at or self.now
        self._emit("customer.subscription.deleted", self._subscription(sub),
                   automatic=scheduled)
