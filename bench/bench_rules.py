"""How much does it cost to evaluate one fact against its account's rules?

Routes each fact through `RuleIndex.for_fact` and runs `matches` on every rule it
returns, the work the stream does per fact before touching membership state. Three
installations:

* 10 rules in total (one account);
* 100,000 rules across 1,000 accounts (100 each), facts spread over all accounts;
* the same 100,000 rules, facts from one account holding 10 of them: the index should
  make this cost the same as the first, whatever the installation's size.

Run: python bench/bench_rules.py   (median of 5 runs; min and max shown)

Times are this process's CPU time (`time.process_time_ns`), so other work on a shared
machine does not count against us; memory effects do: with 100,000 rules in memory the
rules a fact reaches are rarely in the CPU cache, which shows as a higher ns/rule.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rules import FILTERS, Rule, RuleIndex, matches, parse_rule

NOW = 1_780_000_000
DAY = 86_400
RUNS = 5
FACTS_PER_RUN = 200_000


@dataclass(frozen=True, slots=True)
class BenchFact:
    fact_id: str
    filter: str
    account_id: str
    email: str
    occurred_at: int
    amount: int | None
    currency: str | None
    refund_amount: int | None
    plans: tuple[str, ...]
    start_date: int | None
    end_date: int | None


def _conditions(filter: str, variant: int) -> list[dict[str, Any]]:
    """A realistic mix: an amount, a currency, a date window, per filter extras."""
    amount = str(10 + variant % 90)
    conditions: list[dict[str, Any]] = [
        {"field": "amount", "op": "gte", "value": amount},
        {"field": "currency", "op": "in", "value": ["usd", "eur", "jpy"][: 1 + variant % 3]},
        {
            "field": "date",
            "op": "within_last",
            "value": {"count": 1 + variant % 30, "unit": "days"},
        },
    ]
    if filter == "refunded":
        conditions.append({"field": "refund_amount", "op": "gt", "value": "5"})
    if filter.startswith("subscription_"):
        conditions.append({"field": "plan", "op": "in", "value": [f"price_{variant % 7}"]})
    if variant % 4 == 0:
        conditions.append({"field": "date", "op": "after", "value": "2026-01-01"})
    return conditions


def _rule(account: str, number: int) -> Rule:
    filter = FILTERS[number % len(FILTERS)]
    return parse_rule(
        {
            "id": f"r{number}",
            "account_id": account,
            "name": f"rule {number}",
            "filter": filter,
            "conditions": _conditions(filter, number),
            "timezone": "Europe/Berlin" if number % 2 else "UTC",
        }
    )


def _facts(accounts: Sequence[str], count: int, seed: int) -> list[BenchFact]:
    rng = random.Random(seed)
    facts = []
    for number in range(count):
        filter = rng.choice(FILTERS)
        currency = rng.choice(["usd", "eur", "jpy", "gbp"])
        amount = rng.randrange(0, 20_000)
        facts.append(
            BenchFact(
                fact_id=f"f{number}",
                filter=filter,
                account_id=rng.choice(accounts),
                email=f"c{number % 500}@example.com",
                occurred_at=NOW - rng.randrange(0, 40 * DAY),
                amount=amount,
                currency=currency,
                refund_amount=amount // 2 if filter == "refunded" else None,
                plans=(f"price_{rng.randrange(7)}",) if filter.startswith("subscription_") else (),
                start_date=None,
                end_date=None,
            )
        )
    return facts


def _evaluate(index: RuleIndex, facts: Sequence[BenchFact]) -> tuple[float, int, int]:
    """ns per fact, rules evaluated, rules matched."""
    evaluated = matched = 0
    start = time.process_time_ns()
    for fact in facts:
        for rule in index.for_fact(fact.account_id, fact.filter):
            evaluated += 1
            if matches(rule, fact, NOW):
                matched += 1
    return (time.process_time_ns() - start) / len(facts), evaluated, matched


@dataclass
class Scenario:
    name: str
    build: Callable[[], tuple[RuleIndex, list[str]]]


def _uniform(accounts: int, per_account: int) -> tuple[RuleIndex, list[str]]:
    names = [f"acct{a:04d}" for a in range(accounts)]
    index = RuleIndex()
    for account in names:
        for number in range(per_account):
            index.add(_rule(account, number))
    return index, names


def _one_small_account_among_many() -> tuple[RuleIndex, list[str]]:
    index, _ = _uniform(999, 100)
    for number in range(90):  # 999 x 100 + 90 ... + the small account's 10 = 100,000
        index.add(_rule("acct0000", 100 + number))
    for number in range(10):
        index.add(_rule("small", number))
    return index, ["small"]


def measure(runs: int = RUNS) -> list[dict[str, Any]]:
    """One row per installation: ns per fact (median, min, max of `runs`), and the rest."""
    scenarios = [
        Scenario("10 rules (1 account)", lambda: _uniform(1, 10)),
        Scenario("100,000 rules (1,000 accounts x 100)", lambda: _uniform(1_000, 100)),
        Scenario("100,000 rules, fact's account has 10", _one_small_account_among_many),
    ]
    built = []
    for scenario in scenarios:
        build_start = time.perf_counter()
        index, accounts = scenario.build()
        build_s = time.perf_counter() - build_start
        facts = _facts(accounts, FACTS_PER_RUN, seed=7)
        _evaluate(index, facts[:2_000])  # warm-up
        built.append((scenario, index, facts, build_s))
    # Round-robin: run k of every installation is measured back to back, so the ratio
    # of two installations in one run is measured side by side (the machine is noisy).
    results: list[list[tuple[float, int, int]]] = [[] for _ in built]
    for _ in range(runs):
        for i, (_, index, facts, _) in enumerate(built):
            results[i].append(_evaluate(index, facts))
    rows = []
    for (scenario, index, facts, build_s), measured in zip(built, results, strict=True):
        rows.append({"installation": scenario.name, "rules": len(index), "build_s": build_s,
                     "ns_per_fact": [ns for ns, _, _ in measured],
                     "rules_per_fact": measured[0][1] / len(facts),
                     "matched_per_fact": measured[0][2] / len(facts)})
    return rows


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()
    rows = [(r["installation"], r["rules"], r["build_s"], r["ns_per_fact"],
             r["rules_per_fact"], r["matched_per_fact"]) for r in measure(args.runs)]
    base = statistics.median(rows[0][3])
    header = (
        f"{'installation':40} {'rules':>8} {'build s':>8} {'ns/fact':>9} {'min':>8} "
        f"{'max':>8} {'rules/fact':>10} {'ns/rule':>8} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, size, build_s, per_fact, evaluated, _matched in rows:
        median = statistics.median(per_fact)
        per_rule = median / evaluated if evaluated else float("nan")
        print(
            f"{name:40} {size:>8,} {build_s:>8.2f} {median:>9.0f} {min(per_fact):>8.0f} "
            f"{max(per_fact):>8.0f} {evaluated:>10.2f} {per_rule:>8.0f} {median / base:>6.2f}"
        )
    print(
        f"\nmedian of {args.runs} runs x {FACTS_PER_RUN:,} facts; ratio = ns/fact relative to the "
        f"first row; Python {sys.version.split()[0]}"
    )


if __name__ == "__main__":
    main()
