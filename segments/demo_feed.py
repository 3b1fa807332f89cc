"""Sample Stripe activity for `segments demo`: realistic events for many customers.

Shapes follow Stripe's published examples (the 2020-08-27 `stripe trigger` captures in
shared/stripe-fixtures): charges with billing details, refunds listed on the charge,
subscriptions with items and a plan. Amounts are integer minor units, JPY included.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

API_VERSION = "2020-08-27"
CURRENCIES = (("usd", 1), ("eur", 1), ("jpy", 100))
PLANS = (("price_basic", "prod_basic", 900), ("price_pro", "prod_pro", 2900),
         ("price_team", "prod_team", 9900))


class Feed:
    def __init__(self, seed: int, now: int) -> None:
        self.rand = random.Random(seed)
        self.now = now
        self.counter = 0

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_demo{self.counter:07d}"

    def _event(self, kind: str, obj: dict[str, Any], created: int,
               previous: dict[str, Any] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"object": obj}
        if previous is not None:
            data["previous_attributes"] = previous
        return {"id": self._id("evt"), "object": "event", "api_version": API_VERSION,
                "created": created, "data": data, "livemode": False, "pending_webhooks": 1,
                "type": kind}

    def _charge(self, customer: str, email: str, amount: int, currency: str, created: int,
                failed: bool) -> dict[str, Any]:
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
            "refunds": {"object": "list", "data": [], "has_more": False, "total_count": 0,
                        "url": f"/v1/charges/{cid}/refunds"},
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
            "current_period_start": created, "current_period_end": created + 30 * 86400,
            "quantity": quantity, "plan": plan_obj,
            "items": {"object": "list", "data": [{
                "id": self._id("si"), "object": "subscription_item", "price": price_obj,
                "plan": plan_obj, "quantity": quantity, "subscription": sid}]},
        }

    def customer_story(self, n: int) -> Iterator[dict[str, Any]]:
        """One customer's month: payments, maybe a failure, refund, subscription changes."""
        r = self.rand
        email = f"customer{n}@example.com"
        customer = self._id("cus")
        t = self.now - r.randint(1, 25) * 86400
        yield self._event("customer.created", {"id": customer, "object": "customer",
                                               "email": email, "created": t}, t)
        currency, scale = r.choice(CURRENCIES)
        for _ in range(r.randint(1, 3)):
            t += r.randint(600, 86400)
            amount = r.choice((900, 2900, 4999, 9900, 15000)) * scale // (100 if scale > 1 else 1)
            if r.random() < 0.25:
                yield self._event("charge.failed",
                                  self._charge(customer, email, amount, currency, t, True), t)
                continue
            charge = self._charge(customer, email, amount, currency, t, False)
            yield self._event("charge.succeeded", charge, t)
            if r.random() < 0.3:
                t += r.randint(600, 86400)
                refund_amount = amount if r.random() < 0.5 else amount // 2
                refund = {"id": self._id("re"), "object": "refund", "amount": refund_amount,
                          "charge": charge["id"], "currency": currency, "created": t,
                          "status": "succeeded"}
                refunded = {**charge, "amount_refunded": refund_amount,
                            "refunded": refund_amount == amount,
                            "refunds": {**charge["refunds"], "data": [refund], "total_count": 1}}
                yield self._event("charge.refunded", refunded, t,
                                  previous={"amount_refunded": 0, "refunds": {"data": [],
                                                                              "total_count": 0}})
        if r.random() < 0.6:
            t += r.randint(600, 86400)
            sub = self._subscription(customer, r.choice(PLANS), r.randint(1, 3), t)
            yield self._event("customer.subscription.created", sub, t)
            roll = r.random()
            t += r.randint(600, 86400)
            if roll < 0.35:
                new_plan = r.choice(PLANS)
                changed = self._subscription(customer, new_plan, sub["quantity"] + 1, t)
                changed["id"], changed["start_date"] = sub["id"], sub["start_date"]
                yield self._event("customer.subscription.updated", changed, t,
                                  previous={"quantity": sub["quantity"], "plan": sub["plan"],
                                            "items": sub["items"]})
            elif roll < 0.6:
                ending = {**sub, "cancel_at_period_end": True, "canceled_at": t}
                yield self._event("customer.subscription.updated", ending, t,
                                  previous={"cancel_at_period_end": False, "canceled_at": None})
            elif roll < 0.75:
                gone = {**sub, "status": "canceled", "canceled_at": t, "ended_at": t}
                yield self._event("customer.subscription.deleted", gone, t)


DEMO_RULES: tuple[dict[str, Any], ...] = (
    {"id": "failed-payments", "name": "Someone cannot be charged", "filter": "charge_failed",
     "conditions": [{"field": "date", "op": "within_last", "value": {"count": 30,
                                                                    "unit": "days"}}]},
    {"id": "big-refunds", "name": "Refunded over 20 this month", "filter": "refunded",
     "conditions": [{"field": "refund_amount", "op": "gt", "value": "20"},
                    {"field": "date", "op": "within_last", "value": {"count": 30,
                                                                    "unit": "days"}}]},
    {"id": "paying-usd", "name": "Charged successfully in USD or EUR",
     "filter": "charge_succeeded",
     "conditions": [{"field": "currency", "op": "in", "value": ["usd", "eur"]}]},
    {"id": "new-subscribers", "name": "Subscribed in the last 2 weeks",
     "filter": "subscription_created",
     "conditions": [{"field": "date", "op": "within_last", "value": {"count": 14,
                                                                    "unit": "days"}}]},
    {"id": "plan-changers", "name": "Changed their subscription",
     "filter": "subscription_changed", "conditions": []},
    {"id": "churned", "name": "Cancelled their subscription",
     "filter": "subscription_cancelled", "conditions": []},
)
