"""Which rules to evaluate for a fact: a lookup by (account, filter).

A fact can only match rules of its own account and filter, so the index keeps one
bucket per (account_id, filter) and answers `for_fact` with that bucket alone: the cost
per fact depends on how many rules its account has for its filter, never on how many
rules the whole installation holds. Rule ids are unique only within an account, so
rules are identified by (account_id, rule id); two accounts may reuse an id freely.

Not thread-safe; each stream worker owns its index.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from rules.model import Rule
from rules.vocabulary import FILTERS

_Route = tuple[str, str]


class RuleIndex:
    """Rules by identity (account_id, id) and by route (account_id, filter)."""

    def __init__(self, rules: Sequence[Rule] = ()) -> None:
        self._rules: dict[tuple[str, str], Rule] = {}
        self._routes: dict[_Route, dict[str, Rule]] = {}
        #: Immutable snapshots handed out by `for_fact`: built on the first read after a
        #: change of that route (so loading N rules costs O(N), not O(N^2)), then reused,
        #: so reads allocate nothing and a caller iterating one is unaffected by updates.
        self._snapshots: dict[_Route, tuple[Rule, ...]] = {}
        for rule in rules:
            self.add(rule)

    def add(self, rule: Rule) -> Rule | None:
        """Add a rule, or replace the one with the same (account_id, id); returns the
        replaced rule, if any. A replacement may change the filter."""
        previous = self._rules.get(rule.key)
        if previous is not None and previous.filter != rule.filter:
            self._unroute(previous)
        self._rules[rule.key] = rule
        route = (rule.account_id, rule.filter)
        self._routes.setdefault(route, {})[rule.id] = rule
        self._snapshots.pop(route, None)
        return previous

    def remove(self, account_id: str, rule_id: str) -> Rule | None:
        """Remove a rule; returns it, or None if the index did not hold it."""
        rule = self._rules.pop((account_id, rule_id), None)
        if rule is not None:
            self._unroute(rule)
        return rule

    def get(self, account_id: str, rule_id: str) -> Rule | None:
        return self._rules.get((account_id, rule_id))

    def for_fact(self, account_id: str, filter: str) -> Sequence[Rule]:
        """The rules a fact of this account and filter may match, in insertion order."""
        route = (account_id, filter)
        snapshot = self._snapshots.get(route)
        if snapshot is None:
            bucket = self._routes.get(route)
            if bucket is None:
                return ()
            snapshot = self._snapshots[route] = tuple(bucket.values())
        return snapshot

    def for_account(self, account_id: str) -> tuple[Rule, ...]:
        """Every rule of one account (for listings), in filter order."""
        return tuple(rule for name in FILTERS for rule in self.for_fact(account_id, name))

    def __len__(self) -> int:
        return len(self._rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(tuple(self._rules.values()))

    def __contains__(self, key: object) -> bool:
        """`(account_id, rule_id) in index`."""
        return key in self._rules

    def _unroute(self, rule: Rule) -> None:
        route = (rule.account_id, rule.filter)
        bucket = self._routes.get(route)
        if bucket is None:
            return
        bucket.pop(rule.id, None)
        self._snapshots.pop(route, None)
        if not bucket:
            del self._routes[route]
