"""`segments demo`: the main job on sample data, from a bare machine to live segments.

Brings up the local Kafka and Redis (when they are not running), declares the topics
under a fresh prefix and adds six rules (one per filter) for the account "demo". Then
it starts what production runs: localstripe (the Stripe emulator, on loopback) holding
the account's recent history, made with the official library; the stream worker; the
query API with its read model and web page; the connector. It connects the account
through `POST /connections` (which starts the 30-day backfill from localstripe), feeds
a month of activity for many customers as signed Stripe webhooks into the connector,
edits one rule on the way, and keeps a trickle of new activity flowing. The terminal
shows each segment's members, recent joined/left events and throughput, read from the
API, the connector and the worker; the web page shows the same in a browser.

Ctrl-C stops everything it started, Kafka and Redis included unless `--keep-stack`.
`--once` exits by itself once the feed has been processed (exit 1 if a segment stayed
empty); CI runs it that way.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import replace
from typing import Any

from common.settings import Settings

ACCOUNT = "demo"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="the main job on sample data: stack, connector, worker, API, live segments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--customers", type=int, default=300,
                        help="customers whose month arrives as webhooks (default 300)")
    parser.add_argument("--backfill-customers", type=int, default=24,
                        help="customers created on localstripe before connecting, read back "
                             "by the 30-day backfill (default 24)")
    parser.add_argument("--once", action="store_true",
                        help="exit when the feed is processed (exit 1 if a segment is empty)")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="with --once: give up after this many seconds (default 180)")
    parser.add_argument("--keep-stack", action="store_true",
                        help="leave Kafka and Redis running at the end even if the demo "
                             "started them (to query the read model afterwards)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the sample activity")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from common.logs import configure
    from segments.demo.run import Demo
    from segments.stack import StackError, stack_dir

    settings = Settings.from_env()
    if not settings.topic_prefix:
        settings = replace(settings, topic_prefix=f"demo{int(time.time())}.")
    log_path = stack_dir() / "demo.log"
    log_path.unlink(missing_ok=True)  # this run's logs only
    configure(filename=log_path)  # the terminal belongs to the live view
    started: list[str] = []
    code = 130
    try:
        _stack_up(settings, started)
        demo = Demo(settings, args, account=ACCOUNT, log_path=log_path)
        code = asyncio.run(demo.main())
    except StackError as exc:
        print(f"segments demo: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("\nsegments demo: interrupted", file=sys.stderr)
    finally:
        print(_stack_down(settings, started, keep=args.keep_stack))
    return code


def _stack_up(settings: Settings, started: list[str]) -> None:
    """Start the local Kafka and Redis where the settings point at them and they do not
    answer yet; `started` names what was started (even when a start then fails)."""
    from segments.stack import LocalKafka, LocalRedis, stack_dir
    from segments.stack.kafka import metadata_ok
    from segments.stack.redis_server import ping

    local = settings.kafka_bootstrap_servers in ("localhost:9092", "127.0.0.1:9092")
    if local and not metadata_ok(settings):
        print("stack: starting Kafka (KRaft, from the Maven jars; the first run downloads "
              "them)…", flush=True)
        started.append("kafka")
        LocalKafka(stack_dir()).up()
    local_redis = LocalRedis(stack_dir(), settings.redis_url)
    if not ping(settings.redis_url):
        print("stack: starting Redis…", flush=True)
        started.append("redis")
        local_redis.up()


def _stack_down(settings: Settings, started: list[str], *, keep: bool) -> str:
    from segments.stack import LocalKafka, LocalRedis, stack_dir

    if not started:
        return ("stack: Kafka and Redis were running before the demo and keep running; the "
                f"demo's data stays under the prefix {settings.topic_prefix!r}")
    names = " and ".join("Kafka" if s == "kafka" else "Redis" for s in started)
    if keep:
        return (f"stack: {names} (started by the demo) keep running; `segments stack down` "
                "stops them")
    if "kafka" in started:
        LocalKafka(stack_dir()).down()
    if "redis" in started:
        LocalRedis(stack_dir(), settings.redis_url).down()
    return (f"stack: stopped {names} (started by the demo; `--keep-stack` leaves them "
            "running)")
