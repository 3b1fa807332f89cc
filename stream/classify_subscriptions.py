"""`customer.subscription.*` events → the three subscription filters.

Subscriptions come in three shapes across API versions: pre-2014 (one subscription
per customer, no `id`, top-level `plan` + `quantity`), 2014-2018 to 2024 (`items`
plus the top-level `plan` mirror), and the newest (`items.data[].price` only, with
the period dates moved onto the items). Every reader here accepts all three.
"""

from __future__ import annotations

from typing import Any

from common.immutable import immutable
from rules.vocabulary import FilterId
from stream.occurrence import Occurrence, StripeEvent
from stream.stripe_objects import (
    ClassifyError,
    JsonObj,
    currency,
    emails,
    expanded,
    list_items,
    opt_bool,
    opt_int,
    opt_str,
    ref_id,
    sub,
)

WHERE = "subscription"
#: previous_attributes keys that can carry a change of what is subscribed to.
PLAN_KEYS = ("plan", "items", "quantity")


@immutable
class _Line:
    """One subscribed price (an item, or a legacy subscription's own plan)."""

    key: str | None  # price id, else plan id: what "the same plan" means
    ids: tuple[str, ...]  # price, plan and product ids, for the Plan condition
    unit_amount: int | None
    currency: str | None
    quantity: int


def _line(holder: JsonObj, where: str) -> _Line:
    price_id, plan_id = ref_id(holder, "price", where), ref_id(holder, "plan", where)
    price, plan = expanded(holder, "price", where), expanded(holder, "plan", where)
    unit: int | None = None
    code: str | None = None
    products: list[str | None] = []
    for obj, amount_key, name in ((price, "unit_amount", "price"), (plan, "amount", "plan")):
        if obj is None:
            continue
        value = opt_int(obj, amount_key, f"{where}.{name}")
        unit = value if unit is None else unit
        code = code or currency(obj, f"{where}.{name}", required=False)
        products.append(ref_id(obj, "product", f"{where}.{name}"))
    quantity = opt_int(holder, "quantity", where)
    ids = (i for i in (price_id, plan_id, *products) if i)
    return _Line(
        key=price_id or plan_id,
        ids=tuple(dict.fromkeys(ids)),
        unit_amount=unit,
        currency=code,
        quantity=1 if quantity is None else quantity,
    )


def _lines(sub_obj: JsonObj) -> list[_Line]:
    items = list_items(sub_obj, "items", WHERE)
    if items:
        return [_line(item, f"{WHERE}.items[{i}]") for i, item in enumerate(items)]
    if sub_obj.get("plan") is not None:
        return [_line(sub_obj, WHERE)]
    return []


def _signature(sub_obj: JsonObj) -> tuple[object, ...]:
    """What is subscribed to: (price or plan, quantity) per item, plus the legacy
    top-level plan and quantity. Period dates, status and metadata are left out."""
    lines = sorted((line.key or "", line.quantity) for line in _lines(sub_obj))
    return (
        tuple(lines),
        ref_id(sub_obj, "plan", WHERE),
        opt_int(sub_obj, "quantity", WHERE),
    )


def _overlay(current: Any, previous: Any) -> Any:
    """The object as it was: `previous_attributes` laid over the current object.

    Nested objects merge key by key, and list entries by id, so a diff that names only
    what changed (an item's period dates, say) still yields whole items to compare.
    """
    if isinstance(current, dict) and isinstance(previous, dict):
        merged = dict(current)
        for key, value in previous.items():
            merged[key] = _overlay(current.get(key), value)
        return merged
    if isinstance(current, list) and isinstance(previous, list):
        by_id = {
            c["id"]: c for c in current if isinstance(c, dict) and isinstance(c.get("id"), str)
        }
        old = []
        for entry in previous:
            entry_id = entry.get("id") if isinstance(entry, dict) else None
            old.append(_overlay(by_id.get(entry_id) if isinstance(entry_id, str) else None, entry))
        return old
    return previous


def _plan_changed(sub_obj: JsonObj, previous: JsonObj) -> bool:
    changed = {key: previous[key] for key in PLAN_KEYS if key in previous}
    if not changed:
        return False
    before = _overlay(sub_obj, changed)
    return _signature(before) != _signature(sub_obj)


def _end_scheduled(sub_obj: JsonObj, previous: JsonObj) -> bool:
    """`cancel_at_period_end` became true, or `cancel_at` became set."""
    where = "previous_attributes"
    if (
        "cancel_at_period_end" in previous
        and opt_bool(previous, "cancel_at_period_end", where) is not True
        and opt_bool(sub_obj, "cancel_at_period_end", WHERE) is True
    ):
        return True
    return (
        "cancel_at" in previous
        and opt_int(previous, "cancel_at", where) is None
        and opt_int(sub_obj, "cancel_at", WHERE) is not None
    )


def _end_unscheduled(sub_obj: JsonObj, previous: JsonObj) -> bool:
    """A scheduled end undone before it took effect: `cancel_at_period_end` back to
    false or `cancel_at` cleared, and no end scheduled any more."""
    where = "previous_attributes"
    if opt_str(sub_obj, "status", WHERE) == "canceled":
        return False
    if opt_bool(sub_obj, "cancel_at_period_end", WHERE) is True or (
            opt_int(sub_obj, "cancel_at", WHERE) is not None):
        return False
    return opt_bool(previous, "cancel_at_period_end", where) is True or (
        opt_int(previous, "cancel_at", where) is not None)


def _period_end(sub_obj: JsonObj) -> int | None:
    """`current_period_end`, which the newest API versions keep on each item."""
    end = opt_int(sub_obj, "current_period_end", WHERE)
    if end is not None:
        return end
    items = list_items(sub_obj, "items", WHERE) or []
    ends = [opt_int(item, "current_period_end", f"{WHERE}.items") for item in items]
    known = [e for e in ends if e is not None]
    return max(known) if known else None


def _first(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)


def _end_date(sub_obj: JsonObj, *, ending: bool = False) -> int | None:
    """When it ended or is scheduled to end: `ended_at`, `cancel_at`, or the period end
    when it ends with the period (`cancel_at_period_end`, or `ending` for a cancellation
    that names no date)."""
    at_period_end = ending or opt_bool(sub_obj, "cancel_at_period_end", WHERE) is True
    return _first(
        opt_int(sub_obj, "ended_at", WHERE),
        opt_int(sub_obj, "cancel_at", WHERE),
        _period_end(sub_obj) if at_period_end else None,
    )


def _key(sub_obj: JsonObj) -> str:
    """The subscription's id; pre-2014 subscriptions had none, but a customer had at
    most one, so the customer names it."""
    sub_id = opt_str(sub_obj, "id", WHERE)
    if sub_id:
        return sub_id
    customer = ref_id(sub_obj, "customer", WHERE)
    if customer:
        return f"{customer}:subscription"
    raise ClassifyError("subscription has neither an id nor a customer")


def _occurrence(
    ev: StripeEvent, fact_id: str, filter_id: FilterId, occurred_at: int, *, ending: bool = False
) -> Occurrence:
    sub_obj = ev.obj
    lines = _lines(sub_obj)
    amount = None
    if lines and all(line.unit_amount is not None for line in lines):
        amount = sum((line.unit_amount or 0) * line.quantity for line in lines)
    code = next((line.currency for line in lines if line.currency), None)
    return Occurrence(
        fact_id=fact_id,
        filter=filter_id,
        occurred_at=occurred_at,
        source_event_id=ev.id,
        source_event_type=ev.type,
        customer_id=ref_id(sub_obj, "customer", WHERE),
        amount=amount,
        currency=code or currency(sub_obj, WHERE, required=False),
        plans=tuple(dict.fromkeys(i for line in lines for i in line.ids)),
        start_date=_first(opt_int(sub_obj, "start_date", WHERE), opt_int(sub_obj, "start", WHERE)),
        end_date=_end_date(sub_obj, ending=ending),
        email_candidates=emails((sub(sub_obj, "customer"), "email")),
    )


def _cancelled(ev: StripeEvent) -> Occurrence:
    """The scheduling update and the final deletion share one id, and one time:
    `canceled_at` is set when the end is scheduled and kept on deletion."""
    canceled_at = opt_int(ev.obj, "canceled_at", WHERE)
    return _occurrence(
        ev,
        f"{_key(ev.obj)}:cancelled",
        "subscription_cancelled",
        ev.created if canceled_at is None else canceled_at,
        ending=True,
    )


def subscription_created(ev: StripeEvent) -> list[Occurrence]:
    key = _key(ev.obj)
    return [_occurrence(ev, f"{key}:created", "subscription_created", ev.created)]


def subscription_deleted(ev: StripeEvent) -> list[Occurrence]:
    return [_cancelled(ev)]


def subscription_updated(ev: StripeEvent) -> list[Occurrence]:
    """A change of plan, price, items or quantity, and/or a scheduled end.

    Un-scheduling an end (`cancel_at_period_end` back to false, `cancel_at` cleared)
    retracts the cancellation fact (`Occurrence.retracts`, dated by this event).
    """
    found = []
    if _plan_changed(ev.obj, ev.previous):
        key = _key(ev.obj)
        found.append(_occurrence(ev, f"{key}:changed:{ev.id}", "subscription_changed", ev.created))
    if _end_scheduled(ev.obj, ev.previous):
        found.append(_cancelled(ev))
    elif _end_unscheduled(ev.obj, ev.previous):
        found.append(Occurrence(
            fact_id=f"{_key(ev.obj)}:cancelled",
            filter="subscription_cancelled",
            occurred_at=ev.created,
            source_event_id=ev.id,
            source_event_type=ev.type,
            customer_id=ref_id(ev.obj, "customer", WHERE),
            retracts=True,
        ))
    return found
