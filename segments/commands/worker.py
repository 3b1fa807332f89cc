"""`segments worker`: one Faust worker; run several (same settings) to scale out."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from segments.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "worker",
        help="run a stream worker (classification, membership, timers)",
        description=(
            "Runs the Faust app of stream/: classifies stripe.events into facts and keeps "
            "segment membership. Workers with the same settings share the partitions "
            "(a Kafka consumer group); add workers to scale, up to SEGMENTS_PARTITIONS."
        ),
    )
    parser.add_argument("--datadir", default=None,
                        help="table storage directory (default: SEGMENTS_DATADIR or "
                             ".stack/worker-data); give each worker on one host its own")
    parser.add_argument("--store", default=None,
                        help="faust table store: rocksdb:// (default when rocksdict is "
                             "installed) or memory:// (recovers from the changelog)")
    parser.add_argument("--at-least-once", action="store_true",
                        help="disable Kafka transactions (lower latency, duplicates on crash)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus metrics on this port (127.0.0.1)")
    parser.add_argument("--loglevel", default="info")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import faust

    from segments.topics import ensure_topics
    from stream.app import StreamOptions, create_app

    settings = Settings.from_env()
    logging.basicConfig(level=args.loglevel.upper())
    asyncio.run(ensure_topics(settings))
    options = StreamOptions(
        processing_guarantee="at_least_once" if args.at_least_once else "exactly_once",
        store=args.store,
        datadir=args.datadir,
    )
    app = create_app(settings, options)
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr="127.0.0.1",
                          registry=app.segments_metrics.registry)
    worker = faust.Worker(app, loglevel=args.loglevel)
    worker.execute_from_commandline()
    return 0
