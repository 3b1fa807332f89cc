"""`segments stack up|down|status`: local Kafka (KRaft) and Redis without Docker."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from common.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "stack",
        help="start, stop or inspect a local Kafka and Redis (no Docker needed)",
        description=(
            "Runs Apache Kafka in KRaft mode from the Maven Central jars (cached under "
            "SEGMENTS_STACK_DIR, default ./.stack) and Redis from the OS package."
        ),
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--nodes", type=int, default=1,
        help="Kafka nodes; 3 starts a separate cluster on ports 19092-19094 (fault tests)",
    )
    parser.add_argument("--no-redis", action="store_true", help="leave Redis alone")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segments.stack import LocalKafka, LocalRedis, StackError, stack_dir

    settings = Settings.from_env()
    root = stack_dir()
    kafka = LocalKafka(root, nodes=args.nodes)
    redis = LocalRedis(root, settings.redis_url)
    try:
        if args.action == "up":
            started = time.monotonic()
            print(f"Kafka: fetching jars and starting {args.nodes} node(s)…", flush=True)
            servers = kafka.up()
            print(f"Kafka: up at {servers} ({time.monotonic() - started:.1f}s)")
            if not args.no_redis:
                print(f"Redis: {redis.up()} at {settings.redis_url}")
            if args.nodes > 1:
                print(f"export KAFKA_BOOTSTRAP_SERVERS={servers}")
            return 0
        if args.action == "down":
            stopped = kafka.down()
            print(f"Kafka: stopped {stopped} node(s)")
            if not args.no_redis:
                print("Redis: stopped" if redis.down() else "Redis: nothing of ours running")
            return 0
        healthy = True
        for node_id, state in kafka.status().items():
            print(f"Kafka node {node_id}: {state}")
            healthy &= state.startswith("up")
        if not args.no_redis:
            state = redis.status()
            print(f"Redis: {state}")
            healthy &= state.startswith("up")
        return 0 if healthy else 1
    except StackError as exc:
        print(f"segments stack: {exc}", file=sys.stderr)
        return 1
