"""In-memory indexes of one membership partition, derived from its tables.

Tables are the durable truth (changelog-backed); these indexes only make lookups fast:
the partition's rules by (account, filter), its contacts by account (to recompute a
segment when its rule changes) and a heap of due instants (to fire timers). They are
rebuilt from the tables whenever a partition is (re)assigned.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from rules import Rule, RuleIndex, parse_rule
from stream.membership import ContactState, history_horizon

_rule_cache: dict[bytes, Rule] = {}


def stored_bytes(value: object) -> bytes:
    """A raw table value as bytes.

    Faust hands back what a table was given while running, but values recovered from
    the changelog come through its JSON codec; both mean the same document.
    """
    if isinstance(value, bytes):
        return value
    import orjson

    return orjson.dumps(value)


def rule_from_doc(value: object) -> Rule:
    """Parse a rule document once per distinct content, shared by all partitions."""
    raw = stored_bytes(value)
    rule = _rule_cache.get(raw)
    if rule is None:
        import orjson

        rule = parse_rule(orjson.loads(raw))
        if len(_rule_cache) > 200_000:
            _rule_cache.clear()
        _rule_cache[raw] = rule
    return rule


@dataclass
class PartitionState:
    partition: int
    rules: RuleIndex = field(default_factory=RuleIndex)
    contacts_by_account: dict[str, set[str]] = field(default_factory=dict)
    #: (due instant, contact key); stale entries are skipped when popped.
    timers: list[tuple[int, str]] = field(default_factory=list)
    horizon: int = 0

    def __post_init__(self) -> None:
        self.horizon = history_horizon(())

    def add_rule(self, rule: Rule) -> Rule | None:
        old = self.rules.add(rule)
        self.horizon = history_horizon(self.rules)
        return old

    def remove_rule(self, account_id: str, rule_id: str) -> Rule | None:
        old = self.rules.remove(account_id, rule_id)
        self.horizon = history_horizon(self.rules)
        return old

    def track(self, key: str, state: ContactState) -> None:
        self.contacts_by_account.setdefault(state.account_id, set()).add(key)
        due = state.next_due()
        if due is not None:
            heapq.heappush(self.timers, (due, key))

    def due_contacts(self, now: int) -> list[str]:
        """Contact keys with a timer at or before `now` (each once)."""
        keys: list[str] = []
        while self.timers and self.timers[0][0] <= now:
            _, key = heapq.heappop(self.timers)
            if key not in keys:
                keys.append(key)
        return keys

    def rules_of(self, account_id: str, filters: Iterable[str]) -> dict[str, Rule]:
        return {
            rule.id: rule
            for filter_id in filters
            for rule in self.rules.for_fact(account_id, filter_id)
        }
