"""Which rules to evaluate for a fact: a lookup by (account, filter).

A fact can only match rules of its own account and filter, so the index keeps one
bucket per (account_id, filter) and answers `for_fact` with that bucket alone: the cost
per fact depends on how many rules its account has for its filter, never on how many
rules the whole installation holds. Rule ids are unique only within an account, so
rules are identified by (account_id, rule id); two accounts may reuse an id freely.

`matching(fact, now)` goes further and returns exactly the rules of the route that
`rules.matches` accepts, without evaluating each of them: the conditions that allow it
are indexed (`Narrowed`, below), so an account with 100 rules for a filter costs little
more per fact than one with 10.

`affected(fact, now)` answers the stream's question, "whose membership can this fact
change?", from the same indexes: the rules the fact can satisfy at `now` or at any later
instant (a superset of `matching`; see its docstring for why that is the exact test).

Not thread-safe; each stream worker owns its index.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence

from rules.conditions import (
    CurrencyCondition,
    FactCondition,
    MoneyCondition,
    PlanCondition,
    RelativeCondition,
)
from rules.currencies import DEFAULT_EXPONENT, EXPONENT_OF
from rules.fact import FactView
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
        #: The same routes compiled for `matching`, built and dropped like snapshots.
        self._narrowed: dict[_Route, Narrowed] = {}
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
        self._narrowed.pop(route, None)
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

    def matching(self, fact: FactView, now: int) -> list[Rule]:
        """The rules of the fact's account and filter that it satisfies at `now`, in
        insertion order: `[r for r in for_fact(...) if matches(r, fact, now)]`, computed
        from the route's indexes instead of one evaluation per rule."""
        narrowed = self._compiled(fact.account_id, fact.filter)
        return [] if narrowed is None else narrowed.matching(fact, now)

    def affected(self, fact: FactView, now: int,
                 previous: FactView | None = None) -> list[Rule]:
        """The rules of the fact's route that it (or `previous`, the version of the same
        fact it replaces, of the same route) can satisfy at `now` or later, in insertion
        order: every static condition holds and every relative one still can.

        For any other rule R of the route, adding, removing or replacing the fact leaves
        `evaluate(R, facts, now)` as it was: R's membership at every instant from `now`
        on is the same with or without the fact, and so is `next_change` (exact: the
        first instant at which that membership differs)."""
        narrowed = self._compiled(fact.account_id, fact.filter)
        if narrowed is None:
            return []
        mask = narrowed.reachable(fact, now)
        if previous is not None:
            if (previous.account_id, previous.filter) != (fact.account_id, fact.filter):
                raise ValueError("`previous` must be a fact of the same account and filter")
            mask |= narrowed.reachable(previous, now)
        return narrowed.select(mask)

    def _compiled(self, account_id: str, filter: str) -> Narrowed | None:
        route = (account_id, filter)
        narrowed = self._narrowed.get(route)
        if narrowed is None:
            rules = self.for_fact(account_id, filter)
            if not rules:
                return None
            narrowed = self._narrowed[route] = Narrowed(tuple(rules))
        return narrowed

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
        self._narrowed.pop(route, None)
        if not bucket:
            del self._routes[route]


# --- matching: one route's rules compiled into bit masks ------------------------------
#
# Rule i of a route is bit i of a Python int. Each indexed dimension turns the fact into
# the mask of rules that pass it: rules without an indexed condition there pass always,
# the others by a dict lookup (currency, plan) or two bisections (amount, age). The AND
# of the masks is exact for the indexed conditions; the few rules left are checked on
# their remaining ("residual") conditions only. What is indexed:
#
# * currency: every currency condition (the mask per currency is computed once);
# * amount: the non-negated conditions of a rule, intersected into one integer
#   interval per currency exponent (`eq`, `gt`, `gte`, `lt`, `lte`, `between`);
# * age of the fact (now - occurred_at): `within_last` / `more_than_ago` in hours, days
#   or weeks, i.e. `0 <= age < window` / `age >= window`, intersected likewise;
# * plan: the first `is` / `in` condition of a rule (any of the fact's plans listed).
#
# Everything else (negated amounts, refund amounts, calendar days, months, start and
# end dates, further plan conditions) is residual and evaluated as `matches` does.

_Interval = tuple[int | None, int | None]


class _Intervals:
    """Rules with an inclusive integer interval each: which ones contain a value."""

    __slots__ = ("hi_masks", "his", "lo_masks", "los", "members")

    def __init__(self, intervals: dict[int, _Interval]) -> None:
        self.members = 0
        for bit in intervals:
            self.members |= 1 << bit
        lows = sorted((lo, bit) for bit, (lo, _) in intervals.items() if lo is not None)
        highs = sorted((hi, bit) for bit, (_, hi) in intervals.items() if hi is not None)
        # lo_masks[k]: rules whose lower bound is unbounded or among the k smallest.
        unbounded_lo = self.members
        for _, bit in lows:
            unbounded_lo &= ~(1 << bit)
        self.los = [lo for lo, _ in lows]
        self.lo_masks = [unbounded_lo]
        for _, bit in lows:
            self.lo_masks.append(self.lo_masks[-1] | 1 << bit)
        # hi_masks[k]: rules whose upper bound is unbounded or not among the k smallest.
        unbounded_hi = self.members
        for _, bit in highs:
            unbounded_hi &= ~(1 << bit)
        self.his = [hi for hi, _ in highs]
        masks = [unbounded_hi]
        for _, bit in reversed(highs):
            masks.append(masks[-1] | 1 << bit)
        self.hi_masks = masks[::-1]

    def containing(self, value: int) -> int:
        """The mask of rules whose interval contains `value`."""
        return (
            self.lo_masks[bisect_right(self.los, value)]
            & self.hi_masks[bisect_left(self.his, value)]
        )


def _intersect(a: _Interval, b: _Interval) -> _Interval:
    lo = b[0] if a[0] is None else a[0] if b[0] is None else max(a[0], b[0])
    hi = b[1] if a[1] is None else a[1] if b[1] is None else min(a[1], b[1])
    return (lo, hi)


def _can_hold_from(condition: RelativeCondition, fact: FactView, now: int) -> bool:
    """Whether the condition holds on the fact at `now` or at some later instant: a
    `within_last` window not yet over (`instant <= t` comes by itself), or any
    `more_than_ago` (it holds for good once the window has passed)."""
    instant: int | None = getattr(fact, condition.attribute)
    if instant is None:
        return False
    return condition.op != "within_last" or now < condition.window_end(instant)


def _age_interval(condition: RelativeCondition) -> _Interval | None:
    """`holds` as an interval of the fact's age, for fixed-length windows on the date."""
    if condition.attribute != "occurred_at" or condition.seconds is None:
        return None
    if condition.op == "within_last":  # instant <= now < instant + seconds
        return (0, condition.seconds - 1)
    return (condition.seconds, None)  # instant + seconds <= now


class Narrowed:
    """One route's rules (one account, one filter), compiled for `matching`."""

    __slots__ = (
        "age",
        "age_free",
        "age_reach",
        "all",
        "amount",
        "amount_free",
        "by_currency",
        "currency_conditions",
        "currency_free",
        "plan_free",
        "plans",
        "residual",
        "rules",
    )

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.all = (1 << len(rules)) - 1
        self.currency_conditions: dict[int, tuple[CurrencyCondition, ...]] = {}
        self.by_currency: dict[str | None, int] = {}
        amounts: list[dict[int, _Interval]] = [{} for _ in range(4)]
        ages: dict[int, _Interval] = {}
        self.plans: dict[str, int] = {}
        plan_indexed = 0
        residual: list[tuple[FactCondition, ...]] = []
        for bit, rule in enumerate(rules):
            rest: list[FactCondition] = []
            currencies: list[CurrencyCondition] = []
            amount: list[_Interval] | None = None
            age: _Interval | None = None
            plan_done = False
            for condition in rule.fact_conditions:
                if isinstance(condition, CurrencyCondition):
                    currencies.append(condition)
                elif (
                    isinstance(condition, MoneyCondition)
                    and condition.field == "amount"
                    and not condition.ranges[0].negate
                ):
                    ranges = [(r.lo, r.hi) for r in condition.ranges]
                    amount = (
                        ranges
                        if amount is None
                        else [_intersect(a, b) for a, b in zip(amount, ranges, strict=True)]
                    )
                elif (
                    isinstance(condition, RelativeCondition)
                    and (interval := _age_interval(condition)) is not None
                ):
                    age = interval if age is None else _intersect(age, interval)
                elif (
                    isinstance(condition, PlanCondition) and not condition.negate and not plan_done
                ):
                    plan_done = True
                    plan_indexed |= 1 << bit
                    for plan in condition.id_set:
                        self.plans[plan] = self.plans.get(plan, 0) | 1 << bit
                else:
                    rest.append(condition)
            residual.append(tuple(rest))
            if currencies:
                self.currency_conditions[bit] = tuple(currencies)
            if amount is not None:
                for exponent, interval in enumerate(amount):
                    amounts[exponent][bit] = interval
            if age is not None:
                ages[bit] = age
        self.residual = tuple(residual)
        self.currency_free = self.all
        for bit in self.currency_conditions:
            self.currency_free &= ~(1 << bit)
        self.amount = tuple(_Intervals(by_bit) for by_bit in amounts)
        self.amount_free = self.all & ~self.amount[0].members
        self.age = _Intervals(ages)
        # The age only grows: a rule's age interval can still be reached iff the fact is
        # not past its upper end (its lower end comes by itself).
        self.age_reach = _Intervals({bit: (None, hi) for bit, (_, hi) in ages.items()})
        self.age_free = self.all & ~self.age.members
        self.plan_free = self.all & ~plan_indexed

    def _currency_mask(self, currency: str | None) -> int:
        mask = self.currency_free
        if currency is not None:
            for bit, conditions in self.currency_conditions.items():
                for condition in conditions:
                    if (currency in condition.code_set) == condition.negate:
                        break
                else:
                    mask |= 1 << bit
        self.by_currency[currency] = mask
        return mask

    def _static_mask(self, fact: FactView) -> int:
        """The rules whose indexed clock-independent conditions (currency, amount,
        plan) the fact passes."""
        currency = fact.currency
        mask = self.by_currency.get(currency)
        if mask is None:
            mask = self._currency_mask(currency)
        if mask and self.amount_free != self.all:
            amount = fact.amount
            if amount is None or currency is None:
                mask &= self.amount_free
            else:
                exponent = EXPONENT_OF.get(currency, DEFAULT_EXPONENT)
                mask &= self.amount_free | self.amount[exponent].containing(amount)
        if mask and self.plan_free != self.all:
            plan_mask = self.plan_free
            for plan in fact.plans:
                plan_mask |= self.plans.get(plan, 0)
            mask &= plan_mask
        return mask

    def reachable(self, fact: FactView, now: int) -> int:
        """The mask of rules the fact can satisfy at `now` or later, condition by
        condition (see `RuleIndex.affected`)."""
        mask = self._static_mask(fact)
        if mask and self.age_free != self.all:
            mask &= self.age_free | self.age_reach.containing(now - fact.occurred_at)
        left = mask
        residual = self.residual
        while left:
            low = left & -left
            bit = low.bit_length() - 1
            left ^= low
            for condition in residual[bit]:
                if isinstance(condition, RelativeCondition):
                    if not _can_hold_from(condition, fact, now):
                        mask ^= low
                        break
                elif not condition.holds(fact, now):
                    mask ^= low
                    break
        return mask

    def select(self, mask: int) -> list[Rule]:
        """The rules of a mask, in insertion order."""
        out: list[Rule] = []
        rules = self.rules
        while mask:
            low = mask & -mask
            out.append(rules[low.bit_length() - 1])
            mask ^= low
        return out

    def matching(self, fact: FactView, now: int) -> list[Rule]:
        mask = self._static_mask(fact)
        if mask and self.age_free != self.all:
            mask &= self.age_free | self.age.containing(now - fact.occurred_at)
        out: list[Rule] = []
        rules, residual = self.rules, self.residual
        while mask:
            low = mask & -mask
            bit = low.bit_length() - 1
            mask ^= low
            for condition in residual[bit]:
                if not condition.holds(fact, now):
                    break
            else:
                out.append(rules[bit])
        return out
