"""Classification alone: facts/s of the classify stage against a bare parse loop.

    python bench/bench_classify.py [--contacts 100000] [--accounts 100] [--runs 3]
        [--per-contact one|story] [--guarantee at_least_once|exactly_once] [--json FILE]

Per run, on a fresh topic prefix: the events (one per contact, or each contact's
30-day story) and the end sentinels are produced to `stripe.events`; a worker running
only the classification stage (`bench/worker.py --classify-only`: no membership, no
rules) is started and timed from its first fact (record timestamp on `stripe.facts`)
to the last sentinel's fact; then `bench/bare_consume.py` (aiokafka consume + orjson
parse, nothing else) reads the same messages in the same run. Figures: facts/s,
events/s, and events/s as a ratio to the bare loop, median of the runs with min/max.
A run whose worker dead-letters anything fails (`common.require_no_dead_letters`).
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

from bench import common, dataset
from bench.bench_throughput import bare, sentinel_keys
from common.settings import Settings
from common.topics import EVENTS_TOPIC, FACTS_TOPIC

log = common.log


def is_fact(record: Any) -> bool:
    return record.value is not None


async def facts_between(settings: Settings, start: dict[int, int]) -> int:
    """Facts written since `start` (read, not subtracted: transactions leave markers)."""
    end = await common.end_offsets(settings, FACTS_TOPIC)
    count = 0
    deadline = time.monotonic() + 300
    async with common.TopicReader(settings, FACTS_TOPIC, start) as reader:
        assert reader.consumer is not None
        consumer = reader.consumer

        async def behind() -> bool:
            for tp in consumer.assignment():
                if await consumer.position(tp) < end[tp.partition]:
                    return True
            return False

        while await behind():
            if time.monotonic() > deadline:
                raise TimeoutError("facts not read to their end within 300 s")
            count += len(await reader.batch())
    return count


async def one_run(args: argparse.Namespace, data: dataset.Dataset, run: int,
                  workdir: Path) -> dict[str, Any]:
    settings = common.fresh_settings()
    await common.prepare_topics(settings)
    end = dataset.sentinels(settings.partitions, int(time.time()), tag="end")
    facts_start = await common.end_offsets(settings, FACTS_TOPIC)
    produced = await common.produce(settings, EVENTS_TOPIC, [*data.messages, *end])
    env = common.worker_env(settings)
    cmd = common.bench_worker_cmd(args.guarantee, membership=False)
    proc = common.start_process(cmd, env, workdir / f"classify{run}.log")
    try:
        t1 = await common.wait_for_sentinels(settings, FACTS_TOPIC, sentinel_keys(end),
                                             args.timeout, start=facts_start,
                                             alive=lambda: proc.poll() is None, match=is_fact)
    finally:
        common.stop_process(proc)
    await common.require_no_dead_letters(settings)
    t0 = await common.first_timestamp(settings, FACTS_TOPIC, facts_start)
    facts = await facts_between(settings, facts_start)
    base = bare(settings, produced, args.timeout)
    seconds = t1 - t0
    result = {"events": produced, "facts": facts, "seconds": seconds,
              "events_per_s": produced / seconds, "facts_per_s": facts / seconds,
              "bare": base, "ratio_bare": produced / seconds / base["events_per_s"],
              "prefix": settings.topic_prefix}
    log(f"run {run}: classify {result['events_per_s']:,.0f} events/s "
        f"({result['facts_per_s']:,.0f} facts/s), bare {base['events_per_s']:,.0f}/s, "
        f"ratio {result['ratio_bare']:.3f}")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--per-contact", choices=("one", "story"), default="one")
    parser.add_argument("--guarantee", choices=("exactly_once", "at_least_once"),
                        default="at_least_once")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    data = dataset.events(args.contacts, args.accounts, int(time.time()),
                          per_contact=args.per_contact)
    log(f"dataset: {len(data.messages):,} events for {args.contacts:,} contacts")
    workdir = Path(tempfile.mkdtemp(prefix="bench-classify-"))
    runs = [asyncio.run(one_run(args, data, run, workdir)) for run in range(args.runs)]
    result: dict[str, Any] = {
        "config": {"contacts": args.contacts, "accounts": args.accounts,
                   "events": len(data.messages), "guarantee": args.guarantee,
                   "partitions": common.PARTITIONS, "runs": args.runs},
        "summary": {
            "events_per_s": common.summary([r["events_per_s"] for r in runs]),
            "facts_per_s": common.summary([r["facts_per_s"] for r in runs]),
            "bare_events_per_s": common.summary([r["bare"]["events_per_s"] for r in runs]),
            "ratio_to_bare": common.summary([r["ratio_bare"] for r in runs]),
        },
        "runs": runs,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    s = result["summary"]
    print(f"classify ({args.guarantee}): {s['events_per_s']['median']:,.0f} events/s, "
          f"{s['facts_per_s']['median']:,.0f} facts/s, bare "
          f"{s['bare_events_per_s']['median']:,.0f}/s, ratio "
          f"{s['ratio_to_bare']['median']:.3f} (min {s['ratio_to_bare']['min']:.3f}, "
          f"max {s['ratio_to_bare']['max']:.3f})")
    return result


if __name__ == "__main__":
    main()
