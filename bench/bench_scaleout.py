"""Scale-out: one worker against two on the same partitions, as `segments worker` runs.

    python bench/bench_scaleout.py [--contacts 20000] [--runs 3] [--json FILE]

Per run and worker count, on a fresh topic prefix: N processes of
`python -m segments.cli worker` (the production default
guarantee, exactly-once) join one consumer group; the rules (1,000 over 100 accounts)
and a first set of sentinels are published, and once every sentinel has joined and
the group is stable with N members, the events (one per contact) and the end
sentinels are produced while the workers run. Throughput is timed from the first fact
of the batch to the last sentinel's membership change.

On this machine the two workers share 2 cores with the broker and the load producer,
so the ratio shows what a second process buys here, not on a cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka.admin import AIOKafkaAdminClient

from bench import common, dataset
from bench.bench_throughput import rule_messages, sentinel_keys
from common.settings import Settings
from common.topics import EVENTS_TOPIC, FACTS_TOPIC, MEMBERSHIP_TOPIC, RULES_TOPIC

log = common.log


def cli_worker(at_least_once: bool = False) -> list[str]:
    # The bench writes raw events without a connector, so no stored connection vouches
    # for their account (the envelope check would dead-letter every one).
    return [sys.executable, "-m", "segments.cli", "worker", "--loglevel", "warning",
            "--no-envelope-check", "--no-email-lookup",
            *(["--at-least-once"] if at_least_once else [])]


async def group_members(settings: Settings) -> tuple[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        groups = await admin.describe_consumer_groups([f"{settings.topic_prefix}segments"])
        group = groups[0].groups[0]
        # (error_code, group_id, state, protocol_type, protocol, members, ...)
        return str(group[2]), len(group[5])
    finally:
        await admin.close()


async def wait_stable(settings: Settings, members: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, count = await group_members(settings)
        if state == "Stable" and count == members:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"consumer group not stable with {members} members")


async def one(workers: int, rules: list[dict[str, Any]], data: dataset.Dataset,
              workdir: Path, timeout: float, at_least_once: bool) -> dict[str, Any]:
    settings = common.fresh_settings()
    await common.prepare_topics(settings)
    env = common.worker_env(settings)
    warm = dataset.sentinels(settings.partitions, int(time.time()), tag="warm")
    await common.produce(settings, RULES_TOPIC, rule_messages([*rules, dataset.sentinel_rule()]))
    await common.produce(settings, EVENTS_TOPIC, warm)
    procs = [common.start_process(cli_worker(at_least_once),
                                  env, workdir / f"{settings.topic_prefix}w{i}.log")
             for i in range(workers)]

    def alive() -> bool:
        return all(proc.poll() is None for proc in procs)

    try:
        await common.wait_for_sentinels(settings, MEMBERSHIP_TOPIC, sentinel_keys(warm),
                                        timeout, alive=alive)
        await wait_stable(settings, workers, 120)
        await asyncio.sleep(2)  # let the last rebalance's recovery settle
        facts_start = await common.end_offsets(settings, FACTS_TOPIC)
        members_start = await common.end_offsets(settings, MEMBERSHIP_TOPIC)
        end = dataset.sentinels(settings.partitions, int(time.time()), tag="end")
        produced = await common.produce(settings, EVENTS_TOPIC, [*data.messages, *end])
        t1 = await common.wait_for_sentinels(settings, MEMBERSHIP_TOPIC, sentinel_keys(end),
                                             timeout, start=members_start, alive=alive)
        _, members_after = await group_members(settings)
    finally:
        for proc in procs:
            common.stop_process(proc)
    await common.require_no_dead_letters(settings)
    t0 = await common.first_timestamp(settings, FACTS_TOPIC, facts_start)
    return {"workers": workers, "events": produced, "seconds": t1 - t0,
            "events_per_s": produced / (t1 - t0), "members_after": members_after,
            "prefix": settings.topic_prefix}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--rules-per-account", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--at-least-once", action="store_true")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    data = dataset.events(args.contacts, args.accounts, int(time.time()), per_contact="one")
    rules = dataset.rules_for(args.accounts, args.rules_per_account)
    workdir = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    log(f"scale-out: {len(data.messages):,} events, {len(rules):,} rules; logs under {workdir}")
    runs: list[dict[str, Any]] = []
    for run in range(args.runs):
        row = {}
        for workers in (1, 2):
            result = asyncio.run(one(workers, rules, data, workdir, args.timeout,
                                     args.at_least_once))
            row[str(workers)] = result
            log(f"run {run}, {workers} worker(s): {result['events_per_s']:,.0f} events/s")
        row["ratio"] = row["2"]["events_per_s"] / row["1"]["events_per_s"]
        runs.append(row)
    summary = {
        "one_worker_events_per_s": common.summary([r["1"]["events_per_s"] for r in runs]),
        "two_workers_events_per_s": common.summary([r["2"]["events_per_s"] for r in runs]),
        "ratio_two_to_one": common.summary([r["ratio"] for r in runs]),
    }
    result = {"config": {"contacts": args.contacts, "events": len(data.messages),
                         "rules": len(rules), "partitions": common.PARTITIONS,
                         "guarantee": "at_least_once" if args.at_least_once else "exactly_once",
                         "runs": args.runs},
              "summary": summary, "runs": runs}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    print(f"1 worker {summary['one_worker_events_per_s']['median']:,.0f}/s, 2 workers "
          f"{summary['two_workers_events_per_s']['median']:,.0f}/s, ratio "
          f"{summary['ratio_two_to_one']['median']:.2f}")
    return result


if __name__ == "__main__":
    main()
