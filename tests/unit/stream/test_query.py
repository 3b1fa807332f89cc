"""Interactive queries over one partition (`stream.query`): a preview counts exactly the
members the same rule gets when saved (`stream.membership.on_rule`), and an
explanation names each held fact's failed conditions."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules import parse_rule
from stream.facts import Fact
from stream.membership import DAY, ContactState, hold, on_rule
from stream.partition_state import PartitionState
from stream.query import Preview, explain, merge, preview

pytestmark = pytest.mark.unit

NOW = 1_800_000_000


def charge(i: int, email: str, age_days: int, amount: int, currency: str = "usd",
           account: str = "acme") -> Fact:
    return Fact(f"ch_{i}:failed", "charge_failed", account, "conn1", email,
                NOW - age_days * DAY, amount=amount, currency=currency,
                source_event_id=f"evt_{i}", source_event_type="charge.failed")


def rule_of(conditions: list[dict[str, Any]], account: str = "acme") -> Any:
    return parse_rule({"id": "seg", "account_id": account, "name": "seg",
                       "filter": "charge_failed", "conditions": conditions})


def partition(facts: list[Fact]) -> tuple[PartitionState, dict[str, ContactState]]:
    partition_state = PartitionState(0)
    contacts: dict[str, ContactState] = {}
    for f in facts:
        key = f.key().decode()
        contact = contacts.setdefault(key, ContactState(f.account_id, f.email, 0))
        hold(contact, f, [], NOW)
        partition_state.track(key, contact)
    return partition_state, contacts


facts_strategy = st.lists(
    st.builds(charge, st.integers(0, 50), st.sampled_from([f"c{i}@x.example" for i in
                                                          range(12)]),
              st.integers(0, 40), st.integers(0, 20_000), st.sampled_from(["usd", "eur"]),
              st.sampled_from(["acme", "globex"])),
    max_size=60)
conditions_strategy = st.lists(st.sampled_from([
    {"field": "amount", "op": "gt", "value": "50"},
    {"field": "currency", "op": "is", "value": "usd"},
    {"field": "date", "op": "within_last", "value": {"count": 10, "unit": "days"}},
    {"field": "date", "op": "more_than_ago", "value": {"count": 20, "unit": "days"}},
    {"field": "occurrences", "op": "gte", "value": 2},
]), max_size=3, unique_by=lambda c: (c["field"], c["op"]))


@settings(max_examples=200, deadline=None)
@given(facts=facts_strategy, conditions=conditions_strategy)
def test_preview_counts_what_saving_the_rule_produces(facts: list[Fact],
                                                      conditions: list[dict[str, Any]]) -> None:
    partition_state, contacts = partition(facts)
    rule = rule_of(conditions)
    got = preview(partition_state, contacts, rule, NOW, sample_size=5)
    joined = sorted(change.email for contact in contacts.values()
                    for change in on_rule(contact, None, rule, NOW))
    assert got.count == len(joined)
    assert got.sample == joined[:5]


def test_merge_adds_counts_and_keeps_the_first_emails() -> None:
    merged = merge([Preview(3, ["b@x", "d@x"]), Preview(0, []), Preview(2, ["a@x", "c@x"])],
                   sample_size=3)
    assert merged == Preview(5, ["a@x", "b@x", "c@x"])


def test_explain_a_member_and_a_non_member() -> None:
    rule = rule_of([{"field": "amount", "op": "gt", "value": "50"},
                    {"field": "currency", "op": "is", "value": "usd"},
                    {"field": "date", "op": "within_last", "value": {"count": 7, "unit": "days"}}])
    _, contacts = partition([charge(1, "ann@x.example", 2, 9_000),
                             charge(2, "ann@x.example", 1, 100, "eur"),
                             charge(3, "bob@x.example", 9, 100, "eur")])
    ann = explain(contacts["acme\x1fann@x.example"], rule, NOW)
    assert ann["member"] is True
    assert ann["next_change_at"] == "2027-01-20T08:00:00Z"  # ch_1's window ends
    assert [(f["fact_id"], f["qualifies"], f["failed_conditions"]) for f in ann["facts"]] == [
        ("ch_2:failed", False, [0, 1]), ("ch_1:failed", True, [])]
    assert ann["facts"][1]["stripe_event_ids"] == ["evt_1"]
    assert ann["facts"][1]["occurred_at"] == "2027-01-13T08:00:00Z"
    assert "refund_amount" not in ann["facts"][1]
    bob = explain(contacts["acme\x1fbob@x.example"], rule, NOW)
    assert bob["member"] is False
    assert bob["next_change_at"] is None
    assert bob["facts"][0]["failed_conditions"] == [0, 1, 2]
    assert explain(None, rule, NOW) == {"member": False, "facts": [], "next_change_at": None}
