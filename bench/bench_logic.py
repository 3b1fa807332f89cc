"""The pipeline's own CPU cost per event, with no broker: the ceiling of one worker.

    python bench/bench_logic.py [--contacts 50000] [--runs 3]

Drives `stream.pipeline.Pipeline` in-process, exactly as the runtime does (batches of
up to 500 records of one partition in, an outbox of messages out, state writes taken
after each batch), over the throughput benchmark's data and rules: first classification
of every raw event, then membership of every fact it produced. No Kafka, no asyncio
waiting: what is measured is our Python (decoding, classification, dedup, rule
evaluation, state encoding). The stream's throughput cannot exceed 1 / (classify +
membership) per worker core, whatever the runtime does; comparing the two says how
much the runtime and Kafka client cost.

A run that dead-letters any record fails: a dead letter (and its log line) costs
something else than the work measured here, so the figures would mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, dataset
from bench.bench_throughput import rule_messages
from common.settings import Settings
from stream.options import StreamOptions
from stream.outbox import Outbox
from stream.partitioning import partition_for
from stream.pipeline import Pipeline

PARTITIONS = common.PARTITIONS
#: Records per batch: the runtime's fetches hand over up to this many per partition.
BATCH = 500


class Record:
    __slots__ = ("key", "offset", "partition", "topic", "value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None,
                 value: bytes | None) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key, self.value = key, value


async def feed(pipeline: Pipeline, topic: str,
               messages: list[tuple[bytes | None, bytes | None, int]]) -> Outbox:
    """Process `messages` (key, value, partition) in batches of up to BATCH records of one
    partition, in each partition's order, as the runtime hands them over after a fetch;
    the partition's state writes are taken after each batch. Returns all output."""
    out = Outbox()
    by_partition: dict[int, list[Record]] = {}
    for key, value, partition in messages:
        records = by_partition.setdefault(partition, [])
        records.append(Record(topic, partition, len(records), key, value))
    for partition, records in sorted(by_partition.items()):
        for start in range(0, len(records), BATCH):
            await pipeline.process(partition, topic, records[start:start + BATCH], out)
            pipeline.state_writes(partition, out)
    return out


def dead_letters(pipeline: Pipeline, out: Outbox) -> int:
    return sum(1 for topic, *_ in out.messages if topic == pipeline.dlq_topic)


async def one_run(data: dataset.Dataset, rules: list[dict[str, Any]]) -> dict[str, float]:
    settings = Settings(topic_prefix="logic.", partitions=PARTITIONS)
    pipeline = Pipeline(settings, StreamOptions())
    pipeline.adopt(list(range(PARTITIONS)))
    control = await feed(pipeline, settings.topic("segments.rules"),
                         [(k, v, 0) for k, v in rule_messages(rules)])
    adopted = await feed(pipeline, settings.topic("segments.control"),
                         [(k, v, partition or 0) for topic, k, v, partition, _ in control.messages
                          if topic.endswith("control")])
    dead_before = dead_letters(pipeline, control) + dead_letters(pipeline, adopted)
    events = [(k, v, partition_for(k, PARTITIONS)) for k, v in data.messages]
    started = time.perf_counter()
    out = await feed(pipeline, settings.topic("stripe.events"), events)
    classified = time.perf_counter()
    facts = [(k, v, partition_for(k or b"", PARTITIONS))
             for t, k, v, _, _ in out.messages if t == settings.topic("stripe.facts")]
    changes = await feed(pipeline, settings.topic("stripe.facts"), facts)
    done = time.perf_counter()
    joined = sum(1 for t, *_ in changes.messages if t == settings.topic("segments.membership"))
    dead = dead_before + dead_letters(pipeline, out) + dead_letters(pipeline, changes)
    return {"events": len(events), "facts": len(facts), "changes": joined,
            "dead_letters": dead,
            "classify_us_per_event": (classified - started) / len(events) * 1e6,
            "membership_us_per_fact": (done - classified) / max(1, len(facts)) * 1e6,
            "ceiling_events_per_s": len(events) / (done - started)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--rules-per-account", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    data = dataset.events(args.contacts, args.accounts, int(time.time()), per_contact="one")
    rules = dataset.rules_for(args.accounts, args.rules_per_account)
    runs = [asyncio.run(one_run(data, rules)) for _ in range(args.runs)]
    dead = [run["dead_letters"] for run in runs]
    print(f"dead letters per run: {dead}")
    if any(dead):
        raise RuntimeError(f"records were dead-lettered ({dead} per run): the figures "
                           "would time dead letters, not the pipeline's work")
    result: dict[str, Any] = {
        "config": {"contacts": args.contacts, "accounts": args.accounts, "rules": len(rules),
                   "runs": args.runs},
        "summary": {name: common.summary([r[name] for r in runs])
                    for name in ("classify_us_per_event", "membership_us_per_fact",
                                 "ceiling_events_per_s")},
        "runs": runs,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    s = result["summary"]
    print(f"classify {s['classify_us_per_event']['median']:.1f} µs/event, membership "
          f"{s['membership_us_per_fact']['median']:.1f} µs/fact: at most "
          f"{s['ceiling_events_per_s']['median']:,.0f} events/s per worker core")
    return result


if __name__ == "__main__":
    main()
