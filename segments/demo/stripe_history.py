"""The demo account's recent history on localstripe, made with the official library.

Before the demo connects the account, it creates customers, card payments that succeed
and fail, and subscriptions (some cancelled) on a localstripe server, exactly as a
shop's backend would with `stripe-python`; the connector's 30-day backfill then reads
them back through the Events API. (localstripe records no charge.*, refund.* or
customer.subscription.updated events: its payments arrive as payment_intent.* and
invoice.* events, which is also what a real backfill sees for them.)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import stripe

from segments.demo.feed import person

#: Test cards: one that pays, and one that attaches and then declines on payment.
SUCCEEDS = "4242424242424242"
DECLINES = "4000000000000341"
#: Customer numbers of the backfilled history (the webhook feed starts at 0).
FIRST_CUSTOMER = 100_000


@dataclass
class Seeded:
    customers: int = 0
    payments: int = 0
    declined: int = 0
    subscriptions: int = 0
    cancelled: int = 0

    def describe(self) -> str:
        return (f"{self.customers} customers, {self.payments} payments ({self.declined} "
                f"declined), {self.subscriptions} subscriptions ({self.cancelled} cancelled)")


def _card(client: stripe.StripeClient, number: str, customer: str) -> str:
    pm = client.v1.payment_methods.create(params={
        "type": "card",
        "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
    })
    client.v1.payment_methods.attach(pm.id, params={"customer": customer})
    return pm.id


def seed_account(api_base: str, api_key: str, customers: int) -> Seeded:
    """Create `customers` customers' activity on the Stripe-compatible server at `api_base`.

    Per customer: a successful payment (19, 49 or 99 USD/EUR); every 4th also a declined
    one; every 2nd subscribes to Basic (9 USD) or Pro (29 USD), and every 6th cancels.
    Blocking (the library's sync client): run it in a thread from async code.
    """
    client = stripe.StripeClient(api_key, base_addresses={"api": api_base},
                                 max_network_retries=2)
    product = client.v1.products.create(params={"name": "Demo plans"})
    plans = [client.v1.plans.create(params={
        "amount": amount, "currency": "usd", "interval": "month", "product": product.id,
        "nickname": nickname}) for nickname, amount in (("Basic", 900), ("Pro", 2900))]
    seeded = Seeded()
    for i in range(customers):
        name, email = person(FIRST_CUSTOMER + i)
        customer = client.v1.customers.create(params={"email": email, "name": name})
        seeded.customers += 1
        ok = _card(client, SUCCEEDS, customer.id)
        client.v1.payment_intents.create(params={
            "amount": (1900, 4900, 9900)[i % 3], "currency": ("usd", "eur")[i % 2],
            "customer": customer.id, "payment_method": ok, "confirm": True,
        })
        seeded.payments += 1
        if i % 4 == 1:
            bad = _card(client, DECLINES, customer.id)
            with contextlib.suppress(stripe.CardError):
                client.v1.payment_intents.create(params={
                    "amount": 2900, "currency": "usd", "customer": customer.id,
                    "payment_method": bad, "confirm": True,
                })
            seeded.payments += 1
            seeded.declined += 1
        if i % 2 == 0:
            client.v1.customers.update(customer.id, params={
                "invoice_settings": {"default_payment_method": ok}})
            sub = client.v1.subscriptions.create(params={
                "customer": customer.id, "items": [{"plan": plans[(i // 2) % 2].id}]})
            seeded.subscriptions += 1
            if i % 6 == 0:
                client.v1.subscriptions.cancel(sub.id)
                seeded.cancelled += 1
    return seeded
