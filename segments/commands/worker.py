"""`segments worker`: one stream worker; run several (same settings) to scale out."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from typing import Any

from common.settings import Settings, SettingsError, env_float, env_int
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
            "it processed) on SIGTERM or Ctrl-C; exits 1 if processing fails. SIGUSR1 "
            "logs where each of its asyncio tasks waits (for a worker that stopped "
            "making progress)."
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
    parser.add_argument("--session-timeout", type=float, default=None,
                        help="seconds the group waits for a worker that stopped answering "
                             "before moving its partitions (default: "
                             "SEGMENTS_SESSION_TIMEOUT_S, else 30; 6 to 1800). Lower "
                             "takes over from a killed worker sooner; higher keeps a "
                             "worker whose event loop is busy (a large recovery on a "
                             "loaded machine) in the group")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus metrics (including the group's consumer "
                             "lag) on this port")
    parser.add_argument("--metrics-host", default="127.0.0.1",
                        help="interface of the metrics port (default 127.0.0.1; 0.0.0.0 "
                             "in a container)")
    parser.add_argument("--query-port", type=int, default=None,
                        help="port of the worker's query endpoint, which serves preview "
                             "and explain over the partitions it owns (default: "
                             "SEGMENTS_WORKER_QUERY_PORT, else any free port; it is "
                             "advertised in Redis)")
    parser.add_argument("--query-host",
                        default=os.environ.get("SEGMENTS_WORKER_QUERY_HOST") or "127.0.0.1",
                        help="interface of the query endpoint (default: "
                             "SEGMENTS_WORKER_QUERY_HOST, else 127.0.0.1)")
    parser.add_argument("--query-advertised-host",
                        default=os.environ.get("SEGMENTS_WORKER_QUERY_ADVERTISED_HOST"),
                        help="host name the query API reaches this worker by (default: "
                             "the query host, or this machine's name when it is 0.0.0.0)")
    parser.add_argument("--no-query", action="store_true",
                        help="serve no queries (preview and explain then answer 503)")
    parser.add_argument("--loglevel", default=None,
                        help="log level (default: SEGMENTS_LOG_LEVEL, else info)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from common.auth import AuthConfigError, resolve_verifier
    from common.topics import WORKER_TOPICS, ensure_topics, specs_named
    from segments.email_lookup import connector_email_lookup
    from segments.envelope_check import connector_connection_accounts
    from stream.app import StreamOptions, create_app

    settings = Settings.from_env()
    # Environment defaults are read here, not when the parser is built: a bad value
    # then fails this command with its name, not every command's --help.
    session_timeout = (args.session_timeout if args.session_timeout is not None
                       else env_float(os.environ, "SEGMENTS_SESSION_TIMEOUT_S", 30.0))
    query_port = (args.query_port if args.query_port is not None
                  else env_int(os.environ, "SEGMENTS_WORKER_QUERY_PORT", 0))
    history_floor_s = history_floor_seconds(os.environ)
    root = logging.getLogger()
    if args.loglevel:
        root.setLevel(args.loglevel.upper())
    extra = {} if args.commit_interval is None else {"commit_interval": args.commit_interval}
    try:
        options = StreamOptions(
            processing_guarantee="at_least_once" if args.at_least_once else "exactly_once",
            email_lookup=None if args.no_email_lookup else connector_email_lookup(settings),
            connection_account=(None if args.no_envelope_check
                                else connector_connection_accounts(settings)),
            history_floor_s=history_floor_s,
            session_timeout_s=session_timeout,
            **extra,
        )
    except ValueError as exc:  # out of range: before touching Kafka, no traceback
        raise SettingsError(f"{exc} (--session-timeout or SEGMENTS_SESSION_TIMEOUT_S, "
                            f"--commit-interval)") from None
    asyncio.run(ensure_topics(settings, specs_named(*WORKER_TOPICS)))
    app = create_app(settings, options)
    verifier = None
    if not args.no_query:
        try:
            verifier = resolve_verifier(settings)
        except AuthConfigError as exc:
            log.error("cannot start: %s", exc)
            return 2
    metrics: tuple[Any, str, int] | None = None
    if args.metrics_port is not None:
        metrics = metrics_app(app, settings), args.metrics_host, args.metrics_port
    query = None if verifier is None else {
        "verifier": verifier, "host": args.query_host, "port": query_port,
        "advertised_host": args.query_advertised_host}
    return asyncio.run(serve(app, metrics, settings, query))


def metrics_app(app: Any, settings: Settings) -> Any:
    """`GET /metrics` of the worker (its registry plus the group's consumer lag), with
    the limits of every server of ours (`common.http`)."""
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from common.http import application, expect_handler
    from segments.lag import ConsumerLagCollector
    from stream.app import source_topics

    registry = app.metrics.registry
    registry.register(ConsumerLagCollector(settings, app.group_id,
                                           source_topics(settings)))

    async def metrics(request: web.Request) -> web.Response:
        # Collecting asks Kafka for the lag (blocking): off the event loop.
        body = await asyncio.get_running_loop().run_in_executor(
            None, generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    server = application()
    server.router.add_get("/metrics", metrics, expect_handler=expect_handler)
    return server


async def serve(app: Any, metrics: tuple[Any, str, int] | None = None,
                settings: Settings | None = None, query: dict[str, Any] | None = None) -> int:
    """Run until SIGTERM/SIGINT (a clean stop) or a processing failure (exit 1);
    `metrics`: (the metrics app, host, port) to serve alongside; with `query`, also the
    worker's query endpoint (`stream.query_server`)."""
    from aiohttp import web

    from common.diagnostics import install_task_dump
    from common.http import runner
    from common.redis_client import redis_client
    from stream import collector
    from stream.query_server import QueryServer

    collector.install()  # process-wide: a worker process's state, not a library's choice
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    install_task_dump(loop)
    metrics_runner = None
    if metrics is not None:
        metrics_runner = runner(metrics[0], shutdown_timeout=2.0)
        await metrics_runner.setup()
        await web.TCPSite(metrics_runner, metrics[1], metrics[2]).start()
    await app.start()
    log.info("worker started (group %s)", app.group_id)
    server = None
    if query is not None and settings is not None:
        server = QueryServer(app, settings, query["verifier"],
                             redis_client(settings), host=query["host"],
                             port=query["port"], advertised_host=query["advertised_host"])
        await server.start()
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
        if server is not None:
            await server.stop()
            await server.redis.aclose()
        await app.stop()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
