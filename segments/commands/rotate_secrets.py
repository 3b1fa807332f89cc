"""`segments rotate-secrets`: re-encrypt every stored secret under the first key."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import replace
from typing import Any

from common.settings import Settings

DESCRIPTION = """\
Re-encrypts the Stripe API key and the webhook signing secrets of every connection
under the FIRST key of SEGMENTS_SECRET_KEY (a comma-separated list: the first encrypts,
every one decrypts). Reads segments.connections to its end, writes each changed record
back to it (the connectors follow the topic and refresh their Redis cache; this command
refreshes the cache too) and checks the result.

To retire a key: put a new key first, keeping the old one after it
(SEGMENTS_SECRET_KEY=NEW,OLD) in every connector and here; run this command; then
remove OLD everywhere. Safe to run again: records already under the first key are left
as they are. Exit status: 0 done, 1 some secret readable by no key of the list (their
connection ids are listed; nothing else is affected) or Kafka/Redis unavailable.
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "rotate-secrets",
        help="re-encrypt every stored secret under the first key of SEGMENTS_SECRET_KEY",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dry-run", action="store_true",
                        help="only report what would be re-encrypted")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="how long to wait for Kafka to load the topic (default 60)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from connectors.secrets import SecretKeyError

    try:
        return asyncio.run(rotate(Settings.from_env(), dry_run=args.dry_run,
                                  timeout=args.timeout))
    except SecretKeyError as exc:
        print(f"segments rotate-secrets: {exc}", file=sys.stderr)
        return 1


def _say(line: str) -> None:
    print(line, flush=True)


async def rotate(settings: Settings, *, dry_run: bool = False, timeout: float = 60.0) -> int:
    from redis.exceptions import RedisError

    from common.redis_client import redis_client
    from connectors.secrets import SecretBox, SecretUnreadable, resolve_secret_key
    from connectors.store import Connection, ConnectionStore, ConnectionStoreUnavailable

    box = SecretBox(resolve_secret_key(settings))
    redis = redis_client(settings)
    store = ConnectionStore(redis, box, prefix=settings.topic_prefix, settings=settings)

    def rotated(conn: Connection) -> Connection:
        return replace(conn, api_key_token=box.rotate(conn.api_key_token),
                       webhook_secrets_token=box.rotate(conn.webhook_secrets_token))

    def current(conn: Connection) -> bool:
        return box.is_current(conn.api_key_token) and box.is_current(
            conn.webhook_secrets_token)

    try:
        await store.start()
        if not await store.wait_loaded(timeout):
            print(f"segments rotate-secrets: could not read {settings.topic_prefix}"
                  f"segments.connections from Kafka at {settings.kafka_bootstrap_servers} "
                  f"within {timeout:g}s", file=sys.stderr)
            return 1
        connections = store.connections()
        _say(f"rotate-secrets: {len(connections)} connection(s) in "
             f"{settings.topic_prefix}segments.connections")
        done = already = 0
        unreadable: list[str] = []
        for n, conn in enumerate(connections, 1):
            where = f"[{n}/{len(connections)}] {conn.id}"
            if current(conn):
                already += 1
                _say(f"  {where}: already under the first key")
                continue
            try:
                rotated(conn)  # every secret readable by some key, before writing any
            except SecretUnreadable:
                unreadable.append(conn.id)
                _say(f"  {where}: UNREADABLE with every key given")
                continue
            if dry_run:
                done += 1
                _say(f"  {where}: would be re-encrypted")
                continue
            try:
                changed = await store.rewrite(conn.id, rotated)
            except SecretUnreadable:  # rewritten meanwhile with a key we lack
                unreadable.append(conn.id)
                _say(f"  {where}: UNREADABLE with every key given")
                continue
            if changed:
                done += 1
                _say(f"  {where}: re-encrypted")
            else:
                _say(f"  {where}: deleted meanwhile")
        # The follower applied every write (and refreshed the Redis cache): check.
        left = [] if dry_run else [c.id for c in store.connections()
                                   if not current(c) and c.id not in unreadable]
        verb = "would re-encrypt" if dry_run else "re-encrypted"
        _say(f"rotate-secrets: {verb} {done}, {already} already under the first key, "
             f"{len(unreadable)} unreadable")
        if left:
            print("segments rotate-secrets: changed meanwhile by a process whose first key "
                  "is another one (is SEGMENTS_SECRET_KEY the same everywhere?); run again: "
                  + ", ".join(left), file=sys.stderr)
            return 1
        if unreadable:
            print("segments rotate-secrets: these connections have secrets that no key of "
                  "SEGMENTS_SECRET_KEY decrypts (add the key they were written with, "
                  "after the first, and run again): " + ", ".join(unreadable),
                  file=sys.stderr)
            return 1
        if not dry_run:
            _say("rotate-secrets: every secret is under the first key; keys after it can "
                 "be removed from SEGMENTS_SECRET_KEY once every process uses the new list")
        return 0
    except (ConnectionStoreUnavailable, RedisError) as exc:
        print(f"segments rotate-secrets: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.stop()
        await redis.aclose()
