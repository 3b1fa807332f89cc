"""Only input errors are bad input (issue 14), without a broker.

A record that breaks its topic's contract is dead-lettered with the reason and changes
no state; a bug of ours (any other exception) stops the worker instead, so under
exactly-once the batch is processed again once the bug is fixed. A rule that fails
validation on `segments.rules` is dead-lettered once, counted, and the version in force
stays in force. Events dated more than a day ahead of the clock are dead-lettered.
"""

from __future__ import annotations

import orjson
import pytest

import stream.pipeline
from stream.changes import rule_key
from stream.facts import Fact
from stream.membership import DAY, ContactState
from stream.outbox import Outbox
from tests import stripe_events as se
from tests.unit.stream.test_pipeline_logic import Harness, changes, failed, lapsed, sent, vip

pytestmark = pytest.mark.unit


def dead_letters(out: Outbox) -> list[str]:
    """The reason header of each dead letter `out` carries."""
    return [dict(headers)["reason"].decode() for topic, _, _, _, headers in out.messages
            if topic == "t.stripe.events.dlq"]


def contact_of(h: Harness, fact: Fact) -> ContactState:
    state: ContactState = h.pipeline.contacts.view(0)[fact.key().decode()]
    return ContactState.from_bytes(state.to_bytes())  # a copy, to compare with later


def test_a_bug_in_membership_stops_the_worker_instead_of_dead_lettering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness()
    h.rule(lapsed(), "acme", "lapsed")

    def broken(*args: object, **kwargs: object) -> list[object]:
        raise KeyError("a bug of ours")

    monkeypatch.setattr(stream.pipeline, "on_fact", broken)
    with pytest.raises(KeyError, match="a bug of ours"):
        h.fact(failed("ch_1:failed", h.clock.now))
    assert h.metric("segments_dead_letters_total") == 0


def test_a_bug_in_a_rule_change_stops_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness()
    h.fact(failed("ch_1:failed", h.clock.now))

    def broken(*args: object, **kwargs: object) -> list[object]:
        raise TypeError("a bug of ours")

    monkeypatch.setattr(stream.pipeline, "on_rule", broken)
    with pytest.raises(TypeError, match="a bug of ours"):
        h.rule(lapsed(), "acme", "lapsed")


def test_a_malformed_fact_is_dead_lettered_before_any_state_changes() -> None:
    """The wrongly typed amount used to fail inside evaluation, after `prune` and `hold`
    had changed the contact in memory (its old fact forgotten, the bad one held)."""
    h = Harness()
    h.rule(vip(filter="charge_failed"), "acme", "vip")
    old = failed("ch_old:failed", h.clock.now)
    h.fact(old)
    h.clock.advance(40 * DAY)  # the old fact is past the horizon, and no rule needs it
    before = contact_of(h, old)
    bad = orjson.loads(failed("ch_bad:failed", h.clock.now).to_bytes())
    bad["amount"] = "7000"
    out = h.feed("stripe.facts", old.key(), orjson.dumps(bad))
    [reason] = dead_letters(out)
    assert reason.startswith("FactDecodeError")
    assert "amount" in reason
    assert contact_of(h, old) == before
    assert "ch_old:failed" in before.facts["charge_failed"]
    assert sent(out, "segments.membership") == []


@pytest.mark.parametrize(("field", "value"), [
    ("occurred_at", "2026-01-01"), ("occurred_at", True), ("email", ""), ("filter", "nope"),
    ("plans", [1]), ("currency", 5), ("account_id", "a:b"), ("retracted", "yes"),
])
def test_every_wrongly_typed_fact_field_is_an_input_error(field: str, value: object) -> None:
    h = Harness()
    h.rule(lapsed(), "acme", "lapsed")
    doc = {**orjson.loads(failed("ch_1:failed", h.clock.now).to_bytes()), field: value}
    out = h.feed("stripe.facts", b"k", orjson.dumps(doc))
    assert len(dead_letters(out)) == 1
    assert h.pipeline.contacts.view(0) == {}


def test_an_invalid_rule_on_the_topic_is_dead_lettered_and_the_version_in_force_stays(
) -> None:
    h = Harness()
    h.rule(vip(), "acme", "vip")
    paid = se.charge(amount=10_000, billing_email="ann@example.com", created=h.clock.now)
    assert changes(h.facts(h.event(se.event("charge.succeeded", paid)))) == [
        ("vip", "ann@example.com", "joined", "fact")]

    broken = vip(conditions=[{"field": "amount", "op": "gt", "value": "lots"}], version=2)
    out = h.feed("segments.rules", rule_key("acme", "vip"), orjson.dumps(broken))
    [reason] = dead_letters(out)
    assert reason.startswith("InvalidRuleError: invalid rule:")
    assert "conditions" in reason
    assert sent(out, "segments.control") == []  # never reaches a partition
    assert h.metric("segments_invalid_rules_total") == 1
    assert h.pipeline.partitions[0].rules.get("acme", "vip").version == 1  # type: ignore[union-attr]

    # The version in force still decides: a new small charge does not join.
    small = se.charge(amount=1_000, billing_email="bob@example.com", created=h.clock.now)
    assert changes(h.facts(h.event(se.event("charge.succeeded", small)))) == []

    # A rule whose document names another segment than its key is refused alike.
    other = h.feed("segments.rules", rule_key("acme", "vip"), orjson.dumps(vip(id="gold")))
    assert len(dead_letters(other)) == 1
    assert h.metric("segments_invalid_rules_total") == 2


def test_an_invalid_rule_on_the_control_topic_is_dead_lettered() -> None:
    """A control message written by an earlier version, which fanned out anything."""
    h = Harness()
    h.rule(vip(), "acme", "vip")
    message = orjson.dumps({"k": "rule", "key": rule_key("acme", "vip").decode(),
                            "doc": vip(filter="nope", version=2)})
    out = h.feed("segments.control", rule_key("acme", "vip"), message)
    assert len(dead_letters(out)) == 1
    assert h.pipeline.partitions[0].rules.get("acme", "vip").version == 1  # type: ignore[union-attr]


def test_events_dated_more_than_a_day_ahead_are_dead_lettered_with_the_reason() -> None:
    h = Harness()
    h.rule(vip(), "acme", "vip")
    ahead = se.charge(amount=10_000, billing_email="ann@example.com",
                      created=h.clock.now + DAY + 60)
    out = h.event(se.event("charge.succeeded", ahead, created=h.clock.now + DAY + 60))
    [reason] = dead_letters(out)
    assert reason.startswith("FutureEventError")
    assert "more than a day" in reason
    assert sent(out, "stripe.facts") == []
    assert h.pipeline.seen.view(0) == {}

    skewed = se.charge(amount=10_000, billing_email="ann@example.com",
                       created=h.clock.now + 600)  # clock skew: fine
    out = h.event(se.event("charge.succeeded", skewed, created=h.clock.now + 600))
    assert dead_letters(out) == []
    assert len(sent(out, "stripe.facts")) == 1

    fact = failed("ch_x:failed", h.clock.now + 2 * DAY)
    out = h.fact(fact)
    assert [r.split(":")[0] for r in dead_letters(out)] == ["FutureEventError"]
    assert fact.key().decode() not in h.pipeline.contacts.view(0)
