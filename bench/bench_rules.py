"""How much does it cost to find the rules one fact satisfies, as installations grow?

Two ways, each measured on every installation, round robin (run k of every
installation and method back to back, so ratios are measured side by side):

* `index`: `RuleIndex.matching(fact, now)`, the rules the fact satisfies, from the
  route's indexes (thresholds bisected, currency and plan sets looked up);
* `route`: `RuleIndex.for_fact` and `matches` on every rule it returns (one
  evaluation per rule of the fact's account and filter).

Both give the same rules (tests/unit/rules/test_index_matching.py proves it). The
installations, facts always from accounts of the stated size:

* 10 rules in total (one account), and 100 rules in total (one account);
* 100,000 rules (999 accounts with 100, one with 190, one with 10), facts from the
  account with 10; from one account with 100; from all the accounts with 100 (every
  rule of the installation in play: the CPU caches hold little of it).

The figures of the issue: 100 rules per account against 10 (the first two 100,000-rule
rows: same installation, only the fact's own account differs; goal: at most 2x the
time), and 100,000 rules in total against 10 with the fact's account at 10 (throughput
ratio, goal >= 0.9). Rules are parsed once per rule number and copied per account.

Run: python bench/bench_rules.py [--runs 5] [--facts 200000]

`--membership` measures the whole membership stage instead (see `membership_rows`):
`Pipeline.process` on the facts topic, no broker, an account with 10 rules against one
with 100, side by side in each run.

Times are this process's CPU time (`time.process_time_ns`), so other work on a shared
machine does not count against us; memory effects do: with 100,000 rules in memory the
rules a fact reaches are rarely in the CPU cache, which shows as a higher ns/rule.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_logic import feed
from bench.bench_throughput import rule_messages
from common.settings import Settings
from rules import FILTERS, Rule, RuleIndex, matches, parse_rule
from stream.facts import Fact
from stream.options import StreamOptions
from stream.pipeline import Pipeline

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


_PARSED: dict[int, Rule] = {}


def _rule(account: str, number: int) -> Rule:
    """Rule `number` of an account; parsed once per number, then copied per account."""
    parsed = _PARSED.get(number)
    if parsed is None:
        filter = FILTERS[number % len(FILTERS)]
        parsed = _PARSED[number] = parse_rule(
            {
                "id": f"r{number}",
                "account_id": "template",
                "name": f"rule {number}",
                "filter": filter,
                "conditions": _conditions(filter, number),
                "timezone": "Europe/Berlin" if number % 2 else "UTC",
            }
        )
    return replace(parsed, account_id=account)


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


def _route(index: RuleIndex, facts: Sequence[BenchFact]) -> tuple[float, int, int]:
    """One evaluation per rule of the route: ns per fact, rules evaluated, matched."""
    evaluated = matched = 0
    start = time.process_time_ns()
    for fact in facts:
        for rule in index.for_fact(fact.account_id, fact.filter):
            evaluated += 1
            if matches(rule, fact, NOW):
                matched += 1
    return (time.process_time_ns() - start) / len(facts), evaluated, matched


def _index(index: RuleIndex, facts: Sequence[BenchFact]) -> tuple[float, int, int]:
    """`RuleIndex.matching`: ns per fact, rules in the facts' routes, matched."""
    matched = 0
    matching = index.matching
    start = time.process_time_ns()
    for fact in facts:
        matched += len(matching(fact, NOW))
    elapsed = time.process_time_ns() - start
    routed = sum(len(index.for_fact(fact.account_id, fact.filter)) for fact in facts)
    return elapsed / len(facts), routed, matched


METHODS: dict[str, Callable[[RuleIndex, Sequence[BenchFact]], tuple[float, int, int]]] = {
    "index": _index,
    "route": _route,
}


def _uniform(accounts: int, per_account: int) -> RuleIndex:
    index = RuleIndex()
    for account in range(accounts):
        for number in range(per_account):
            index.add(_rule(f"acct{account:04d}", number))
    return index


def _large() -> RuleIndex:
    """100,000 rules: 999 accounts with 100 each, acct0000 with 90 more, and "small"
    with 10 (999 x 100 + 90 + 10)."""
    index = _uniform(999, 100)
    for number in range(90):
        index.add(_rule("acct0000", 100 + number))
    for number in range(10):
        index.add(_rule("small", number))
    return index


SMALL = "10 rules (1 account)"
SMALL_100 = "100 rules (1 account)"
LARGE_10 = "100,000 rules, fact's account has 10"
LARGE_100 = "100,000 rules, fact's account has 100"
SPREAD = "100,000 rules, facts of all 1,000 accounts"


def measure(runs: int = RUNS, facts_per_run: int = FACTS_PER_RUN) -> list[dict[str, Any]]:
    """One row per installation and method: ns per fact (each run), and the rest."""
    start = time.perf_counter()
    large = _large()
    large_s = time.perf_counter() - start
    start = time.perf_counter()
    small, small_100 = _uniform(1, 10), _uniform(1, 100)
    small_s = time.perf_counter() - start
    everyone = [f"acct{a:04d}" for a in range(1, 999)]
    scenarios = [  # name, index, accounts the facts come from, build seconds
        (SMALL, small, ["acct0000"], small_s),
        (SMALL_100, small_100, ["acct0000"], small_s),
        (LARGE_10, large, ["small"], large_s),
        (LARGE_100, large, ["acct0500"], large_s),
        (SPREAD, large, everyone, large_s),
    ]
    built = []
    for name, index, accounts, build_s in scenarios:
        facts = _facts(accounts, facts_per_run, seed=7)
        for method in METHODS.values():  # warm-up: compiles the index's routes
            method(index, facts)
        built.append((name, index, facts, build_s))
    # Round-robin: run k of every installation and method is measured back to back, so
    # the ratio of two installations in one run is measured side by side.
    results: dict[tuple[int, str], list[tuple[float, int, int]]] = {}
    for _ in range(runs):
        for i, (_, index, facts, _) in enumerate(built):
            for method_name, method in METHODS.items():
                results.setdefault((i, method_name), []).append(method(index, facts))
    rows = []
    for i, (name, index, facts, build_s) in enumerate(built):
        for method_name in METHODS:
            measured = results[(i, method_name)]
            rows.append({"installation": name, "method": method_name, "rules": len(index),
                         "build_s": build_s, "ns_per_fact": [ns for ns, _, _ in measured],
                         "rules_per_fact": measured[0][1] / len(facts),
                         "matched_per_fact": measured[0][2] / len(facts)})
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's ratios, per run (side by side), for both methods."""
    def ns(installation: str, method: str) -> list[float]:
        for row in rows:
            if row["installation"] == installation and row["method"] == method:
                return list(row["ns_per_fact"])
        raise KeyError(installation)

    def ratios(a: list[float], b: list[float]) -> list[float]:
        return [x / y for x, y in zip(a, b, strict=True)]

    out: dict[str, Any] = {}
    for method in METHODS:
        out[method] = {
            "ns_per_fact": {name: _summary(ns(name, method))
                            for name in (SMALL, SMALL_100, LARGE_10, LARGE_100, SPREAD)},
            # time with 100 rules in the fact's account / with 10, same installation
            # (goal <= 2)
            "time_ratio_100_to_10_per_account": _summary(
                ratios(ns(LARGE_100, method), ns(LARGE_10, method))),
            "time_ratio_100_to_10_one_account": _summary(
                ratios(ns(SMALL_100, method), ns(SMALL, method))),
            # every account active: the whole installation is the working set
            "time_ratio_spread_to_10_per_account": _summary(
                ratios(ns(SPREAD, method), ns(LARGE_10, method))),
            # throughput with 100,000 rules / with 10 (goal >= 0.9)
            "throughput_ratio_100k_to_10": _summary(
                ratios(ns(SMALL, method), ns(LARGE_10, method))),
        }
    return out


def _summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}


# --- the membership stage: facts through the pipeline, 10 vs 100 rules per account ----

MEMBERSHIP_CONTACTS = 1_000
MEMBERSHIP_FACTS = 20_000


def _membership_facts(account: str, count: int, seed: int) -> list[Fact]:
    """`2 * count` facts of one account's contacts: the first half builds their
    histories (untimed), the second is timed. One in ten amends an earlier fact of its
    contact (same fact id, another amount: a refund updated, a charge re-announced)."""
    rng = random.Random(seed)
    facts: list[Fact] = []
    earlier: dict[int, list[Fact]] = {}
    for number in range(2 * count):
        contact = rng.randrange(MEMBERSHIP_CONTACTS)
        amount = rng.randrange(0, 20_000)
        held = earlier.setdefault(contact, [])
        if held and rng.random() < 0.1:
            old = rng.choice(held)
            facts.append(replace(old, amount=amount,
                                 refund_amount=amount // 2 if old.refund_amount else None))
            continue
        filter = rng.choice(FILTERS)
        fact = Fact(fact_id=f"f{number}", filter=filter, account_id=account,
                    connection_id="conn", email=f"c{contact}@example.com",
                    occurred_at=NOW - rng.randrange(0, 30 * DAY), amount=amount,
                    currency=rng.choice(["usd", "eur", "jpy", "gbp"]),
                    refund_amount=amount // 2 if filter == "refunded" else None,
                    plans=((f"price_{rng.randrange(7)}",) if filter.startswith("subscription_")
                           else ()))
        held.append(fact)
        facts.append(fact)
    return facts


def _membership_run(per_account: int, facts: Sequence[Fact]) -> tuple[float, int]:
    """A fresh pipeline with one account of `per_account` rules: the first half of
    `facts` untimed, the second timed. CPU µs per timed fact, changes published."""
    settings = Settings(topic_prefix="membership.", partitions=1)
    pipeline = Pipeline(settings, StreamOptions(clock=lambda: NOW))
    pipeline.adopt([0])
    docs = [dict(_rule(facts[0].account_id, n).to_dict()) for n in range(per_account)]
    control = asyncio.run(feed(pipeline, settings.topic("segments.rules"),
                               [(k, v, 0) for k, v in rule_messages(docs)]))
    asyncio.run(feed(pipeline, settings.topic("segments.control"),
                     [(k, v, 0) for t, k, v, _, _ in control.messages
                      if t.endswith("control")]))
    encoded = [(fact.key(), fact.to_bytes(), 0) for fact in facts]
    half = len(encoded) // 2
    asyncio.run(feed(pipeline, settings.topic("stripe.facts"), encoded[:half]))
    start = time.process_time_ns()
    out = asyncio.run(feed(pipeline, settings.topic("stripe.facts"), encoded[half:]))
    elapsed = time.process_time_ns() - start
    changes = sum(1 for t, *_ in out.messages if t == settings.topic("segments.membership"))
    return elapsed / (len(encoded) - half) / 1000, changes


def membership_rows(runs: int, facts_per_run: int) -> dict[str, Any]:
    """µs per fact with 10 and with 100 rules in the fact's account, run k of both back
    to back (alternating which goes first), and their ratio per run (goal <= 2)."""
    facts = _membership_facts("acme", facts_per_run, seed=11)
    times: dict[int, list[float]] = {10: [], 100: []}
    changes: dict[int, int] = {}
    for run in range(runs + 1):  # run 0 warms up (imports, parsing, caches)
        for per_account in ((10, 100) if run % 2 else (100, 10)):
            us, changes[per_account] = _membership_run(per_account, facts)
            if run:
                times[per_account].append(us)
    ratios = [a / b for a, b in zip(times[100], times[10], strict=True)]
    return {"us_per_fact": {n: _summary(t) for n, t in times.items()},
            "changes": changes, "ratio_100_to_10": _summary(ratios)}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--facts", type=int, default=FACTS_PER_RUN, help="facts per run")
    parser.add_argument("--membership", action="store_true",
                        help="the membership stage, 10 vs 100 rules per account")
    args = parser.parse_args()
    if args.membership:
        facts = args.facts if args.facts != FACTS_PER_RUN else MEMBERSHIP_FACTS
        result = membership_rows(args.runs, facts)
        for n, s in result["us_per_fact"].items():
            print(f"membership, {n:>3} rules per account: {s['median']:7.1f} µs/fact CPU "
                  f"(min {s['min']:.1f}, max {s['max']:.1f}), "
                  f"{result['changes'][n]:,} changes")
        r = result["ratio_100_to_10"]
        print(f"ratio 100/10: median {r['median']:.2f} (min {r['min']:.2f}, max "
              f"{r['max']:.2f}; goal <= 2), runs {[round(x, 2) for x in r['runs']]}; "
              f"median of {args.runs} runs x {facts:,} timed facts after {facts:,} untimed")
        return
    rows = measure(args.runs, args.facts)
    header = (
        f"{'installation':40} {'method':6} {'rules':>8} {'build s':>8} {'ns/fact':>9} "
        f"{'min':>8} {'max':>8} {'routed':>7} {'matched':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        per_fact = r["ns_per_fact"]
        print(
            f"{r['installation']:40} {r['method']:6} {r['rules']:>8,} {r['build_s']:>8.2f} "
            f"{statistics.median(per_fact):>9.0f} {min(per_fact):>8.0f} {max(per_fact):>8.0f} "
            f"{r['rules_per_fact']:>7.2f} {r['matched_per_fact']:>7.2f}"
        )
    for method, s in summarise(rows).items():
        print(f"{method}: time 100/10 rules per account "
              f"{s['time_ratio_100_to_10_per_account']['median']:.2f} (goal <= 2), "
              f"one account {s['time_ratio_100_to_10_one_account']['median']:.2f}, "
              f"facts of every account {s['time_ratio_spread_to_10_per_account']['median']:.2f};"
              f" "
              f"throughput 100,000/10 rules {s['throughput_ratio_100k_to_10']['median']:.2f} "
              f"(goal >= 0.9)")
    print(
        f"\nmedian of {args.runs} runs x {args.facts:,} facts; routed = rules of the fact's "
        f"account and filter; Python {sys.version.split()[0]}"
    )


if __name__ == "__main__":
    main()
