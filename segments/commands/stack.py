"""`segments stack up|down|status`: local Kafka (KRaft) and Redis without Docker."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from common.settings import Settings, redact_url


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "stack",
        help="start, stop or inspect a local Kafka and Redis (no Docker needed)",
        description=(
            "Runs Apache Kafka in KRaft mode from the Maven Central jars (cached under "
            "SEGMENTS_STACK_DIR, default ./.stack) and Redis from the OS package. "
            "--secure runs a separate, secured pair instead (see README: Deploying on a "
            "secured cluster)."
        ),
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--nodes", type=int, default=1,
        help="Kafka nodes; 3 starts a separate cluster on ports 19092-19094 (fault tests)",
    )
    parser.add_argument("--no-redis", action="store_true", help="leave Redis alone")
    parser.add_argument(
        "--secure", action="store_true",
        help="the secured stack: Kafka with a SASL_SSL listener (SCRAM-SHA-512 users, ACLs "
             "per service) on 127.0.0.1:9093 and Redis with TLS and a password on 6380; "
             "credentials are generated under SEGMENTS_STACK_DIR/secure (mode 0600)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segments.stack import StackError

    try:
        return run_secure(args) if args.secure else run_plain(args)
    except StackError as exc:
        print(f"segments stack: {exc}", file=sys.stderr)
        return 1


def run_plain(args: argparse.Namespace) -> int:
    from segments.stack import LocalKafka, LocalRedis, stack_dir

    settings = Settings.from_env()
    root = stack_dir()
    kafka = LocalKafka(root, nodes=args.nodes)
    redis = LocalRedis(root, settings.redis_url)
    if args.action == "up":
        started = time.monotonic()
        print(f"Kafka: fetching jars and starting {args.nodes} node(s)…", flush=True)
        servers = kafka.up()
        print(f"Kafka: up at {servers} ({time.monotonic() - started:.1f}s)")
        if not args.no_redis:
            print(f"Redis: {redis.up()} at {redact_url(settings.redis_url)}")
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


def run_secure(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from segments.stack import StackError, stack_dir
    from segments.stack.acls import provision
    from segments.stack.secure import ADMIN, SERVICES, SecureStack

    if args.nodes != 1:
        raise StackError("--secure runs one node")
    stack = SecureStack(stack_dir())
    if args.action == "up":
        started = time.monotonic()
        print("Kafka (secured): generating credentials, starting one node…", flush=True)
        stack.kafka.up()
        print(f"Kafka (secured): SASL_SSL at {stack.bootstrap_servers} "
              f"({time.monotonic() - started:.1f}s)")
        if not args.no_redis:
            print(f"Redis (secured): {stack.redis.up()}, TLS on 127.0.0.1:{stack.redis.port}")
        # Topics and ACLs of the deployment SEGMENTS_TOPIC_PREFIX etc. describe (the
        # connection variables are the stack's own, whatever the shell exports).
        base = Settings.from_env({k: v for k, v in os.environ.items()
                                  if not k.startswith("KAFKA_") and k != "REDIS_URL"})
        asyncio.run(provision(stack.settings(ADMIN, base)))
        print(f"Topics and ACLs: created for prefix {base.topic_prefix!r}")
        _print_env_files(stack, stack.write_env_files(), SERVICES)
        return 0
    if args.action == "down":
        print(f"Kafka (secured): stopped {stack.kafka.down()} node(s)")
        if not args.no_redis:
            print("Redis (secured): stopped" if stack.redis.down()
                  else "Redis (secured): nothing of ours running")
        return 0
    healthy = True
    if not stack.files.password_file(ADMIN).exists():
        print("Kafka (secured): never started (segments stack up --secure)")
        return 1
    for _, state in stack.kafka.status().items():
        print(f"Kafka (secured): {state}")
        healthy &= state.startswith("up")
    if not args.no_redis:
        state = stack.redis.status()
        print(f"Redis (secured): {state}")
        healthy &= state.startswith("up")
    _print_env_files(stack, {s: stack.env_file(s) for s in (*SERVICES, "admin")}, SERVICES)
    return 0 if healthy else 1


def _print_env_files(stack: Any, files: dict[str, Any], services: dict[str, str]) -> None:
    """Where each service's variables are: names and paths only, never a secret."""
    print("Each service exports KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL=SASL_SSL, "
          "KAFKA_SASL_MECHANISM=SCRAM-SHA-512, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD_FILE, "
          "KAFKA_SSL_CAFILE and REDIS_URL (rediss://, with its password): source its file "
          "before starting it:")
    for service, path in files.items():
        who = services.get(service, "admin: topics, ACLs and operator commands")
        print(f"  {service:<9} . {path}   ({who})")
    print(f"Credentials (mode 0600): {stack.files.root}")
