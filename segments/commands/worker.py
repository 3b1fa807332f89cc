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
                        help="Faust's store (default memory://); the agents keep their state "
                             "in memory with their own changelogs, so this rarely matters")
    parser.add_argument("--no-email-lookup", action="store_true",
                        help="never ask Stripe for a customer's email; facts wait for a "
                             "customer.* event instead")
    parser.add_argument("--at-least-once", action="store_true",
                        help="disable Kafka transactions (lower latency, duplicates on crash)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus metrics (including the group's consumer "
                             "lag) on this port")
    parser.add_argument("--metrics-host", default="127.0.0.1",
                        help="interface of the metrics port (default 127.0.0.1; 0.0.0.0 "
                             "in a container)")
    parser.add_argument("--loglevel", default=None,
                        help="log level (default: SEGMENTS_LOG_LEVEL, else info)")
    parser.set_defaults(func=run)


def source_topics(settings: Settings) -> list[str]:
    """The topics the worker's consumer group reads (its lag is measured on them)."""
    from connectors.contract import EVENTS_TOPIC
    from stream.app import CONTROL_TOPIC
    from stream.changes import RULES_TOPIC
    from stream.facts import FACTS_TOPIC

    return [settings.topic(t) for t in (EVENTS_TOPIC, FACTS_TOPIC, CONTROL_TOPIC, RULES_TOPIC)]


def run(args: argparse.Namespace) -> int:
    import faust

    from segments.email_lookup import connector_email_lookup
    from segments.lag import ConsumerLagCollector
    from segments.topics import ensure_topics
    from stream.app import StreamOptions, create_app

    settings = Settings.from_env()
    root = logging.getLogger()
    if args.loglevel:
        root.setLevel(args.loglevel.upper())
    asyncio.run(ensure_topics(settings))
    options = StreamOptions(
        processing_guarantee="at_least_once" if args.at_least_once else "exactly_once",
        store=args.store,
        datadir=args.datadir,
        email_lookup=None if args.no_email_lookup else connector_email_lookup(settings),
    )
    app = create_app(settings, options)
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        registry = app.segments_metrics.registry
        registry.register(ConsumerLagCollector(settings.kafka_bootstrap_servers, app.conf.id,
                                               source_topics(settings)))
        start_http_server(args.metrics_port, addr=args.metrics_host, registry=registry)
    # Logging stays as `segments.logs` set it (JSON or text), not Faust's colour logs.
    worker = faust.Worker(app, loglevel=logging.getLevelName(root.level).lower(),
                          override_logging=False)
    worker.execute_from_commandline()
    return 0
