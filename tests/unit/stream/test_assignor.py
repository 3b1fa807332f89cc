"""The sticky, co-partitioned assignor: balanced, complete, and moving only what balance
requires (checked against properties, not against the algorithm's steps)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.assignor import StickyTaskAssignor, plan

pytestmark = pytest.mark.unit


def check_balanced(numbers: int, tasks: dict[str, list[int]]) -> None:
    assigned = [n for owned in tasks.values() for n in owned]
    assert sorted(assigned) == list(range(numbers)), "every number exactly once"
    sizes = [len(owned) for owned in tasks.values()]
    assert max(sizes) - min(sizes) <= 1, f"unbalanced: {sizes}"


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 24), st.integers(1, 6), st.data())
def test_every_number_once_and_balanced_whatever_the_claims(numbers: int, members: int,
                                                            data: Any) -> None:
    held = {f"m{i}": data.draw(st.lists(st.integers(-2, numbers + 2), max_size=numbers))
            for i in range(members)}
    check_balanced(numbers, plan(numbers, held))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 24), st.integers(1, 6), st.integers(0, 2), st.randoms())
def test_only_what_balance_requires_moves(numbers: int, members: int, joining: int,
                                          rng: Any) -> None:
    """Members holding a disjoint, balanced share keep all of it when nothing changes,
    and when members join, each keeps at least its new fair share of what it held."""
    owners = [f"m{i}" for i in range(members)]
    before = plan(numbers, {m: [] for m in owners})
    assert plan(numbers, before) == before, "an unchanged group moves nothing"
    after = plan(numbers, {**before, **{f"new{i}": [] for i in range(joining)}})
    check_balanced(numbers, after)
    fair = numbers // (members + joining)
    for member in owners:
        kept = set(before[member]) & set(after[member])
        assert len(kept) >= min(fair, len(before[member])), (member, before, after)


def test_a_member_that_left_leaves_only_its_numbers_to_move() -> None:
    before = plan(8, {"a": [], "b": [], "c": []})
    after = plan(8, {"a": before["a"], "c": before["c"]})
    moved = {n for m in ("a", "c") for n in set(before[m]) - set(after[m])}
    assert moved == set()
    assert set(after["a"]) | set(after["c"]) == set(range(8))


class Cluster:
    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.counts[topic]))


def test_the_assignment_gives_the_same_numbers_of_every_topic() -> None:
    """Co-partitioned: a member gets partition n of every topic that has one."""
    assignor = StickyTaskAssignor(lambda: [])
    cluster = Cluster({"events": 8, "facts": 8, "rules": 1})
    members = {
        "a": ConsumerProtocolMemberMetadata(0, ["events", "facts", "rules"],
                                            orjson.dumps([0, 1, 2, 3])),
        "b": ConsumerProtocolMemberMetadata(0, ["events", "facts", "rules"], b"not json"),
    }
    result = assignor.assign(cluster, members)  # type: ignore[arg-type]
    got = {m: dict(a.assignment) for m, a in result.items()}
    assert got["a"] == {"events": [0, 1, 2, 3], "facts": [0, 1, 2, 3], "rules": [0]}
    assert got["b"] == {"events": [4, 5, 6, 7], "facts": [4, 5, 6, 7], "rules": []}
    assert Counter(n for a in got.values() for n in a["rules"]) == Counter([0])


def test_a_member_claims_what_it_holds() -> None:
    metadata = StickyTaskAssignor(lambda: [3, 1]).metadata(["events"])
    assert orjson.loads(metadata.user_data) == [1, 3]
    assert metadata.subscription == ["events"]
