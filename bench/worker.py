"""A stream worker for the benchmarks: `segments worker` with every StreamOptions knob.

    python bench/worker.py --guarantee at_least_once --commit-interval 0.1 [--classify-only]

Settings come from the environment exactly as for `segments worker`
(KAFKA_BOOTSTRAP_SERVERS, SEGMENTS_TOPIC_PREFIX, SEGMENTS_PARTITIONS); topics must exist.
The worker logs at WARNING so that logging costs nothing in the measurement; SIGTERM
stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def count_requests() -> None:
    """Count the requests the worker's Kafka clients send, by type, with their bytes."""
    import collections
    import threading
    import time

    from aiokafka.conn import AIOKafkaConnection

    counts: collections.Counter[str] = collections.Counter()
    original = AIOKafkaConnection.send

    def send(self: object, request: object, expect_response: bool = True) -> object:
        counts[type(request).__name__] += 1
        return original(self, request, expect_response)

    AIOKafkaConnection.send = send

    def report() -> None:
        while True:
            time.sleep(5)
            print(f"requests {time.time():.0f} {dict(counts)}", file=sys.stderr, flush=True)

    threading.Thread(target=report, daemon=True).start()


def gc_stats() -> None:
    """Log the seconds spent in garbage collections, by generation, every 5 s."""
    import gc
    import threading
    import time

    spent = [0.0, 0.0, 0.0]
    runs = [0, 0, 0]
    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            spent[info["generation"]] += time.perf_counter() - started[0]
            runs[info["generation"]] += 1

    gc.callbacks.append(callback)

    def report() -> None:
        while True:
            time.sleep(5)
            print(f"gc {time.time():.0f} seconds {[round(x, 2) for x in spent]} runs {runs} "
                  f"tracked {len(gc.get_objects())}", file=sys.stderr, flush=True)

    threading.Thread(target=report, daemon=True).start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guarantee", choices=("exactly_once", "at_least_once"),
                        default="exactly_once")
    parser.add_argument("--commit-interval", type=float, default=None)
    parser.add_argument("--classify-only", action="store_true",
                        help="run the classification stage alone")
    parser.add_argument("--loglevel", default="warning")
    args = parser.parse_args()
    if os.environ.get("BENCH_COUNT_REQUESTS"):  # experiment: log Kafka requests by type
        count_requests()
    if os.environ.get("BENCH_GC_STATS"):  # experiment: log time spent in the collector
        gc_stats()

    from common.settings import Settings
    from segments.commands.worker import serve
    from stream.app import StreamOptions, create_app

    logging.basicConfig(level=args.loglevel.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    extra: dict[str, float] = {}
    if args.commit_interval is not None:
        extra["commit_interval"] = args.commit_interval
    if os.environ.get("BENCH_LINGER_MS"):  # experiment: the producers' linger
        extra["linger_ms"] = int(os.environ["BENCH_LINGER_MS"])
    options = StreamOptions(processing_guarantee=args.guarantee,
                            membership=not args.classify_only, **extra)
    return asyncio.run(serve(create_app(Settings.from_env(), options)))


if __name__ == "__main__":
    sys.exit(main())
