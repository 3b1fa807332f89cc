"""`segments worker`: one stream worker; run several (same settings) to scale out."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from typing import Any

from common.settings import Settings
from common.windows import history_floor_seconds

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "worker",
        help="run a stream worker (classification, membership, timers)",
        description=(
            "Runs stream/: classifies stripe.events into facts and keeps segment "
            "membership, exactly once (Kafka transactions) unless --at-least-once. Workers "
            "with the same settings share the partitions (a Kafka consumer group); add "
            "workers to scale, up to SEGMENTS_PARTITIONS. Stops cleanly (committing what "
            "it processed) on SIGTERM or Ctrl-C; exits 1 if processing fails."
        ),
    )
    parser.add_argument("--no-email-lookup", action="store_true",
                        help="never ask Stripe for a customer's email; facts wait for a "
                             "customer.* event instead")
    parser.add_argument("--no-envelope-check", action="store_true",
                        help="trust each raw event's account_id without checking it against "
                             "its stored connection (only for raw events written without a "
                             "connector, e.g. tests); by default a forged or unknown one is "
                             "dead-lettered")
    parser.add_argument("--at-least-once", action="store_true",
                        help="disable Kafka transactions (lower latency, duplicates on crash)")
    parser.add_argument("--commit-interval", type=float, default=None,
                        help="longest a transaction stays open under load, in seconds "
                             "(default 0.1; an idle partition commits at once)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus metrics (including the group's consumer "
                             "lag) on this port")
    parser.add_argument("--metrics-host", default="127.0.0.1",
                        help="interface of the metrics port (default 127.0.0.1; 0.0.0.0 "
                             "in a container)")
    parser.add_argument("--loglevel", default=None,
                        help="log level (default: SEGMENTS_LOG_LEVEL, else info)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from common.topics import WORKER_TOPICS, ensure_topics, specs_named
    from segments.email_lookup import connector_email_lookup
    from segments.envelope_check import connector_connection_accounts
    from stream.app import StreamOptions, create_app

    settings = Settings.from_env()
    root = logging.getLogger()
    if args.loglevel:
        root.setLevel(args.loglevel.upper())
    asyncio.run(ensure_topics(settings, specs_named(*WORKER_TOPICS)))
    extra = {} if args.commit_interval is None else {"commit_interval": args.commit_interval}
    options = StreamOptions(
        processing_guarantee="at_least_once" if args.at_least_once else "exactly_once",
        email_lookup=None if args.no_email_lookup else connector_email_lookup(settings),
        connection_account=(None if args.no_envelope_check
                            else connector_connection_accounts(settings)),
        history_floor_s=history_floor_seconds(os.environ),
        **extra,
    )
    app = create_app(settings, options)
    if args.metrics_port is not None:
        serve_metrics(app, settings, args.metrics_host, args.metrics_port)
    return asyncio.run(serve(app))


def serve_metrics(app: Any, settings: Settings, host: str, port: int) -> None:
    from prometheus_client import start_http_server

    from segments.lag import ConsumerLagCollector
    from stream.app import source_topics

    registry = app.segments_metrics.registry
    registry.register(ConsumerLagCollector(settings, app.group_id,
                                           source_topics(settings)))
    start_http_server(port, addr=host, registry=registry)


async def serve(app: Any) -> int:
    """Run until SIGTERM/SIGINT (a clean stop) or a processing failure (exit 1)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    log.info("worker started (group %s)", app.group_id)
    stopped = asyncio.create_task(stop.wait())
    failed = asyncio.create_task(app.wait())
    await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    try:
        if failed.done() and failed.exception() is not None:
            log.error("worker stopped: %s", failed.exception())
            return 1
        failed.cancel()
        log.info("stopping: committing what was processed")
        return 0
    finally:
        await app.stop()
