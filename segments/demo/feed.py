"""Sample Stripe activity for `segments demo`: realistic events for many customers.

Shapes follow Stripe's published examples (the 2020-08-27 `stripe trigger` captures in
shared/stripe-fixtures): charges with billing details and their payment intents, refunds
listed on the charge and announced again by `refund.created`, subscriptions with items
and a plan, plan changes, scheduled ends and deletions. Amounts are integer minor units
(JPY is zero-decimal), emails come in the untidy forms users type them, some payments
are guest checkouts (no customer, the email only on the charge) and a few customers
have no email at all (their occurrences are counted, never attributed).

Every event is dated in the past (`created` <= `now`): the `story` of one customer
spreads over the days before `now`; `expiring_failure` is a failed charge that leaves
a 30-day window a few seconds after the demo starts (a time-caused `left`).
"""

from __future__ import annotations

import random
from typing import Any

API_VERSION = "2020-08-27"
DAY = 86_400
#: (currency, amounts in minor units): zero-decimal JPY needs its own scale.
CURRENCIES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("usd", (900, 2900, 4999, 9900, 15000)),
    ("usd", (1900, 4900, 9900)),
    ("eur", (900, 2900, 4999, 9900, 15000)),
    ("gbp", (1500, 4500, 12000)),
    ("jpy", (1000, 3200, 5500, 11000, 16000)),
)
#: (price id, product id, monthly unit amount in USD cents)
PLANS = (("price_basic", "prod_basic", 900), ("price_pro", "prod_pro", 2900),
         ("price_team", "prod_team", 9900))
FIRST = ("ann", "bo", "chen", "dara", "eli", "femi", "gus", "hana", "ivan", "jo", "kai",
         "lena", "mo", "nia", "omar", "pia", "raj", "sara", "tom", "uma", "vik", "yara")
LAST = ("lee", "ng", "diaz", "okafor", "smith", "tanaka", "muller", "rossi", "kim", "silva")
DOMAINS = ("example.com", "example.org", "example.net")

Event = dict[str, Any]


def person(n: int) -> tuple[str, str]:
    """A stable (name, email) for customer number `n`."""
    first, last = FIRST[n % len(FIRST)], LAST[(n // len(FIRST)) % len(LAST)]
    return f"{first.title()} {last.title()}", f"{first}.{last}{n}@{DOMAINS[n % len(DOMAINS)]}"


def untidy(email: str, rand: random.Random) -> str:
    """As typed into a checkout form: sometimes capitalised, sometimes with spaces."""
    roll = rand.random()
    if roll < 0.1:
        return f" {email.title()} "
    if roll < 0.2:
        return email.upper()
    return email


class DemoActivity:
    def __init__(self, seed: int, now: int) -> None:
        self.rand = random.Random(seed)
        self.now = now
        self.counter = 0

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_demo{self.counter:07d}"

    def _event(self, kind: str, obj: dict[str, Any], created: int,
               previous: dict[str, Any] | None = None) -> Event:
        data: dict[str, Any] = {"object": obj}
        if previous is not None:
            data["previous_attributes"] = previous
        return {"id": self._id("evt"), "object": "event", "api_version": API_VERSION,
                "created": created, "data": data, "livemode": False, "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None}, "type": kind}

    def _charge(self, customer: str | None, email: str | None, amount: int, currency: str,
                created: int, failed: bool) -> dict[str, Any]:
        cid = self._id("ch")
        return {
            "id": cid, "object": "charge", "amount": amount,
            "amount_captured": 0 if failed else amount, "amount_refunded": 0,
            "captured": not failed, "created": created, "currency": currency,
            "customer": customer, "paid": not failed, "payment_intent": self._id("pi"),
            "receipt_email": None, "refunded": False,
            "status": "failed" if failed else "succeeded",
            "billing_details": {"email": email, "name": None},
            "failure_code": "card_declined" if failed else None,
            "failure_message": "Your card was declined." if failed else None,
            "refunds": {"object": "list", "data": [], "has_more": False, "total_count": 0,
                        "url": f"/v1/charges/{cid}/refunds"},
        }

    def _intent(self, charge: dict[str, Any]) -> dict[str, Any]:
        """The payment intent behind a charge (API 2020-08-27: charges listed on it)."""
        failed = charge["status"] == "failed"
        return {
            "id": charge["payment_intent"], "object": "payment_intent",
            "amount": charge["amount"], "amount_received": 0 if failed else charge["amount"],
            "currency": charge["currency"], "customer": charge["customer"],
            "created": charge["created"], "receipt_email": None,
            "status": "requires_payment_method" if failed else "succeeded",
            "charges": {"object": "list", "data": [charge], "has_more": False,
                        "total_count": 1},
            "last_payment_error": ({"code": "card_declined", "charge": charge["id"]}
                                   if failed else None),
        }

    def _subscription(self, customer: str, plan: tuple[str, str, int], quantity: int,
                      created: int) -> dict[str, Any]:
        price, product, unit = plan
        price_obj = {"id": price, "object": "price", "currency": "usd", "unit_amount": unit,
                     "product": product, "recurring": {"interval": "month"}}
        plan_obj = {"id": price, "object": "plan", "amount": unit, "currency": "usd",
                    "product": product, "interval": "month"}
        sid = self._id("sub")
        return {
            "id": sid, "object": "subscription", "customer": customer, "created": created,
            "start_date": created, "status": "active", "cancel_at_period_end": False,
            "cancel_at": None, "canceled_at": None, "ended_at": None,
            "current_period_start": created, "current_period_end": created + 30 * DAY,
            "quantity": quantity, "plan": plan_obj,
            "items": {"object": "list", "data": [{
                "id": self._id("si"), "object": "subscription_item", "price": price_obj,
                "plan": plan_obj, "quantity": quantity, "subscription": sid}]},
        }

    def _customer(self, n: int, created: int, with_email: bool) -> tuple[str, str, Event]:
        name, email = person(n)
        customer = self._id("cus")
        obj = {"id": customer, "object": "customer", "created": created, "name": name,
               "email": untidy(email, self.rand) if with_email else None}
        return customer, email, self._event("customer.created", obj, created)

    def story(self, n: int, *, start: int, spread: int) -> list[Event]:
        """One customer's recent history, oldest first: steps `spread` seconds apart at
        most, starting at `start`, never later than `now`."""
        r = self.rand
        t = start

        def step() -> int:
            nonlocal t
            t = min(self.now, t + r.randint(max(1, spread // 20), spread))
            return t

        events: list[Event] = []
        guest = r.random() < 0.1
        customer: str | None = None
        _, email = person(n)
        if not guest:
            customer, email, created = self._customer(n, t, with_email=r.random() > 0.04)
            events.append(created)
        currency, amounts = r.choice(CURRENCIES)
        for _ in range(r.randint(1, 3)):
            failed = r.random() < 0.25
            charge = self._charge(customer, untidy(email, r), r.choice(amounts), currency,
                                  step(), failed)
            events.append(self._event("charge.failed" if failed else "charge.succeeded",
                                      charge, charge["created"]))
            if r.random() < 0.5:  # its payment intent says the same again
                events.append(self._event(
                    "payment_intent.payment_failed" if failed else "payment_intent.succeeded",
                    self._intent(charge), charge["created"]))
            if not failed and r.random() < 0.3:
                events.extend(self._refund(charge, step()))
        if customer is not None and r.random() < 0.6:
            events.extend(self._subscription_story(customer, step, r))
        return events

    def _refund(self, charge: dict[str, Any], t: int) -> list[Event]:
        amount = charge["amount"]
        refund_amount = amount if self.rand.random() < 0.5 else amount // 2
        refund = {"id": self._id("re"), "object": "refund", "amount": refund_amount,
                  "charge": charge["id"], "currency": charge["currency"], "created": t,
                  "status": "succeeded", "payment_intent": charge["payment_intent"]}
        refunded = {**charge, "amount_refunded": refund_amount,
                    "refunded": refund_amount == amount,
                    "refunds": {**charge["refunds"], "data": [refund], "total_count": 1}}
        events = [self._event("charge.refunded", refunded, t, previous={
            "amount_refunded": 0, "refunded": False,
            "refunds": {"data": [], "total_count": 0}})]
        if self.rand.random() < 0.5:  # the same refund announced a second way
            events.append(self._event("refund.created", refund, t))
        return events

    def _subscription_story(self, customer: str, step: Any, r: random.Random) -> list[Event]:
        sub = self._subscription(customer, r.choice(PLANS), r.randint(1, 3), step())
        events = [self._event("customer.subscription.created", sub, sub["created"])]
        roll = r.random()
        if roll < 0.35:
            t = step()
            changed = self._subscription(customer, r.choice(PLANS), sub["quantity"] + 1, t)
            changed.update(id=sub["id"], start_date=sub["start_date"], created=sub["created"])
            events.append(self._event("customer.subscription.updated", changed, t, previous={
                "quantity": sub["quantity"], "plan": sub["plan"], "items": sub["items"]}))
        elif roll < 0.6:
            t = step()
            ending = {**sub, "cancel_at_period_end": True, "canceled_at": t,
                      "cancel_at": sub["current_period_end"]}
            events.append(self._event("customer.subscription.updated", ending, t, previous={
                "cancel_at_period_end": False, "canceled_at": None, "cancel_at": None}))
        elif roll < 0.75:
            t = step()
            gone = {**sub, "status": "canceled", "canceled_at": t, "ended_at": t}
            events.append(self._event("customer.subscription.deleted", gone, t))
        elif roll < 0.85:  # a renewal: new period dates only, not a change of plan
            t = step()
            renewed = {**sub, "current_period_start": t, "current_period_end": t + 30 * DAY}
            events.append(self._event("customer.subscription.updated", renewed, t, previous={
                "current_period_start": sub["current_period_start"],
                "current_period_end": sub["current_period_end"]}))
        return events

    def expiring_failure(self, n: int, seconds_left: int) -> list[Event]:
        """A failed charge that leaves a 30-day window `seconds_left` seconds from `now`."""
        t = self.now - 30 * DAY + seconds_left
        customer, email, created = self._customer(n, t - 60, with_email=True)
        charge = self._charge(customer, email, 2900, "usd", t, failed=True)
        return [created, self._event("charge.failed", charge, t)]


def _window(days: int) -> dict[str, Any]:
    return {"count": days, "unit": "days"}


#: One rule per filter, together using every kind of condition (amount, currency,
#: date, start date, refund amount, plan).
DEMO_RULES: tuple[dict[str, Any], ...] = (
    {"id": "failed-payments", "name": "Cannot be charged (last 30 days)",
     "filter": "charge_failed",
     "conditions": [{"field": "date", "op": "within_last", "value": _window(30)}]},
    {"id": "big-refunds", "name": "Refunded over 20 in USD/EUR (last 30 days)",
     "filter": "refunded",
     "conditions": [{"field": "refund_amount", "op": "gt", "value": "20"},
                    {"field": "currency", "op": "in", "value": ["usd", "eur"]},
                    {"field": "date", "op": "within_last", "value": _window(30)}]},
    {"id": "paying-customers", "name": "Paid 10 or more in USD or EUR",
     "filter": "charge_succeeded",
     "conditions": [{"field": "amount", "op": "gte", "value": "10"},
                    {"field": "currency", "op": "in", "value": ["usd", "eur"]}]},
    {"id": "new-subscribers", "name": "Subscription started in the last 2 weeks",
     "filter": "subscription_created",
     "conditions": [{"field": "start_date", "op": "within_last", "value": _window(14)}]},
    {"id": "upgraders", "name": "Changed their plan to Pro or Team",
     "filter": "subscription_changed",
     "conditions": [{"field": "plan", "op": "in", "value": ["price_pro", "price_team"]}]},
    {"id": "churned", "name": "Cancelled a plan worth 20+ a month",
     "filter": "subscription_cancelled",
     "conditions": [{"field": "amount", "op": "gte", "value": "20"}]},
)

#: The demo edits a rule while it runs: its segment is recomputed (cause "rule").
RULE_EDIT: dict[str, Any] = {
    **DEMO_RULES[1], "name": "Refunded over 40 in USD/EUR (last 30 days)",
    "conditions": [{"field": "refund_amount", "op": "gt", "value": "40"},
                   *DEMO_RULES[1]["conditions"][1:]],
}
