"""RuleIndex: lookups by (account, filter), replacement by id, account isolation."""

from __future__ import annotations

from typing import Any

import pytest

from rules import Rule, RuleIndex, parse_rule

pytestmark = pytest.mark.unit


def rule(account: str, rule_id: str, filter: str = "refunded", **extra: Any) -> Rule:
    return parse_rule(
        {
            "id": rule_id,
            "account_id": account,
            "name": f"{account}/{rule_id}",
            "filter": filter,
            "conditions": [],
            **extra,
        }
    )


def test_same_rule_id_in_two_accounts_never_collides() -> None:
    index = RuleIndex()
    acme, globex = rule("acme", "vip"), rule("globex", "vip")
    index.add(acme)
    index.add(globex)
    assert len(index) == 2
    assert index.get("acme", "vip") is acme
    assert index.get("globex", "vip") is globex
    assert index.for_fact("acme", "refunded") == (acme,)
    assert index.for_fact("globex", "refunded") == (globex,)
    assert index.remove("acme", "vip") is acme
    assert index.get("globex", "vip") is globex
    assert index.for_fact("acme", "refunded") == ()
    assert ("globex", "vip") in index
    assert ("acme", "vip") not in index


def test_for_fact_returns_only_that_account_and_filter() -> None:
    index = RuleIndex(
        [
            rule("acme", "a", "refunded"),
            rule("acme", "b", "charge_failed"),
            rule("acme", "c", "refunded"),
            rule("globex", "d", "refunded"),
        ]
    )
    assert [r.id for r in index.for_fact("acme", "refunded")] == ["a", "c"]
    assert [r.id for r in index.for_fact("acme", "charge_failed")] == ["b"]
    assert index.for_fact("acme", "charge_succeeded") == ()
    assert index.for_fact("initech", "refunded") == ()
    assert [r.id for r in index.for_account("acme")] == ["b", "a", "c"]
    assert sorted(r.key for r in index) == [
        ("acme", "a"),
        ("acme", "b"),
        ("acme", "c"),
        ("globex", "d"),
    ]


def test_add_replaces_by_id_even_when_the_filter_changes() -> None:
    index = RuleIndex()
    first = rule("acme", "seg", "refunded")
    assert index.add(first) is None
    second = rule("acme", "seg", "charge_failed", version=2)
    assert index.add(second) is first
    assert len(index) == 1
    assert index.for_fact("acme", "refunded") == ()
    assert index.for_fact("acme", "charge_failed") == (second,)
    third = rule("acme", "seg", "charge_failed", version=3)
    assert index.add(third) is second
    assert index.for_fact("acme", "charge_failed") == (third,)
    assert index.get("acme", "seg") is third


def test_snapshots_do_not_change_under_the_reader() -> None:
    index = RuleIndex([rule("acme", "a")])
    snapshot = index.for_fact("acme", "refunded")
    index.add(rule("acme", "b"))
    index.remove("acme", "a")
    assert [r.id for r in snapshot] == ["a"]
    assert [r.id for r in index.for_fact("acme", "refunded")] == ["b"]
    # Unchanged routes hand out the same snapshot: reads allocate nothing.
    assert index.for_fact("acme", "refunded") is index.for_fact("acme", "refunded")


def test_loading_many_rules_into_one_route() -> None:
    index = RuleIndex([rule("acme", f"r{n}") for n in range(5_000)])
    assert len(index.for_fact("acme", "refunded")) == 5_000
    index.remove("acme", "r0")
    assert index.for_fact("acme", "refunded")[0].id == "r1"


def test_removing_what_is_not_there() -> None:
    index = RuleIndex()
    assert index.remove("acme", "nope") is None
    assert index.get("acme", "nope") is None
    assert len(index) == 0
    assert list(index) == []
