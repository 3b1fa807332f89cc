"""Realistic Stripe Event dicts for tests, built from the fixtures Stripe published.

Every builder starts from a real object in `shared/stripe-fixtures/` (the 2020-08-27
captures of `stripe trigger`, or the current-schema `object.*.json`) and changes only
what a test names, so tests exercise real payload shapes rather than hand-written
minimal dicts. Each call returns fresh dicts with fresh ids; nothing is shared.

The shapes: `"2020-08-27"` (charges listed on payment intents, refunds on charges, the
top-level `plan` mirror on subscriptions), `"2023-10-16"` (no lists, `latest_charge`),
`"2025-03-31.basil"` (period dates only on subscription items, no `invoice.charge`).
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

#: The repository's sibling `shared/` folder (CI clones the repo beside a copy of it).
FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "stripe-fixtures"
CLI = "events-stripe-cli-2020-08-27"
LEGACY = "events-stripe-java-legacy"
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z

_ids = itertools.count(1)
_clock = itertools.count(T0, 60)

Obj = dict[str, Any]


def load(relative: str) -> Obj:
    """A fixture file, freshly parsed (callers may mutate it)."""
    doc: Obj = json.loads((FIXTURES / relative).read_text())
    return doc


def fixture_files() -> list[str]:
    """Every JSON file in the fixtures folder, relative to it."""
    return sorted(str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*.json"))


def new_id(prefix: str) -> str:
    return f"{prefix}_test{next(_ids):06d}"


def tick() -> int:
    """A fresh, increasing timestamp, one minute after the previous one."""
    return next(_clock)


def _cli_object(event_type: str) -> Obj:
    obj: Obj = load(f"{CLI}/{event_type}.json")["data"]["object"]
    return obj


def event(
    event_type: str,
    obj: Obj,
    *,
    previous: Obj | None = None,
    api_version: str | None = "2020-08-27",
    created: int | None = None,
    event_id: str | None = None,
) -> Obj:
    """A Stripe Event around `obj`, shaped like the CLI captures."""
    data: Obj = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {
        "id": event_id or new_id("evt"),
        "object": "event",
        "api_version": api_version,
        "created": created if created is not None else tick(),
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": new_id("req"), "idempotency_key": None},
        "type": event_type,
    }


def charge(
    *,
    amount: int = 2000,
    currency: str = "usd",
    billing_email: str | None = None,
    receipt_email: str | None = None,
    customer: str | Obj | None = None,
    failed: bool = False,
    **fields: Any,
) -> Obj:
    """A charge from the CLI `charge.succeeded` (or `charge.failed`) capture."""
    obj = _cli_object("charge.failed" if failed else "charge.succeeded")
    obj.update(
        id=new_id("ch"),
        amount=amount,
        amount_captured=0 if failed else amount,
        currency=currency,
        created=tick(),
        customer=customer,
        receipt_email=receipt_email,
        payment_intent=new_id("pi"),
    )
    obj["billing_details"]["email"] = billing_email
    obj["refunds"]["url"] = f"/v1/charges/{obj['id']}/refunds"
    obj.update(fields)
    return obj


def payment_intent(ch: Obj, *, shape: str = "2020-08-27", **fields: Any) -> Obj:
    """The payment intent behind charge `ch`, in the given API shape."""
    failed = ch["status"] == "failed"
    obj = _cli_object("payment_intent.payment_failed" if failed else "payment_intent.succeeded")
    obj.update(
        id=ch["payment_intent"],
        amount=ch["amount"],
        amount_received=0 if failed else ch["amount"],
        currency=ch["currency"],
        customer=ch["customer"],
        created=ch["created"] - 1,
        status="requires_payment_method" if failed else "succeeded",
    )
    if failed:
        obj["last_payment_error"]["charge"] = ch["id"]
    if shape == "2020-08-27":
        obj["charges"]["data"] = [ch]
    else:
        del obj["charges"]
        obj["latest_charge"] = ch["id"]
    obj.update(fields)
    return obj


def invoice(ch: Obj | None, *, customer_email: str | None = None, **fields: Any) -> Obj:
    """An invoice paid by (or failing on) `ch`; `ch=None` gives the newest shape,
    which no longer names its charge."""
    obj = _cli_object("invoice.payment_failed")
    obj.update(id=new_id("in"), customer_email=customer_email, created=tick())
    if ch is None:
        del obj["charge"]
        return {**obj, **fields}
    paid = ch["status"] == "succeeded"
    obj.update(
        charge=ch["id"],
        payment_intent=ch["payment_intent"],
        customer=ch["customer"],
        currency=ch["currency"],
        amount_due=ch["amount"],
        amount_paid=ch["amount"] if paid else 0,
        amount_remaining=0 if paid else ch["amount"],
        paid=paid,
        status="paid" if paid else "open",
    )
    obj.update(fields)
    return obj


def refund(ch: Obj, amount: int, **fields: Any) -> Obj:
    """A refund of `ch`, from the refund embedded in the CLI `charge.refunded`."""
    obj: Obj = _cli_object("charge.refunded")["refunds"]["data"][0]
    obj.update(
        id=new_id("re"),
        amount=amount,
        charge=ch["id"],
        currency=ch["currency"],
        created=tick(),
        payment_intent=ch["payment_intent"],
    )
    obj.update(fields)
    return obj


def refund_events(
    ch: Obj, amounts: list[int], *, api_version: str = "2020-08-27"
) -> list[tuple[Obj, Obj]]:
    """What Stripe sends for successive refunds of `ch`: per refund, a `charge.refunded`
    (with the cumulative `amount_refunded` and its `previous_attributes`; the refund
    list only before 2022-11-15) and a `refund.created`. `ch` is updated in place."""
    listed = api_version < "2022-11-15"
    made: list[tuple[Obj, Obj]] = []
    refunds: list[Obj] = []
    for amount in amounts:
        before = {
            "amount_refunded": ch["amount_refunded"],
            "refunded": ch["refunded"],
        }
        if listed:
            before["refunds"] = {
                "data": copy.deepcopy(refunds),
                "total_count": len(refunds),
            }
        new = refund(ch, amount)
        refunds.insert(0, new)  # Stripe lists newest first
        ch["amount_refunded"] += amount
        ch["refunded"] = ch["amount_refunded"] >= ch["amount"]
        snapshot = copy.deepcopy(ch)
        if listed:
            snapshot["refunds"]["data"] = copy.deepcopy(refunds)
            snapshot["refunds"]["total_count"] = len(refunds)
        else:
            del snapshot["refunds"]
        created = new["created"]
        made.append(
            (
                event(
                    "charge.refunded",
                    snapshot,
                    previous=before,
                    api_version=api_version,
                    created=created,
                ),
                event("refund.created", dict(new), api_version=api_version, created=created),
            )
        )
    return made


def item(
    price_id: str | None = None,
    *,
    unit_amount: int | None = 1500,
    quantity: int | None = 1,
    currency: str = "usd",
    product: str | Obj | None = None,
    legacy_plan: bool = True,
    period_end: int | None = None,
) -> Obj:
    """A subscription item from the CLI capture: `price` (and the `plan` mirror when
    `legacy_plan`), optionally carrying its own `current_period_end` (newest shape)."""
    base: Obj = _cli_object("customer.subscription.created")["items"]["data"][0]
    price_id = price_id or new_id("price")
    product = product or new_id("prod")
    base.update(id=new_id("si"), quantity=quantity)
    base["price"].update(id=price_id, unit_amount=unit_amount, currency=currency, product=product)
    base["price"]["unit_amount_decimal"] = None if unit_amount is None else str(unit_amount)
    if legacy_plan:
        base["plan"].update(id=price_id, amount=unit_amount, currency=currency, product=product)
    else:
        del base["plan"]
    if period_end is not None:
        base["current_period_end"] = period_end
        base["current_period_start"] = period_end - 30 * 86400
    return base


def subscription(
    items: list[Obj] | None = None, *, shape: str = "2020-08-27", **fields: Any
) -> Obj:
    """A subscription from the CLI capture, holding `items` (default: one 15.00 USD
    item). Shape `"2025-03-31"` drops the top-level `plan`, `quantity` and period dates,
    which that version keeps only on the items."""
    obj = _cli_object("customer.subscription.created")
    sub_id = new_id("sub")
    start = tick()
    items = items or [item(legacy_plan=shape == "2020-08-27")]
    for it in items:
        it["subscription"] = sub_id
    obj.update(id=sub_id, created=start, start_date=start, customer=new_id("cus"))
    obj["items"]["data"] = items
    obj["items"]["total_count"] = len(items)
    if shape == "2020-08-27":
        single = items[0] if len(items) == 1 else None
        obj["plan"] = single.get("plan") if single else None
        obj["quantity"] = single["quantity"] if single else None
        obj.update(current_period_start=start, current_period_end=start + 30 * 86400)
    else:
        for key in ("plan", "quantity", "current_period_start", "current_period_end"):
            obj.pop(key, None)
        for it in items:
            it.setdefault("current_period_end", start + 30 * 86400)
            it.setdefault("current_period_start", start)
    obj.update(fields)
    return obj


def customer(email: str | None = "ann@example.com", **fields: Any) -> Obj:
    """A customer from the current-schema `object.customer.json`."""
    obj = load("object.customer.json")
    obj.update(id=new_id("cus"), email=email, created=tick())
    obj.update(fields)
    return obj
