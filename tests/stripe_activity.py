"""Real activity on a Stripe-compatible server (localstripe in tests), via the official library.

`make_activity` creates customers with emails, card payments that succeed and fail,
and subscriptions that start and end: the events a connected account produces.
"""

from __future__ import annotations

import contextlib
import urllib.request
from dataclasses import dataclass, field

import stripe

SUCCEEDS = "4242424242424242"
#: Attaches to a customer, then declines on payment.
DECLINES = "4000000000000341"


@dataclass
class Activity:
    customers: dict[str, str] = field(default_factory=dict)  # id -> email as given
    no_email: list[str] = field(default_factory=list)


def _card(client: stripe.StripeClient, number: str, customer: str) -> str:
    pm = client.v1.payment_methods.create(params={
        "type": "card",
        "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
    })
    client.v1.payment_methods.attach(pm.id, params={"customer": customer})
    return pm.id


def make_activity(client: stripe.StripeClient, customers: int, *, tag: str = "c") -> Activity:
    """Per customer: one payment that succeeds; every 3rd: one declined payment; every
    2nd: a subscription to a plan; every 4th: that subscription cancelled."""
    activity = Activity()
    product = client.v1.products.create(params={"name": f"Pro {tag}"})
    plan = client.v1.plans.create(params={
        "amount": 4900, "currency": "usd", "interval": "month", "product": product.id,
    })
    for i in range(customers):
        email = f"  {tag}{i}@Example.COM "
        customer = client.v1.customers.create(params={"email": email, "name": f"{tag} {i}"})
        activity.customers[customer.id] = email
        ok = _card(client, SUCCEEDS, customer.id)
        client.v1.payment_intents.create(params={
            "amount": 1000 + i, "currency": "usd", "customer": customer.id,
            "payment_method": ok, "confirm": True,
        })
        if i % 3 == 0:
            bad = _card(client, DECLINES, customer.id)
            with contextlib.suppress(stripe.CardError):
                client.v1.payment_intents.create(params={
                    "amount": 2000 + i, "currency": "usd", "customer": customer.id,
                    "payment_method": bad, "confirm": True,
                })
        if i % 2 == 0:
            client.v1.customers.update(customer.id, params={
                "invoice_settings": {"default_payment_method": ok}})
            sub = client.v1.subscriptions.create(params={
                "customer": customer.id, "items": [{"plan": plan.id}]})
            if i % 4 == 0:
                client.v1.subscriptions.cancel(sub.id)
    bare = client.v1.customers.create(params={"name": f"{tag} without email"})
    activity.no_email.append(bare.id)
    return activity


def flush(base: str) -> None:
    """Forget every object and event on a localstripe server (webhook registrations stay)."""
    request = urllib.request.Request(f"{base}/_config/data", method="DELETE")
    with urllib.request.urlopen(request, timeout=5):
        pass
