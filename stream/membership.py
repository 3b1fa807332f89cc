"""Incremental segment membership of one contact: pure, so it is tested without Kafka.

The pipeline keeps one `ContactState` per contact (account + email) in its state and
calls these functions on each input; they return the membership changes to publish.
Each contact's state knows, per segment, whether the contact is a member and the next
instant at which the clock alone can flip that (`rules.next_change`), so the stream
sets timers only where something can actually happen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from common.windows import HISTORY_FLOOR_SECONDS
from rules import Rule, evaluate
from stream.changes import Cause, MembershipChange, iso
from stream.facts import Fact

DAY = 24 * 3600
#: History every contact keeps whatever the rules: the backfill window (30 days) plus
#: Stripe's webhook retry period (3 days), so late facts still land in a kept history.
HISTORY_FLOOR = HISTORY_FLOOR_SECONDS
#: Upper bound of one contact's history; beyond it the oldest facts go (and are counted).
MAX_FACTS_PER_CONTACT = 1000
_MONTH = 31 * DAY


def history_horizon(rules: Iterable[Rule]) -> int:
    """Seconds of history to keep: the floor, or the longest relative window in use."""
    longest = 0
    for rule in rules:
        for condition in rule.relative_conditions:
            window = (
                condition.seconds if condition.seconds is not None else (condition.count * _MONTH)
            )
            longest = max(longest, window)
    return max(HISTORY_FLOOR, longest + 3 * DAY)


@dataclass(slots=True)
class ContactState:
    account_id: str
    email: str
    #: The partition this contact lives on (its table's changelog partition).
    partition: int
    #: filter -> fact_id -> fact; a fact id seen again replaces (amends) the old one.
    facts: dict[str, dict[str, Fact]] = field(default_factory=dict)
    #: segment id -> rule version the membership was decided under, for members only.
    members: dict[str, int] = field(default_factory=dict)
    #: segment id -> next instant the clock alone flips membership.
    due: dict[str, int] = field(default_factory=dict)

    def next_due(self) -> int | None:
        return min(self.due.values(), default=None)

    def facts_for(self, filter_id: str) -> Sequence[Fact]:
        return tuple(self.facts.get(filter_id, {}).values())

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "a": self.account_id,
                "e": self.email,
                "p": self.partition,
                "f": [fact.to_dict() for by_id in self.facts.values() for fact in by_id.values()],
                "m": self.members,
                "d": self.due,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> ContactState:
        doc: dict[str, Any] = orjson.loads(raw)
        state = cls(doc["a"], doc["e"], doc["p"], members=doc["m"], due=doc["d"])
        for fact_doc in doc["f"]:
            fact = Fact.from_dict(fact_doc)
            state.facts.setdefault(fact.filter, {})[fact.fact_id] = fact
        return state


def _decide(
    state: ContactState, rule: Rule, now: int, *, cause: Cause, at: int, fact_id: str | None
) -> MembershipChange | None:
    """Re-evaluate one segment for this contact; record and return a change, if any."""
    facts = state.facts_for(rule.filter)
    member, due = evaluate(rule, facts, now) if facts else (False, None)
    if due is None:
        state.due.pop(rule.id, None)
    else:
        state.due[rule.id] = due
    was = rule.id in state.members
    if member == was:
        if member:
            state.members[rule.id] = rule.version
        return None
    if member:
        state.members[rule.id] = rule.version
    else:
        del state.members[rule.id]
    return MembershipChange(
        account_id=state.account_id,
        segment_id=rule.id,
        email=state.email,
        change="joined" if member else "left",
        at=iso(at),
        cause=cause,
        fact_id=fact_id,
        rule_version=rule.version,
    )


def on_fact(
    state: ContactState, fact: Fact, rules: Sequence[Rule], now: int
) -> list[MembershipChange]:
    """A new (or amended) fact: re-evaluate the rules of its account and filter."""
    state.facts.setdefault(fact.filter, {})[fact.fact_id] = fact
    changes = []
    for rule in rules:
        change = _decide(state, rule, now, cause="fact", at=now, fact_id=fact.fact_id)
        if change is not None:
            changes.append(change)
    return changes


def on_retract(
    state: ContactState, fact: Fact, rules: Sequence[Rule], now: int
) -> list[MembershipChange]:
    """A retraction: forget fact `fact.fact_id` and re-decide where it counted.

    Forgetting a fact the contact does not hold changes nothing, so a retraction
    delivered twice makes one change at most.
    """
    by_id = state.facts.get(fact.filter)
    if not by_id or by_id.pop(fact.fact_id, None) is None:
        return []
    if not by_id:
        del state.facts[fact.filter]
    changes = []
    for rule in rules:
        change = _decide(state, rule, now, cause="fact", at=now, fact_id=fact.fact_id)
        if change is not None:
            changes.append(change)
    return changes


def on_time(state: ContactState, rules: Mapping[str, Rule], now: int) -> list[MembershipChange]:
    """The clock reached some due instants: re-evaluate exactly those segments.

    A segment whose rule is gone (deleted while the timer was pending) just loses its
    timer; its leave was already published by the rule deletion.
    """
    changes = []
    for segment_id, due in sorted(state.due.items(), key=lambda item: item[1]):
        if due > now:
            continue
        rule = rules.get(segment_id)
        if rule is None:
            state.due.pop(segment_id, None)
            continue
        # The change happened at the due instant, even if the tick came a bit later.
        change = _decide(state, rule, now, cause="time", at=due, fact_id=None)
        if change is not None:
            changes.append(change)
    return changes


def on_rule(
    state: ContactState, old: Rule | None, new: Rule | None, now: int
) -> list[MembershipChange]:
    """A rule was created, changed (`new` replaces `old`) or deleted (`new` is None)."""
    if new is not None:
        change = _decide(state, new, now, cause="rule", at=now, fact_id=None)
        return [change] if change is not None else []
    if old is None:
        return []
    state.due.pop(old.id, None)
    if old.id not in state.members:
        return []
    del state.members[old.id]
    return [
        MembershipChange(
            account_id=state.account_id,
            segment_id=old.id,
            email=state.email,
            change="left",
            at=iso(now),
            cause="rule",
            fact_id=None,
            rule_version=old.version,
        )
    ]


def too_old(fact: Fact, now: int, horizon: int) -> bool:
    """A fact beyond the history horizon when it arrives is never held (nor counted)."""
    return _last_instant(fact) < now - horizon


def on_horizon(state: ContactState, filters: Iterable[str], rules: Mapping[str, Rule],
               now: int) -> list[MembershipChange]:
    """Facts aged out of the history: memberships resting on them end, cause "time"."""
    wanted = set(filters)
    changes = []
    for rule in rules.values():
        if rule.filter in wanted:
            change = _decide(state, rule, now, cause="time", at=now, fact_id=None)
            if change is not None:
                changes.append(change)
    return changes


def prune(state: ContactState, now: int, horizon: int) -> set[str]:
    """Forget facts older than the horizon, and the oldest beyond the cap.

    Returns the filters that lost facts, whose segments must be re-evaluated.
    """
    cutoff = now - horizon
    dropped: set[str] = set()
    for filter_id, by_id in list(state.facts.items()):
        old = [fid for fid, fact in by_id.items() if _last_instant(fact) < cutoff]
        for fid in old:
            del by_id[fid]
            dropped.add(filter_id)
        if len(by_id) > MAX_FACTS_PER_CONTACT:
            ordered = sorted(by_id.values(), key=lambda f: f.occurred_at)
            for fact in ordered[: len(by_id) - MAX_FACTS_PER_CONTACT]:
                del by_id[fact.fact_id]
                dropped.add(filter_id)
        if not by_id:
            del state.facts[filter_id]
    return dropped


def _last_instant(fact: Fact) -> int:
    """The latest instant a rule can look at on this fact (its dates included)."""
    return max(fact.occurred_at, fact.start_date or 0, fact.end_date or 0)
