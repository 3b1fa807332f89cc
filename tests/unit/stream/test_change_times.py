"""`at` in SPEC terms, `observed_at`, and the rule version on `segments.members`
(issue 14), without a broker.

`at` was the worker's clock for `fact` and `rule` changes; now it is the fact's event
time (or when the rule's version came into force, if later), the due instant for `time`,
and when the rule changed for `rule`. `observed_at` is the worker's clock. A rule edit
that keeps a member rewrites its members record under the new version.
"""

from __future__ import annotations

import orjson
import pytest

from stream.changes import MembershipChange, iso, member_key, rule_key
from stream.membership import DAY
from stream.outbox import Outbox
from tests import stripe_events as se
from tests.unit.stream.test_pipeline_logic import Harness, failed, lapsed, sent, vip

pytestmark = pytest.mark.unit


def published(out: Outbox) -> list[MembershipChange]:
    return [MembershipChange.from_bytes(v) for _, v in sent(out, "segments.membership")
            if v is not None]


def members(out: Outbox) -> list[dict[str, object] | None]:
    return [None if v is None else orjson.loads(v) for _, v in sent(out, "segments.members")]


def test_a_fact_change_is_dated_by_the_facts_event_time() -> None:
    h = Harness()
    h.rule(vip(), "acme", "vip")
    h.clock.advance(3600)
    paid_at = h.clock.now - 1800  # a webhook retried half an hour late
    paid = se.charge(amount=10_000, billing_email="ann@example.com", created=paid_at)
    out = h.facts(h.event(se.event("charge.succeeded", paid, created=paid_at)))
    [change] = published(out)
    assert (change.change, change.cause) == ("joined", "fact")
    assert change.at == iso(paid_at)
    assert change.observed_at == iso(h.clock.now)
    assert members(out)[0]["since"] == iso(paid_at)  # type: ignore[index]


def test_a_fact_older_than_the_rule_is_dated_when_the_rule_came_into_force() -> None:
    h = Harness()
    paid_at = h.clock.now - 3 * 3600  # the backfill brings it after the rule is made
    created = h.clock.now
    h.rule(vip(), "acme", "vip")
    h.clock.advance(60)
    paid = se.charge(amount=10_000, billing_email="ann@example.com", created=paid_at)
    [change] = published(h.facts(h.event(se.event("charge.succeeded", paid,
                                                     created=paid_at))))
    assert change.at == iso(created)
    assert change.observed_at == iso(created + 60)


def test_a_time_change_is_dated_at_its_due_instant() -> None:
    h = Harness()
    h.rule(lapsed(), "acme", "lapsed")
    failed_at = h.clock.now
    h.fact(failed("ch_1:failed", failed_at))
    h.clock.advance(30 * DAY + 5)  # the tick comes 5 s after the window moved
    [change] = published(h.tick())
    assert (change.cause, change.at) == ("time", iso(failed_at + 30 * DAY))
    assert change.observed_at == iso(h.clock.now)


def test_a_rule_change_is_dated_when_the_rule_changed_on_every_partition() -> None:
    h = Harness()
    paid = se.charge(amount=10_000, billing_email="ann@example.com", created=h.clock.now)
    h.facts(h.event(se.event("charge.succeeded", paid)))
    written = h.clock.now
    fanned = h.feed("segments.rules", rule_key("acme", "vip"), orjson.dumps(vip()))
    h.clock.advance(7)  # the partition applies it later than it was fanned out
    out = Outbox()
    for _, key, value, _, _ in fanned.messages:
        out.messages += h.feed("segments.control", key, value).messages
    [change] = published(out)
    assert (change.cause, change.at, change.observed_at) == (
        "rule", iso(written), iso(written + 7))


def test_a_rule_edit_that_keeps_a_member_restates_its_version_on_members() -> None:
    h = Harness()
    h.rule(vip(), "acme", "vip")
    paid = se.charge(amount=10_000, billing_email="ann@example.com", created=h.clock.now)
    joined = published(h.facts(h.event(se.event("charge.succeeded", paid))))[0]
    h.clock.advance(3600)
    edited = vip(conditions=[{"field": "amount", "op": "gt", "value": "60"}], version=2)
    out = h.rule(edited, "acme", "vip")
    assert published(out) == []  # nobody joined or left
    assert sent(out, "segments.members") == [(
        member_key("acme", "vip", "ann@example.com"),
        orjson.dumps({"v": 1, "account_id": "acme", "segment_id": "vip",
                      "email": "ann@example.com",
                      "since": joined.at, "fact_id": joined.fact_id, "rule_version": 2}))]
    # The same version again (a re-publish) restates nothing.
    assert sent(h.rule(edited, "acme", "vip"), "segments.members") == []
    # After a restart the state still knows `since`.
    out = Outbox()
    h.pipeline.state_writes(0, out)
    h.pipeline.revoked([0])  # recovered from the changelog records just written
    stores = {f"t.segments.state.{store.name}": store for store in h.pipeline.states}
    for store in stores.values():
        store.data[0] = {}
    for topic, key, value, _, _ in out.messages:
        if value is not None and key is not None:
            stores[topic].data[0][key.decode()] = stores[topic].codec.decode(value)
    h.pipeline.adopt([0])
    third = vip(conditions=[{"field": "amount", "op": "gt", "value": "70"}], version=3)
    [(_, value)] = sent(h.rule(third, "acme", "vip"), "segments.members")
    assert orjson.loads(value or b"")["since"] == joined.at
    assert orjson.loads(value or b"")["rule_version"] == 3
