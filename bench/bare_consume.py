"""The physical limit: a bare aiokafka consume + orjson parse loop, nothing else.

    python bench/bare_consume.py --topic PREFIX.stripe.events --count N

Reads every partition of the topic from the beginning (no consumer group, no commits)
and parses each value with orjson, until N records were seen. Prints one JSON line:
`{"events": N, "seconds": S, "events_per_s": R, "last_epoch": T}`: S from the first
record received to the last one parsed, T the wall time (epoch seconds) of the last one.
With `--ready-file F` it writes F once its partitions are assigned, so that a harness can
offer the input only then and time it by its own clock, from the first record offered
to T (`bench/bench_throughput.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition


async def consume(bootstrap: str, topic: str, count: int, timeout: float,
                  ready_file: str | None = None) -> dict[str, float]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = consumer._client.cluster.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        if ready_file:
            await asyncio.gather(*(consumer.position(tp) for tp in tps))
            Path(ready_file).write_text("ready\n")  # noqa: ASYNC240 (before the timing)
        seen = 0
        parsed_bytes = 0
        started = 0.0
        deadline = time.monotonic() + timeout
        while seen < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"saw {seen} of {count} records")
            batch = await consumer.getmany(timeout_ms=500)
            if batch and not started:
                started = time.perf_counter()
            for records in batch.values():
                for record in records:
                    doc = orjson.loads(record.value)
                    parsed_bytes += len(doc)
                    seen += 1
        elapsed = time.perf_counter() - started
        last_epoch = time.time()
    finally:
        await consumer.stop()
    return {"events": seen, "seconds": elapsed, "events_per_s": seen / elapsed,
            "last_epoch": last_epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--ready-file", default=None)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "localhost:9092"
    print(json.dumps(asyncio.run(consume(bootstrap, args.topic, args.count, args.timeout,
                                         args.ready_file))))


if __name__ == "__main__":
    main()
