"""Incremental segment membership of one contact: pure, so it is tested without Kafka.

The pipeline keeps one `ContactState` per contact (account + email) in its state and
calls these functions on each input; they return the membership changes to publish.
Each contact's state knows, per segment, whether the contact is a member and the next
instant at which the clock alone can flip that (`rules.next_change`), so the stream
sets timers only where something can actually happen.

Retention
---------
A contact keeps every fact within the **horizon**: the history floor (33 days by
default, `SEGMENTS_HISTORY_DAYS`) or the longest relative window of the partition's
rules plus 3 days, whichever is longer. Past the horizon, no relative condition of
any rule in force can change its verdict on a fact any more (`within_last` is false
for good, `more_than_ago` true for good), so each fact's verdict under each rule is
frozen. `prune` then keeps only what the rules of the contact's account still need
and forgets the rest: for each rule, its qualifying facts, newest first, one if the
rule has no `occurrences` condition (one is enough to stay a member), else one more
than the largest count the rule names (enough for every count comparison it makes to
come out the same). So a member of "charge failed more than 30 days ago" stays one for
as long as the rule is in force, memory per contact stays bounded (the horizon's facts
plus a few per rule), and forgetting never changes a membership or a due instant: no
change is ever caused by housekeeping. A rule created or changed later is computed
from what is held: the horizon's facts plus those kept for the rules in force then.
Two bounds remain: a fact that arrives already beyond the horizon is not held (counted
in `segments_facts_beyond_horizon_total`), and a contact with more than
`MAX_FACTS_PER_CONTACT` facts of one filter loses the oldest of those no rule keeps
(counted in `segments_history_facts_dropped_total`), a guard against abuse that
takes effect with the fact that crossed it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from common.windows import HISTORY_FLOOR_SECONDS
from rules import Rule, RuleIndex, evaluate, matches
from stream.changes import Cause, MembershipChange, iso
from stream.facts import Fact

DAY = 24 * 3600
#: History every contact keeps whatever the rules, by default: the backfill window
#: (30 days) plus Stripe's webhook retry period (3 days), so late facts still land in a
#: kept history. `StreamOptions.history_floor_s` (`SEGMENTS_HISTORY_DAYS`) overrides it.
HISTORY_FLOOR = HISTORY_FLOOR_SECONDS
#: Most facts of one filter one contact holds; beyond it the oldest that no rule keeps
#: go (and are counted).
MAX_FACTS_PER_CONTACT = 1000
_MONTH = 31 * DAY


def history_horizon(rules: Iterable[Rule], floor: int = HISTORY_FLOOR) -> int:
    """Seconds of history to keep whole: the floor, or the longest relative window in
    use plus 3 days (Stripe's retry period: a late fact still meets its window)."""
    longest = 0
    for rule in rules:
        for condition in rule.relative_conditions:
            window = (
                condition.seconds if condition.seconds is not None else (condition.count * _MONTH)
            )
            longest = max(longest, window)
    return max(floor, longest + 3 * DAY)


@dataclass(slots=True, eq=False)
class ContactState:
    account_id: str
    email: str
    #: The partition this contact lives on (its table's changelog partition).
    partition: int
    #: filter -> fact_id -> fact (see `facts`).
    decoded: dict[str, dict[str, Fact]] = field(default_factory=dict, repr=False)
    #: segment id -> rule version the membership was decided under, for members only.
    members: dict[str, int] = field(default_factory=dict)
    #: segment id -> next instant the clock alone flips membership.
    due: dict[str, int] = field(default_factory=dict)
    #: segment id -> [`at` of the join (ISO), its fact id or None], for members: what
    #: their `segments.members` record says, to restate it under a new rule version.
    since: dict[str, list[Any]] = field(default_factory=dict)
    #: The state as read from the changelog while its facts are not decoded yet.
    raw: bytes | None = field(default=None, repr=False)

    @property
    def facts(self) -> dict[str, dict[str, Fact]]:
        """filter -> fact_id -> fact; a fact id seen again replaces (amends) the old one.

        Decoded on first use: a worker taking over a partition recovers every contact's
        state, and decoding every fact of every contact into objects was most of that
        time (`docs/benchmarks.md`, takeover); most contacts are not touched before the
        partition serves, and the timers and indexes need only `due` and the account."""
        if self.raw is not None:
            by_filter = self.decoded
            for fact_doc in orjson.loads(self.raw)["f"]:
                fact = Fact.from_dict(fact_doc)
                by_filter.setdefault(fact.filter, {})[fact.fact_id] = fact
            self.raw = None
        return self.decoded

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContactState):
            return NotImplemented
        return ((self.account_id, self.email, self.partition, self.facts, self.members,
                 self.due, self.since)
                == (other.account_id, other.email, other.partition, other.facts,
                    other.members, other.due, other.since))

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def empty(self) -> bool:
        """Nothing held, nothing due, a member of nothing: the contact can be deleted."""
        return self.raw is None and not self.decoded and not self.members and not self.due

    def next_due(self) -> int | None:
        return min(self.due.values(), default=None)

    def facts_for(self, filter_id: str) -> Sequence[Fact]:
        return tuple(self.facts.get(filter_id, {}).values())

    def to_bytes(self) -> bytes:
        # Facts never decoded are written back as they were read (members, due and
        # since may have changed without them: a rule deleted, say).
        facts = (orjson.loads(self.raw)["f"] if self.raw is not None else
                 [fact.to_dict() for by_id in self.decoded.values() for fact in by_id.values()])
        return orjson.dumps(
            {
                "a": self.account_id,
                "e": self.email,
                "p": self.partition,
                "f": facts,
                "m": self.members,
                "d": self.due,
                **({"s": self.since} if self.since else {}),
            }
        )

    def to_bytes_kept(self) -> bytes:
        """`to_bytes`, after which the facts are held only in that form, as a contact
        recovered from the changelog holds them, and decoded again on next use.

        Memory: a worker that built the state of 100,000 contacts by processing held
        530 MiB, one that recovered the same state 199 MiB (`docs/benchmarks.md`); the
        difference was the decoded facts of contacts not touched since. The cost is a
        decode when a contact gets its next fact, after its changelog write.
        """
        raw = bytes(memoryview(self.to_bytes()))  # exact-size: it is kept (state.compact)
        if self.decoded:
            self.raw, self.decoded = raw, {}
        return raw

    def encoded_again(self, raw: bytes | None) -> None:
        """The facts were decoded from `raw` to be read, and nothing changed: hold them
        as those bytes again (see `to_bytes_kept`). Nothing to do if `raw` is None."""
        if raw is not None:
            self.raw, self.decoded = raw, {}

    @classmethod
    def from_bytes(cls, raw: bytes) -> ContactState:
        doc: dict[str, Any] = orjson.loads(raw)
        # An exact-size copy: `raw` may be a slice of a fetch buffer (see state.compact).
        return cls(doc["a"], doc["e"], doc["p"], members=doc["m"], due=doc["d"],
                   since=doc.get("s") or {},
                   raw=bytes(memoryview(raw)) if doc["f"] else None)


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
        state.since[rule.id] = [iso(at), fact_id]
    else:
        del state.members[rule.id]
        state.since.pop(rule.id, None)
    return MembershipChange(
        account_id=state.account_id,
        segment_id=rule.id,
        email=state.email,
        change="joined" if member else "left",
        at=iso(at),
        cause=cause,
        fact_id=fact_id,
        rule_version=rule.version,
        observed_at=iso(now),
    )


def hold(state: ContactState, fact: Fact, rules: Sequence[Rule], now: int) -> int:
    """Add a new (or amended) fact to the contact's history, before `on_fact`.

    `rules` are all the rules of the fact's account and filter. If the fact takes its
    filter past `MAX_FACTS_PER_CONTACT`, the oldest facts those rules do not keep go;
    returns how many (the evaluation that follows sees the trimmed history).
    """
    by_id = state.facts.setdefault(fact.filter, {})
    by_id[fact.fact_id] = fact
    return _cap(by_id, rules, now) if len(by_id) > MAX_FACTS_PER_CONTACT else 0


def hold_affected(state: ContactState, fact: Fact, index: RuleIndex,
                  now: int) -> tuple[Sequence[Rule], int]:
    """`hold` the fact, and say which rules of its route `on_fact` must re-decide:
    those whose membership or due instant it can change. Returns them (in the route's
    order) and how many facts `hold` dropped.

    Every other rule's recorded verdict is still `evaluate`'s at `now` (it was decided
    when the contact's facts last changed, and the clock alone has not reached its due
    instant, or its timer will publish that change): the fact can move a verdict only
    where it, or the version of it that it amends (same fact id: e.g. a refund's new
    amount), can satisfy the rule at `now` or later (`RuleIndex.affected`). When `hold`
    dropped facts (`MAX_FACTS_PER_CONTACT`), any rule may have lost one: all are
    re-decided. Membership is "some / how many held facts satisfy the rule" for every
    filter, subscriptions included (`rules.evaluate`), so nothing else is needed;
    tests/unit/stream/test_membership_narrowing.py checks the outputs are the same as
    re-deciding every rule of the route."""
    rules = index.for_fact(fact.account_id, fact.filter)
    previous = state.facts.get(fact.filter, {}).get(fact.fact_id)
    dropped = hold(state, fact, rules, now)
    if dropped or not rules:
        return rules, dropped
    return index.affected(fact, now, previous), dropped


def fact_at(fact: Fact, rule: Rule, now: int, rule_since: Mapping[str, int]) -> int:
    """`at` of a change caused by `fact` under `rule` (see `stream.changes`): the fact's
    event time, or when the rule's version came into force if later; at most `now`."""
    return min(now, max(fact.occurred_at, rule_since.get(rule.id, 0)))


def on_fact(
    state: ContactState, fact: Fact, rules: Sequence[Rule], now: int,
    rule_since: Mapping[str, int] = MappingProxyType({}),
) -> list[MembershipChange]:
    """A fact just held: re-evaluate `rules`, those of its account and filter it can
    affect (`hold_affected`), or all of them (after `hold`): the same changes.

    `rule_since`: rule id -> when its version in force came into force (epoch s)."""
    changes = []
    for rule in rules:
        change = _decide(state, rule, now, cause="fact",
                         at=fact_at(fact, rule, now, rule_since), fact_id=fact.fact_id)
        if change is not None:
            changes.append(change)
    return changes


def on_retract(
    state: ContactState, fact: Fact, rules: Sequence[Rule], now: int,
    rule_since: Mapping[str, int] = MappingProxyType({}),
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
        change = _decide(state, rule, now, cause="fact",
                         at=fact_at(fact, rule, now, rule_since), fact_id=fact.fact_id)
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
    state: ContactState, old: Rule | None, new: Rule | None, now: int,
    at: int | None = None,
) -> list[MembershipChange]:
    """A rule was created, changed (`new` replaces `old`) or deleted (`new` is None),
    at `at` (default `now`)."""
    at = now if at is None else at
    if new is not None:
        change = _decide(state, new, now, cause="rule", at=at, fact_id=None)
        return [change] if change is not None else []
    if old is None:
        return []
    state.due.pop(old.id, None)
    if old.id not in state.members:
        return []
    del state.members[old.id]
    state.since.pop(old.id, None)
    return [
        MembershipChange(
            account_id=state.account_id,
            segment_id=old.id,
            email=state.email,
            change="left",
            at=iso(at),
            cause="rule",
            fact_id=None,
            rule_version=old.version,
            observed_at=iso(now),
        )
    ]


def too_old(fact: Fact, now: int, horizon: int) -> bool:
    """A fact beyond the history horizon when it arrives is never held (it is counted)."""
    return _last_instant(fact) < now - horizon


def prunable(state: ContactState, now: int, horizon: int) -> bool:
    """Whether `prune` may forget anything (a fact past the horizon is held): when not,
    the caller need not gather the rules it takes."""
    cutoff = now - horizon
    for by_id in state.facts.values():
        for fact in by_id.values():  # `_last_instant(fact) < cutoff`, inlined: per fact
            if (fact.occurred_at < cutoff and (fact.start_date or 0) < cutoff
                    and (fact.end_date or 0) < cutoff):
                return True
    return False


def prune(state: ContactState, now: int, horizon: int, rules: Mapping[str, Rule]) -> int:
    """Forget facts past the horizon that no rule needs (see "Retention" above).

    `rules` are the rules of the contact's account for (at least) the filters it holds
    facts of, and `horizon` must cover their relative windows (`history_horizon`).
    Membership and due instants are the same before and after, at every instant from
    `now` on. Returns how many facts were forgotten.
    """
    cutoff = now - horizon
    forgotten = 0
    for filter_id, by_id in list(state.facts.items()):
        old = [fact for fact in by_id.values() if _last_instant(fact) < cutoff]
        if not old:
            continue
        kept = needed(old, [rule for rule in rules.values() if rule.filter == filter_id],
                      now)
        for fact in old:
            if fact.fact_id not in kept:
                del by_id[fact.fact_id]
                forgotten += 1
        if not by_id:
            del state.facts[filter_id]
    return forgotten


def needed(facts: Iterable[Fact], rules: Iterable[Rule], now: int) -> set[str]:
    """The ids of the fewest `facts` that keep every rule's verdict, given that their
    verdicts no longer change with time: per rule, its qualifying facts, newest first,
    as many as `_kept_per_rule` says."""
    candidates = sorted(facts, key=lambda f: (_last_instant(f), f.fact_id), reverse=True)
    kept: set[str] = set()
    for rule in rules:
        limit = _kept_per_rule(rule)
        taken = 0
        for fact in candidates:
            if taken == limit:
                break
            if matches(rule, fact, now):
                kept.add(fact.fact_id)
                taken += 1
    return kept


def _kept_per_rule(rule: Rule) -> int:
    """One qualifying fact keeps a member without `occurrences`; with it, one more than
    the largest count named: with that many, every comparison the rule makes (`gte 3`,
    `lt 5`, `between 2 and 4`) comes out as it would with all of them."""
    if not rule.count_conditions:
        return 1
    return 1 + max((int(v) for c in rule.count_conditions for v in c.values), default=0)


def _cap(by_id: dict[str, Fact], rules: Iterable[Rule], now: int) -> int:
    """Trim one filter's facts to `MAX_FACTS_PER_CONTACT`: the oldest of those the
    rules do not keep go first. Returns how many went."""
    kept = needed(by_id.values(), rules, now)
    ordered = sorted(by_id.values(),
                     key=lambda f: (f.fact_id in kept, f.occurred_at, f.fact_id))
    excess = len(by_id) - MAX_FACTS_PER_CONTACT
    for fact in ordered[:excess]:
        del by_id[fact.fact_id]
    return max(excess, 0)


def _last_instant(fact: Fact) -> int:
    """The latest instant a rule can look at on this fact (its dates included)."""
    return max(fact.occurred_at, fact.start_date or 0, fact.end_date or 0)
