"""Pure evaluation: does a fact match, is a contact a member, when will that change.

No I/O, no clock: `now` is always an argument (int epoch seconds), so the stream can
evaluate at event time, at timer time, or while recomputing a segment after a rule
change, and tests can pin any instant.

Membership (SPEC, "Conditions"): without an `occurrences` condition, a contact is a
member iff at least one of its facts satisfies every condition. With one, count the
contact's facts (distinct fact ids) that satisfy every other condition; the contact is
a member iff that count is at least 1 and every `occurrences` condition holds on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rules.conditions import CountCondition
from rules.fact import FactView
from rules.model import Rule


def matches(rule: Rule, fact: FactView, now: int) -> bool:
    """Whether one fact satisfies the rule at `now`: same account, same filter, and every
    condition except `occurrences` (which is about the contact, not one fact)."""
    if fact.filter != rule.filter or fact.account_id != rule.account_id:
        return False
    # An explicit loop, not all(<generator>): this is the per-fact hot path and the
    # generator costs more than the conditions themselves (see bench/bench_rules.py).
    for condition in rule.fact_conditions:  # noqa: SIM110
        if not condition.holds(fact, now):
            return False
    return True


def failed_conditions(rule: Rule, fact: FactView, now: int) -> tuple[int, ...]:
    """Indexes into `rule.conditions` of the conditions this fact fails at `now`: what
    "why is (or isn't) this contact a member" shows per fact.

    Only conditions on one fact are tested; `occurrences` (about the contact's count,
    not one fact) never appears. For a fact of the rule's account and filter,
    `matches(rule, fact, now)` is exactly `not failed_conditions(rule, fact, now)`.
    """
    return tuple(
        index
        for index, condition in enumerate(rule.conditions)
        if not isinstance(condition, CountCondition) and not condition.holds(fact, now)
    )


def is_member(rule: Rule, facts: Iterable[FactView], now: int) -> bool:
    """Whether the contact whose facts these are is in the segment at `now`.

    `facts` may hold facts of any filter (and, defensively, any account); only those
    of the rule's account and filter count.
    """
    if not rule.count_conditions:
        # `any(matches(...) for ...)` unrolled, `matches` inlined: a preview runs this
        # for every contact of an account (bench/bench_preview.py); the generator and
        # the call cost more than the conditions.
        conditions = rule.fact_conditions
        for fact in facts:
            if fact.filter != rule.filter or fact.account_id != rule.account_id:
                continue
            for condition in conditions:
                if not condition.holds(fact, now):
                    break
            else:
                return True
        return False
    qualifying = {fact.fact_id for fact in facts if matches(rule, fact, now)}
    return _member_by_count(rule, len(qualifying))


def next_change(rule: Rule, facts: Iterable[FactView], now: int) -> int | None:
    """The first instant after `now` at which the clock alone changes `is_member`.

    None when no relative window can change it (no relative condition, or no fact
    whose windows are still ahead). Exact: for the returned instant T,
    `is_member(T) != is_member(now)`, and `is_member` equals `is_member(now)` at every
    instant in (now, T). A new fact or rule change can of course move it; callers
    recompute then.

    How: a fact's relative conditions change truth only at instants it can name
    (`RelativeCondition.changes`); membership is constant between consecutive such
    instants, so the first one where membership differs is the answer.
    """
    if not rule.relative_conditions:
        return None
    candidates = _static_candidates(rule, facts)
    return _next_change_of(rule, candidates, now, _member_at(rule, candidates, now))


def evaluate(rule: Rule, facts: Iterable[FactView], now: int) -> tuple[bool, int | None]:
    """`(is_member(...), next_change(...))`, with the clock-independent conditions
    checked once per fact instead of once for each (the stream needs both per fact)."""
    if not rule.relative_conditions:
        return is_member(rule, facts, now), None
    candidates = _static_candidates(rule, facts)
    member = _member_at(rule, candidates, now)
    return member, _next_change_of(rule, candidates, now, member)


def _next_change_of(rule: Rule, candidates: Sequence[FactView], now: int,
                    current: bool) -> int | None:
    instants = sorted(
        {
            instant
            for fact in candidates
            for condition in rule.relative_conditions
            for instant in condition.changes(fact)
            if instant > now
        }
    )
    for instant in instants:
        if _member_at(rule, candidates, instant) != current:
            return instant
    return None


def _member_by_count(rule: Rule, count: int) -> bool:
    if count < 1:
        return False
    return all(condition.holds_on(count) for condition in rule.count_conditions)


def _static_candidates(rule: Rule, facts: Iterable[FactView]) -> Sequence[FactView]:
    """Facts (one per fact id) that pass everything that does not depend on the clock."""
    seen: dict[str, FactView] = {}
    static = rule.static_conditions
    for fact in facts:
        if fact.fact_id in seen:
            continue
        if fact.filter != rule.filter or fact.account_id != rule.account_id:
            continue
        for condition in static:  # a loop, not all(<generator>): the hot path
            if not condition.holds(fact, 0):
                break
        else:
            seen[fact.fact_id] = fact
    return tuple(seen.values())


def _member_at(rule: Rule, candidates: Sequence[FactView], now: int) -> bool:
    """`is_member` over facts already known to pass the static conditions."""
    relative = rule.relative_conditions
    count = 0
    for fact in candidates:
        if all(condition.holds(fact, now) for condition in relative):
            if not rule.count_conditions:
                return True
            count += 1
    return _member_by_count(rule, count)
