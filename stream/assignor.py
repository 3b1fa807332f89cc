"""Who works on which partition number: co-partitioned, balanced, and sticky.

The range assignor gives a worker the same partition numbers of every topic, which the
pipeline needs (one task per number, see `stream.runtime`), but it lays the numbers out
by member id: a worker that restarts comes back with a new id and most numbers move,
each one a state recovery somewhere. Like Kafka Streams' assignor, this one keeps every
number with the worker that holds its state, as far as balance allows: each member says
in its subscription which numbers it holds state for (working on them, or kept since
the last rebalance), and only the surplus of a member over its fair share, and the
numbers nobody holds, move.

One protocol, named `range`: a consumer group agrees on one protocol name, and `range`
is the one every earlier worker speaks, so old and new workers can share a group
during a rolling upgrade. Whichever kind leads, the assignment is co-partitioned (all
the pipeline needs); a new leader also makes it sticky from the claims, which travel
in the subscription's user data that the old range assignor ignores (Kafka Streams
versions its one protocol's metadata the same way). It used to be a second protocol,
`segments-sticky`, offered before `range`: aiokafka 0.14 sends one JoinGroup per
configured assignor (the second with a longer protocol list, so with changed metadata;
aio-libs/aiokafka PR 1168, open), and two workers starting together then restarted each
other's rebalance for minutes (the chaos test saw 569 rounds in 150 s, no task ever
assigned).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

import orjson
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

log = logging.getLogger(__name__)


def plan(numbers: int, held: Mapping[str, Iterable[int]]) -> dict[str, list[int]]:
    """Partition numbers 0..numbers-1 over the members of `held` (member -> numbers it
    holds state for): every member gets numbers // members or one more, keeps as much of
    what it holds as that allows (a number claimed twice goes to the first member in
    id order), and the rest go to the members with the fewest."""
    members = sorted(held)
    if not members:
        return {}
    base, extra = divmod(numbers, len(members))
    owner: dict[int, str] = {}
    count = dict.fromkeys(members, 0)
    claims = {m: sorted({number for number in held[m] if 0 <= number < numbers}) for m in members}
    for member in members:  # everyone keeps up to the fair share
        for number in claims[member]:
            if count[member] == base:
                break
            if number not in owner:
                owner[number], count[member] = member, count[member] + 1
    for member in members:  # the extra numbers go to members that hold one more
        if extra == 0:
            break
        kept = next((n for n in claims[member] if n not in owner), None)
        if kept is not None and count[member] == base:
            owner[kept], count[member], extra = member, base + 1, extra - 1
    for number in range(numbers):
        if number in owner:
            continue
        under = [m for m in members if count[m] < base]
        member = min(under or [m for m in members if count[m] == base],
                     key=lambda m: (count[m], m))
        if count[member] == base:
            extra -= 1
        owner[number], count[member] = member, count[member] + 1
    assigned: dict[str, list[int]] = {m: [] for m in members}
    for number in sorted(owner):
        assigned[owner[number]].append(number)
    return assigned


class StickyTaskAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """The group's only assignor; `held` tells this worker's claim at each join."""

    #: The protocol name older workers (aiokafka's RangePartitionAssignor) speak.
    name = "range"
    version = 0

    def __init__(self, held: Callable[[], Iterable[int]]) -> None:
        self.held = held

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(
            self.version, list(topics), orjson.dumps(sorted(self.held())))

    def assign(self, cluster: ClusterMetadata,
               members: Mapping[str, ConsumerProtocolMemberMetadata]
               ) -> dict[str, ConsumerProtocolMemberAssignment]:
        topics = sorted({t for metadata in members.values() for t in metadata.subscription})
        counts = {t: len(cluster.partitions_for_topic(t) or ()) for t in topics}
        numbers = max(counts.values(), default=0)
        held = {member: _claims(metadata.user_data) for member, metadata in members.items()}
        tasks = plan(numbers, held)
        log.info("assigning %d partition numbers over %d workers: %s", numbers,
                 len(members), {m: tasks[m] for m in sorted(tasks)})
        return {
            member: ConsumerProtocolMemberAssignment(self.version, sorted(
                (t, [n for n in tasks[member] if n < counts[t]]) for t in topics
                if t in members[member].subscription), b"")
            for member in members}

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        pass


def _claims(user_data: bytes | None) -> list[int]:
    """A member's claim; an unreadable one (another version) claims nothing."""
    try:
        claims = orjson.loads(user_data or b"[]")
    except orjson.JSONDecodeError:
        return []
    if not isinstance(claims, list):
        return []
    return [n for n in claims if isinstance(n, int) and not isinstance(n, bool)]
