"""In-memory indexes of one membership partition, derived from its state.

The state is the durable truth (changelog-backed); these indexes only make lookups fast:
the partition's rules by (account, filter), its contacts by account (to recompute a
segment when its rule changes) and a heap of due instants (to fire timers). They are
rebuilt from the tables whenever a partition is (re)assigned.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from common.windows import HISTORY_FLOOR_SECONDS
from rules import Rule, RuleIndex, parse_rule
from stream.membership import ContactState, history_horizon

_rule_cache: dict[bytes, Rule] = {}


def rule_from_doc(raw: bytes) -> Rule:
    """Parse a rule document once per distinct content, shared by all partitions."""
    rule = _rule_cache.get(raw)
    if rule is None:
        rule = parse_rule(orjson.loads(raw))
        if len(_rule_cache) > 200_000:
            _rule_cache.clear()
        _rule_cache[bytes(memoryview(raw))] = rule  # an exact-size copy (orjson#483)
    return rule


@dataclass
class PartitionState:
    partition: int
    rules: RuleIndex = field(default_factory=RuleIndex)
    contacts_by_account: dict[str, set[str]] = field(default_factory=dict)
    #: (due instant, contact key); stale entries are skipped when popped.
    timers: list[tuple[int, str]] = field(default_factory=list)
    #: contact key -> the instant its latest heap entry is for (one entry per change).
    scheduled: dict[str, int] = field(default_factory=dict)
    #: History kept whatever the rules (`StreamOptions.history_floor_s`).
    floor: int = HISTORY_FLOOR_SECONDS
    horizon: int = 0

    def __post_init__(self) -> None:
        self.horizon = history_horizon((), self.floor)

    def add_rule(self, rule: Rule) -> Rule | None:
        """O(1) apart from the index: the horizon only grows with an added rule, except
        when the rule replaces a longer-windowed version of itself."""
        old = self.rules.add(rule)
        if old is None:
            self.horizon = max(self.horizon, history_horizon((rule,), self.floor))
        else:
            self.horizon = history_horizon(self.rules, self.floor)
        return old

    def add_rules(self, rules: Iterable[Rule]) -> None:
        for rule in rules:
            self.rules.add(rule)
        self.horizon = history_horizon(self.rules, self.floor)

    def remove_rule(self, account_id: str, rule_id: str) -> Rule | None:
        old = self.rules.remove(account_id, rule_id)
        if old is not None:
            self.horizon = history_horizon(self.rules, self.floor)
        return old

    def track(self, key: str, state: ContactState) -> None:
        self.contacts_by_account.setdefault(state.account_id, set()).add(key)
        due = state.next_due()
        if due is not None and self.scheduled.get(key) != due:
            self.scheduled[key] = due
            heapq.heappush(self.timers, (due, key))

    def untrack(self, key: str, state: ContactState) -> None:
        """Forget a deleted contact (its heap entries are skipped when they come due)."""
        self.contacts_by_account.get(state.account_id, set()).discard(key)
        self.scheduled.pop(key, None)

    def due_contacts(self, now: int) -> list[str]:
        """Contact keys with a timer at or before `now` (each once)."""
        keys: dict[str, None] = {}
        while self.timers and self.timers[0][0] <= now:
            due, key = heapq.heappop(self.timers)
            if self.scheduled.get(key) == due:
                del self.scheduled[key]
            keys[key] = None
        return list(keys)

    def rules_of(self, account_id: str, filters: Iterable[str]) -> dict[str, Rule]:
        return {
            rule.id: rule
            for filter_id in filters
            for rule in self.rules.for_fact(account_id, filter_id)
        }
