"""The same story gives the same membership at every Stripe API version (issue 14).

Hypothesis draws stories (customers with an email; payments that succeed and fail;
partial and full refunds, some of which later fail; subscriptions created, changed,
renewed, cancellation scheduled, unscheduled, cancelled; guest checkouts), renders each
one at every version family of `tests.stripe_story` and in mixed versions (an upgrade
mid-month, and any mix), and feeds every rendering into the pipeline on 8 partitions over
2 workers (`tests.partitioned_pipeline`). The membership output (each contact's
sequence of joins and leaves per segment, and the final members) must be the same for
every rendering, and equal to what the story itself says.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.partitioned_pipeline import TwoWorkers
from tests.stripe_story import FAMILIES, VERSIONS, Charge, Refund, Story, Sub

pytestmark = pytest.mark.unit
PEOPLE = 3
PRICES = (("price_basic", 1_500), ("price_pro", 4_900))
RULES: list[dict[str, Any]] = [
    {"id": "paid", "filter": "charge_succeeded", "conditions": []},
    {"id": "paid-twice", "filter": "charge_succeeded",
     "conditions": [{"field": "occurrences", "op": "gte", "value": 2}]},
    {"id": "failed", "filter": "charge_failed", "conditions": []},
    {"id": "refunded", "filter": "refunded", "conditions": []},
    {"id": "refunded-50", "filter": "refunded",
     "conditions": [{"field": "refund_amount", "op": "gte", "value": "50"}]},
    {"id": "refunded-twice", "filter": "refunded",
     "conditions": [{"field": "occurrences", "op": "gte", "value": 2}]},
    {"id": "subscribed", "filter": "subscription_created", "conditions": []},
    {"id": "changed", "filter": "subscription_changed", "conditions": []},
    {"id": "cancelled", "filter": "subscription_cancelled", "conditions": []},
]

Step = tuple[str, int, int, int]
steps = st.lists(st.tuples(
    st.sampled_from(["pay", "fail", "guest", "refund", "refund", "refund_fails",
                     "subscribe", "change", "renew", "schedule", "unschedule", "cancel"]),
    st.integers(0, 9), st.integers(0, 9), st.integers(1, 3)), min_size=1, max_size=14)


@dataclass
class Model:
    """What the story says each contact did (the oracle)."""

    paid: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failed: set[str] = field(default_factory=set)
    subscribed: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    charges: list[Charge] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    subs: list[Sub] = field(default_factory=list)

    def members(self, story: Story) -> set[tuple[str, str]]:
        email = self.email_of(story)
        out = {("paid", e) for e, n in self.paid.items() if n}
        out |= {("paid-twice", e) for e, n in self.paid.items() if n >= 2}
        out |= {("failed", e) for e in self.failed}
        good: dict[str, list[int]] = defaultdict(list)
        for r in self.refunds:
            if r.status == "succeeded":
                good[email(r.charge)].append(r.amount)
        out |= {("refunded", e) for e in good}
        out |= {("refunded-50", e) for e, amounts in good.items() if max(amounts) >= 5_000}
        out |= {("refunded-twice", e) for e, amounts in good.items() if len(amounts) >= 2}
        out |= {("subscribed", e) for e in self.subscribed}
        out |= {("changed", e) for e in self.changed}
        out |= {("cancelled", story.emails[s.customer]) for s in self.subs
                if s.status == "canceled" or s.canceled_at is not None}
        return out

    @staticmethod
    def email_of(story: Story) -> Any:
        def email(c: Charge) -> str:
            return c.email or story.emails[c.customer or ""]
        return email


def play(story: Story, plan: list[Step], versions: list[str]) -> Model:
    """Run `plan` on `story`, step i rendered at `versions[i]`."""
    m = Model()
    story.version = versions[0]
    people = [story.customer(f"person{i}@example.com") for i in range(PEOPLE)]
    email = Model.email_of(story)
    for (op, a, b, c), version in zip(plan, versions, strict=True):
        story.version = version
        amount = (a + 1) * 2_000 + b * 100
        if op in ("pay", "fail"):
            who = people[a % PEOPLE]
            charge = (story.pay if op == "pay" else story.fail)(who, amount)
            if op == "pay":
                m.charges.append(charge)
                m.paid[story.emails[who]] += 1
            else:
                m.failed.add(story.emails[who])
        elif op == "guest":
            charge = story.guest_checkout(f"guest{a % 2}@example.com", amount)
            m.charges.append(charge)
            m.paid[charge.email or ""] += 1
        elif op == "refund" and m.charges:
            charge = m.charges[a % len(m.charges)]
            left = charge.amount - charge.amount_refunded
            refund = left if c == 3 else min(left, (b + 1) * 1_000)
            if refund > 0:
                m.refunds.append(story.refund(charge, refund))
        elif op == "refund_fails" and m.refunds:
            r = m.refunds[a % len(m.refunds)]
            if r.status == "succeeded":
                story.refund_fails(r, "failed" if c < 3 else "canceled")
        elif op == "subscribe":
            who = people[a % PEOPLE]
            price, unit = PRICES[b % 2]
            m.subs.append(story.subscribe(who, price, unit, c))
            m.paid[story.emails[who]] += 1
            m.charges.append(story.invoice_charges[-1])
            m.subscribed.add(story.emails[who])
        elif m.subs:
            sub = m.subs[a % len(m.subs)]
            if sub.status == "canceled":
                continue
            if op == "change":
                price, unit = PRICES[b % 2]
                if (price, c) != (sub.price, sub.quantity):
                    story.change_plan(sub, price, unit, c)
                    m.changed.add(story.emails[sub.customer])
            elif op == "renew":
                story.renew(sub)
                m.paid[story.emails[sub.customer]] += 1
                m.charges.append(story.invoice_charges[-1])
            elif op == "schedule" and sub.canceled_at is None:
                story.schedule_cancel(sub, by_date=c == 3)
            elif op == "unschedule" and sub.canceled_at is not None:
                story.unschedule(sub)
            elif op == "cancel":
                story.cancel(sub)
    assert all(email(ch) for ch in m.charges)
    return m


Output = tuple[dict[tuple[str, str], list[str]], set[tuple[str, str]]]


def run(plan: list[Step], versions: list[str], *, extra_refund_events: bool) -> tuple[
        Output, set[tuple[str, str]], list[str]]:
    with TwoWorkers() as h:
        story = Story(h.clock.now - 3 * 86400, refund_events_before_acacia=extra_refund_events)
        model = play(story, plan, versions)
        for rule in RULES:
            h.rule(rule)
        for event in story.events:
            h.event(event)
        sequences: dict[tuple[str, str], list[str]] = defaultdict(list)
        for change in h.changes():
            sequences[(change.segment_id, change.email)].append(change.change)
        dlq = [str(v) for v in h.dead_letters()]
        return (dict(sequences), h.members()), model.members(story), dlq


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps, mixed=st.lists(st.sampled_from(FAMILIES), min_size=14, max_size=14),
       extra_refund_events=st.booleans())
def test_the_membership_output_is_the_same_at_every_version(
        plan: list[Step], mixed: list[str], extra_refund_events: bool) -> None:
    n = len(plan)
    upgrade = sorted(mixed[:n], key=lambda v: FAMILIES.index(v))
    renderings = {f: [f] * n for f in FAMILIES}
    renderings["mixed"] = mixed[:n]
    renderings["upgrade"] = upgrade
    outputs = {name: run(plan, versions, extra_refund_events=extra_refund_events)
               for name, versions in renderings.items()}
    base, expected, _ = outputs[VERSIONS[0]]
    for name, (output, _, dlq) in outputs.items():
        assert dlq == [], name
        assert output[1] == expected, name
        assert output == base, name
