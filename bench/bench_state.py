"""Memory per 100,000 contacts with 30-day histories, and recomputing a new rule over them.

    python bench/bench_state.py [--contacts 100000] [--facts-per-contact 2] [--runs 3]
        [--json FILE]

On a fresh topic prefix, with one worker (`bench/worker.py`, at-least-once, memory://
state) and one account holding every contact and 10 rules:

1. baseline: the worker applies the rules and answers a first set of sentinels; its
   RSS then is the empty-state baseline;
2. build: each contact's 30-day history (facts spanning its story in the last 30 days:
   charges, failures, refunds, subscriptions; `--facts-per-contact` of them, first and
   last first) is produced to `stripe.facts`, the membership stream's input contract,
   followed by a second sentinel set; once every sentinel has joined, every fact is held.
3. recompute, `--runs` times: a new rule over the account (`charge_succeeded`, amount
   >= 10 + i, within the last 30 days) is published, then a sentinel rule; the time
   from publishing the rule
   to the last sentinel contact joining the sentinel rule's segment is the time to
   recompute the new segment over every contact's history (each membership partition
   applies rule changes in order, so the sentinel rule lands after the new rule's
   recompute on every partition), joins published included. RSS is sampled after
   each: (RSS - baseline) scaled to 100,000 contacts is the memory figure.

The state is built once (it is the longest step) and each recompute is a run.

The history is built through the facts topic rather than raw events only to keep the
run short: classification is measured by the throughput benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, dataset
from bench.bench_throughput import rule_messages, sentinel_keys
from common.topics import EVENTS_TOPIC, FACTS_TOPIC, MEMBERSHIP_TOPIC, RULES_TOPIC
from stream.classify import classify
from stream.facts import Fact

log = common.log
ACCOUNT = "big"


def histories(contacts: int, per_contact: int, now: int) -> list[dataset.Message]:
    """Facts of every contact's story, as the classify stream would publish them."""
    return list(iter_histories(contacts, per_contact, now))


def iter_histories(contacts: int, per_contact: int, now: int) -> Iterator[dataset.Message]:
    """`histories`, one contact at a time: 1,000,000 contacts' raw events and facts held
    at once do not fit in memory (the bench process reached 23 GiB)."""
    account = dataset.account_name(0)
    connection = dataset.connection_name(account)
    feed = dataset.BenchActivity(dataset.SEED, now)
    for n in range(contacts):
        emails: dict[str, str] = {}
        facts: dict[str, dict[str, Fact]] = {}
        for event in feed.customer_story(n):
            obj = event["data"]["object"]
            if event["type"] == "customer.created":
                emails[obj["id"]] = obj["email"]
                continue
            for occ in classify(event):
                email = (occ.email_candidates[0] if occ.email_candidates
                         else emails.get(occ.customer_id or ""))
                if email is None:
                    continue
                fact = occ.to_fact(ACCOUNT, connection, email)
                facts.setdefault(email, {})[fact.fact_id] = fact
        for by_id in facts.values():
            ordered = sorted(by_id.values(), key=lambda f: f.occurred_at)
            kept = ordered if len(ordered) <= per_contact else (
                [ordered[0], ordered[-1], *ordered[1:-1]][:per_contact])
            yield from ((fact.key(), fact.to_bytes()) for fact in kept)


def recompute_rule(i: int) -> dict[str, Any]:
    """The i-th new rule: each a different segment over the same histories."""
    return {"id": f"new-rule-{i}", "account_id": ACCOUNT, "name": f"paid {10 + i}+ in 30 days",
            "filter": "charge_succeeded",
            "conditions": [{"field": "amount", "op": "gte", "value": str(10 + i)},
                           {"field": "date", "op": "within_last",
                            "value": {"count": 30, "unit": "days"}}],
            "timezone": "UTC"}


async def build_and_recompute(args: argparse.Namespace, facts: list[dataset.Message],
                              workdir: Path) -> dict[str, Any]:
    run = 0
    settings = common.fresh_settings()
    await common.prepare_topics(settings)
    rules = [dataset.rule_doc(ACCOUNT, n) for n in range(10)]
    await common.produce(settings, RULES_TOPIC, rule_messages([*rules, dataset.sentinel_rule()]))
    first = dataset.sentinels(settings.partitions, int(time.time()), tag=f"first{run}-")
    await common.produce(settings, EVENTS_TOPIC, first)
    cmd = common.bench_worker_cmd("at_least_once")
    proc = common.start_process(cmd, common.worker_env(settings), workdir / f"w{run}.log")

    def alive() -> bool:
        return proc.poll() is None

    try:
        await common.wait_for_sentinels(settings, MEMBERSHIP_TOPIC, sentinel_keys(first),
                                        args.timeout, alive=alive)
        await asyncio.sleep(2)
        baseline = common.rss_bytes(proc.pid)
        started = time.perf_counter()
        ready = dataset.sentinels(settings.partitions, int(time.time()), tag=f"ready{run}-")
        await common.produce(settings, FACTS_TOPIC, facts)
        await common.produce(settings, EVENTS_TOPIC, ready)
        await common.wait_for_sentinels(settings, MEMBERSHIP_TOPIC, sentinel_keys(ready),
                                        args.timeout, alive=alive)
        build_s = time.perf_counter() - started
        await asyncio.sleep(3)
        held = common.rss_bytes(proc.pid)
        log(f"run {run}: built {len(facts):,} facts in {build_s:.1f}s; RSS "
            f"{baseline / 2**20:.0f} -> {held / 2**20:.0f} MiB")

        recomputes = []
        for i in range(args.runs):
            members_start = await common.end_offsets(settings, MEMBERSHIP_TOPIC)
            rule = recompute_rule(i)
            marker = {**dataset.sentinel_rule(), "id": f"after-{rule['id']}"}
            begin = time.time()
            await common.produce(settings, RULES_TOPIC, rule_messages([rule, marker]))
            end = await common.wait_for_sentinels(
                settings, MEMBERSHIP_TOPIC, sentinel_keys(ready), args.timeout,
                start=members_start, alive=alive, segment=marker["id"])
            joins = await count_joins(settings, members_start, rule["id"])
            await asyncio.sleep(1)
            rss = common.rss_bytes(proc.pid)
            recomputes.append({"rule": rule["id"], "seconds": end - begin, "joins": joins,
                               "rss_bytes": rss,
                               "rss_per_100k_contacts_bytes":
                                   (rss - baseline) * 100_000 / args.contacts})
            log(f"recompute {i}: {end - begin:.1f}s over {args.contacts:,} contacts "
                f"({joins:,} joined); RSS {rss / 2**20:.0f} MiB")
    finally:
        common.stop_process(proc)
    return {"prefix": settings.topic_prefix, "facts": len(facts), "build_s": build_s,
            "rss_baseline_bytes": baseline, "rss_held_bytes": held,
            "recomputes": recomputes}


async def count_joins(settings: Any, start: dict[int, int], segment: str) -> int:
    needle = f'"segment_id":"{segment}"'.encode()
    count = 0
    async with common.TopicReader(settings, MEMBERSHIP_TOPIC, start) as reader:
        assert reader.consumer is not None
        tps = list(reader.consumer.assignment())
        ends = await reader.consumer.end_offsets(tps)
        while [tp for tp in tps if await reader.consumer.position(tp) < ends[tp]]:
            count += sum(1 for r in await reader.batch() if needle in (r.value or b""))
    return count


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--facts-per-contact", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3,
                        help="new rules recomputed, one after another, on the built state")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    facts = histories(args.contacts, args.facts_per_contact, int(time.time()))
    workdir = Path(tempfile.mkdtemp(prefix="bench-state-"))
    log(f"state: {args.contacts:,} contacts, {len(facts):,} facts; logs under {workdir}")
    run = asyncio.run(build_and_recompute(args, facts, workdir))
    recomputes = run["recomputes"]
    summary = {
        "rss_per_100k_contacts_mib": common.summary(
            [r["rss_per_100k_contacts_bytes"] / 2**20 for r in recomputes]),
        "recompute_s": common.summary([r["seconds"] for r in recomputes]),
        "recompute_joins": common.summary([r["joins"] for r in recomputes]),
        "build_facts_per_s": common.summary([len(facts) / run["build_s"]]),
    }
    result = {"config": {"contacts": args.contacts, "facts": len(facts),
                         "facts_per_contact": args.facts_per_contact,
                         "partitions": common.PARTITIONS, "runs": args.runs,
                         "guarantee": "at_least_once", "store": "memory://"},
              "summary": summary, "run": run}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    print(f"RSS per 100,000 contacts {summary['rss_per_100k_contacts_mib']['median']:.0f} MiB;"
          f" recompute {summary['recompute_s']['median']:.1f}s")
    return result


if __name__ == "__main__":
    main()
