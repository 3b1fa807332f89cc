"""A contact's state read from its changelog decodes its facts only when they are used,
and is the same state either way."""

from __future__ import annotations

import pytest

from stream.facts import Fact
from stream.membership import ContactState

pytestmark = pytest.mark.unit


def held() -> ContactState:
    state = ContactState("acme", "ann@example.com", 1, members={"big": 2},
                         due={"recent": 1_700_000_000}, since={"big": ["2026-11-01T00:00:00Z",
                                                                         "ch_1:succeeded"]})
    for n, filter_id in enumerate(("charge_succeeded", "charge_failed", "charge_succeeded")):
        fact = Fact(f"ch_{n}:x", filter_id, "acme", "conn1", "ann@example.com",  # type: ignore[arg-type]
                    1_699_000_000 + n, amount=1000 + n, currency="usd",
                    source_event_id=f"evt_{n}", source_event_type="charge.succeeded")
        state.facts.setdefault(fact.filter, {})[fact.fact_id] = fact
    return state


def test_a_state_read_back_equals_the_one_written_and_writes_the_same_bytes() -> None:
    state = held()
    read = ContactState.from_bytes(state.to_bytes())
    assert read.raw is not None, "facts are not decoded on reading"
    assert read.next_due() == 1_700_000_000
    assert not read.empty()
    assert read.to_bytes() == state.to_bytes()
    assert read.raw is not None, "writing it back decoded nothing"
    assert read == state
    assert read.raw is None, "comparing needs the facts"
    assert read.facts_for("charge_succeeded") == state.facts_for("charge_succeeded")


def test_a_change_that_does_not_touch_the_facts_keeps_them() -> None:
    """E.g. a rule deleted: the member leaves without its facts being evaluated."""
    read = ContactState.from_bytes(held().to_bytes())
    del read.members["big"]
    read.since.clear()
    again = ContactState.from_bytes(read.to_bytes())
    assert again.members == {}
    assert again.since == {}
    assert again.facts == held().facts


def test_a_state_without_facts_is_empty_once_nothing_is_due() -> None:
    state = ContactState.from_bytes(ContactState("acme", "bob@example.com", 0).to_bytes())
    assert state.raw is None
    assert state.empty()


def test_a_written_state_keeps_its_facts_encoded_until_used() -> None:
    """`to_bytes_kept` (the changelog codec): after the write the facts are held as the
    bytes written, not as objects, and come back equal, with nothing lost."""
    state, copy = held(), held()
    written = state.to_bytes_kept()
    assert written == copy.to_bytes()
    assert state.raw == written
    assert state.decoded == {}
    assert state.to_bytes() == written, "written again as it was, without decoding"
    assert state.raw is not None
    assert state.facts_for("charge_failed") == copy.facts_for("charge_failed")
    assert state.raw is None
    assert state == copy
    fact = Fact("ch_9:x", "charge_succeeded", "acme", "conn1", "ann@example.com",
                1_699_000_100, amount=5, currency="usd")
    state.facts["charge_succeeded"][fact.fact_id] = fact
    assert len(ContactState.from_bytes(state.to_bytes_kept()).facts["charge_succeeded"]) == 3
    assert len(state.facts["charge_succeeded"]) == 3


def test_a_state_without_facts_stays_as_it_is() -> None:
    state = ContactState("acme", "bob@example.com", 0, members={"big": 1})
    state.to_bytes_kept()
    assert state.raw is None
    assert not state.empty()
