"""The demo's sample activity is valid Stripe input that reaches every demo rule, and its
live view renders what the processes report."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from rules import parse_rule
from segments.demo.feed import DAY, DEMO_RULES, RULE_EDIT, DemoActivity
from segments.demo.view import Snapshot, render_line, render_screen
from stream.classify import classify

pytestmark = pytest.mark.unit


def test_rules_parse_and_cover_every_filter_and_condition() -> None:
    rules = [parse_rule({**doc, "account_id": "demo"}) for doc in (*DEMO_RULES, RULE_EDIT)]
    assert {r.filter for r in rules} == {
        "charge_failed", "refunded", "charge_succeeded", "subscription_created",
        "subscription_changed", "subscription_cancelled"}
    fields = {c["field"] for doc in DEMO_RULES for c in doc["conditions"]}
    assert fields == {"amount", "currency", "date", "start_date", "refund_amount", "plan"}
    assert RULE_EDIT["id"] == DEMO_RULES[1]["id"]
    assert DEMO_RULES[1] != RULE_EDIT


def test_every_event_classifies_is_in_the_past_and_feeds_every_filter() -> None:
    now = int(time.time())
    feed = DemoActivity(7, now)
    events = [e for n in range(150)
              for e in feed.story(n, start=now - feed.rand.randint(8, 29) * DAY, spread=DAY)]
    events += feed.expiring_failure(10_000, 5)
    filters: Counter[str] = Counter()
    for event in events:
        assert event["created"] <= now
        filters.update(o.filter for o in classify(event))
    assert set(filters) == {r["filter"] for r in DEMO_RULES}
    types = Counter(e["type"] for e in events)
    # Siblings that the stream must collapse, and a renewal that is not a change.
    assert types["payment_intent.succeeded"]
    assert types["refund.created"]
    assert types["customer.subscription.updated"] > 0
    assert len({e["id"] for e in events}) == len(events)


def test_expiring_failure_leaves_its_window_on_time() -> None:
    now = int(time.time())
    created, failed = DemoActivity(1, now).expiring_failure(1, 12)
    assert created["type"] == "customer.created"
    assert failed["type"] == "charge.failed"
    assert failed["created"] == now - 30 * DAY + 12


def test_view_renders_counts_changes_and_rates() -> None:
    snap = Snapshot(elapsed=12.0, segments=[("big-refunds", "Refunded over 40", 3, 2),
                                            ("churned", "Cancelled", 0, 1)],
                    recent=[{"type": "change", "change": "left", "segment_id": "churned",
                             "email": "ann@example.com", "cause": "time",
                             "at": "2026-11-26T23:00:00Z"}],
                    webhooks=120, causes={"fact": 10, "time": 1}, joined=10, left=1, lag=0,
                    backfill={"state": "done", "events": 42}, rates={"webhooks": 30.0})
    screen = render_screen(snap, header=["demo"], width=120)
    assert "big-refunds" in screen
    assert "Refunded over 40 (v2)" in screen
    assert "- left    churned" in screen
    assert "ann@example.com" in screen
    assert "done: 42 events" in screen
    assert "30/s" in screen
    assert all(len(line) <= 120 for line in screen.splitlines())
    assert snap.filled() == 1
    line = render_line(snap)
    assert "big-refunds=3" in line
    assert "backfill done 42" in line
