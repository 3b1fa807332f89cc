"""Mangled real events: `classify` returns well-formed occurrences or raises
`ClassifyError`, never anything else, so the stream dead-letters instead of crashing.

Seeds are every event fixture plus builder variants covering each API shape; each
example removes keys, nulls them, or retypes them (str, float, int, bool, list, dict)
at any depth, biased towards the keys classification reads.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.vocabulary import FILTERS
from stream.classify import ClassifyError, Occurrence, classify, customer_email_update
from stream.facts import normalize_email
from tests.stripe_events import (
    CLI,
    LEGACY,
    charge,
    customer,
    event,
    fixture_files,
    invoice,
    item,
    load,
    payment_intent,
    refund,
    refund_events,
    subscription,
)

pytestmark = pytest.mark.unit

Path_ = tuple[Any, ...]
T = TypeVar("T")

#: Keys classification reads: mutations hit these half of the time.
READ_KEYS = frozenset(
    {
        "type",
        "id",
        "created",
        "data",
        "object",
        "previous_attributes",
        "api_version",
        "amount",
        "amount_captured",
        "amount_refunded",
        "amount_received",
        "amount_paid",
        "amount_due",
        "currency",
        "customer",
        "captured",
        "refunded",
        "refunds",
        "charge",
        "latest_charge",
        "charges",
        "last_payment_error",
        "code",
        "status",
        "email",
        "billing_details",
        "receipt_email",
        "customer_email",
        "items",
        "plan",
        "price",
        "quantity",
        "unit_amount",
        "product",
        "start_date",
        "start",
        "ended_at",
        "cancel_at",
        "cancel_at_period_end",
        "canceled_at",
        "current_period_end",
        "payment_method",
    }
)

VALUES = st.one_of(
    st.none(),
    st.text(max_size=4),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.lists(st.one_of(st.integers(), st.text(max_size=2), st.none()), max_size=2),
    st.dictionaries(st.sampled_from(sorted(READ_KEYS)), st.integers() | st.none(), max_size=2),
)


def _seeds() -> list[dict[str, Any]]:
    seeds = [
        load(name)
        for name in fixture_files()
        if name.startswith((CLI, LEGACY)) or name == "object.event.json"
    ]
    for name, types in {
        "charge": ("charge.succeeded", "charge.failed", "charge.refunded"),
        "refund": ("refund.created",),
        "payment_intent": ("payment_intent.succeeded", "payment_intent.payment_failed"),
        "invoice": ("invoice.paid", "invoice.payment_failed"),
        "subscription": ("customer.subscription.created", "customer.subscription.deleted"),
        "customer": ("customer.updated",),
    }.items():
        seeds += [event(t, load(f"object.{name}.json"), api_version=None) for t in types]
    ch = charge(billing_email="a@example.com", customer=customer())
    failed = charge(failed=True)
    for version in ("2020-08-27", "2023-10-16", "2024-10-28.acacia"):
        seeds += [
            e
            for pair in refund_events(copy.deepcopy(ch), [500, 700], api_version=version)
            for e in pair
        ]
    seeds += [
        event("payment_intent.succeeded", payment_intent(ch, shape="2023-10-16", latest_charge=ch)),
        event("payment_intent.payment_failed", payment_intent(failed, shape="2023-10-16")),
        event("invoice.paid", invoice(ch, charge=ch, customer_email="i@example.com")),
        event("refund.created", refund(ch, 10, charge=ch), api_version="2025-03-31.basil"),
        event("customer.created", customer()),
    ]
    newest = subscription([item(legacy_plan=False, period_end=1_800_000_000)], shape="2025-03-31")
    old_items = copy.deepcopy(newest["items"])
    old_items["data"][0]["quantity"] = 5
    seeds += [
        event("customer.subscription.created", newest, api_version="2025-03-31.basil"),
        event(
            "customer.subscription.updated",
            dict(newest, cancel_at_period_end=True),
            previous={"items": old_items, "cancel_at_period_end": False, "cancel_at": None},
        ),
    ]
    return seeds


SEEDS = _seeds()


def _paths(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*prefix, index)
            yield from _paths(value, (*prefix, index))


def _mutate(doc: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    for _ in range(data.draw(st.integers(min_value=1, max_value=4), label="mutations")):
        paths = list(_paths(doc))
        if not paths:
            break
        # Mostly keys inside data.object that classification reads; the envelope keys
        # come first in every dict, and Hypothesis favours early choices, so without
        # this most examples would only break the event's id or type.
        inner = [p for p in paths if len(p) > 2 and p[0] == "data" and p[-1] in READ_KEYS]
        use_inner = data.draw(st.integers(0, 3), label="pool") > 0
        pool = inner if inner and use_inner else paths
        path = data.draw(st.randoms(use_true_random=False), label="pick").choice(pool)
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if data.draw(st.booleans(), label="delete") and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(VALUES, label="value")
    return doc


def _well_formed(occurrence: Occurrence) -> None:
    assert isinstance(occurrence, Occurrence)
    assert isinstance(occurrence.fact_id, str)
    assert occurrence.fact_id
    assert occurrence.filter in FILTERS
    for name in ("occurred_at",):
        value = getattr(occurrence, name)
        assert type(value) is int
    for name in ("amount", "refund_amount", "start_date", "end_date"):
        value = getattr(occurrence, name)
        assert value is None or type(value) is int, (name, value)
    assert occurrence.currency is None or (
        isinstance(occurrence.currency, str) and occurrence.currency == occurrence.currency.lower()
    )
    assert all(isinstance(p, str) and p for p in occurrence.plans)
    assert all(normalize_email(e) == e for e in occurrence.email_candidates)
    assert isinstance(occurrence.source_event_id, str)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(range(len(SEEDS))), data=st.data())
def test_mangled_events_classify_or_raise_classify_error(seed: int, data: st.DataObject) -> None:
    doc = _mutate(copy.deepcopy(SEEDS[seed]), data)
    occurrences, reason = _attempt(classify, doc)
    for occurrence in occurrences or []:
        _well_formed(occurrence)
    assert occurrences is not None or reason  # a dead-letter reason is never empty
    update, reason = _attempt(customer_email_update, doc)
    if update is not None:
        assert isinstance(update[0], str)
        assert update[1] is None or normalize_email(update[1]) == update[1]


def _attempt(function: Callable[[Any], T], doc: Any) -> tuple[T | None, str | None]:
    """The result, or the ClassifyError's message; any other exception fails the test."""
    try:
        return function(doc), None
    except ClassifyError as error:
        return None, str(error)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(sorted(READ_KEYS)), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(doc=JSON, event_type=st.sampled_from(sorted({s.get("type", "") for s in SEEDS})))
def test_arbitrary_json_classifies_or_raises_classify_error(doc: Any, event_type: str) -> None:
    for candidate in (doc, {"type": event_type, "id": "evt_1", "created": 1, "data": doc}):
        occurrences, _ = _attempt(classify, candidate)
        for occurrence in occurrences or []:
            _well_formed(occurrence)
        _attempt(customer_email_update, candidate)


def test_seeds_cover_every_needed_shape() -> None:
    kinds = {s["type"] for s in SEEDS}
    assert len(SEEDS) > 40
    assert {"charge.refunded", "refund.created", "customer.subscription.updated"} <= kinds
