"""`segments rebuild-read-model`: rebuild Redis from the compacted topics."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from common.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "rebuild-read-model",
        help="rebuild the Redis read model from segments.members and segments.rules",
        description=(
            "Reads the compacted topics segments.members and segments.rules from the "
            "beginning into a new generation of Redis keys, switches the query API to it "
            "in one step and deletes the old keys. Safe while `segments api` runs: its "
            "read-model writer replays the changes made meanwhile."
        ),
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError
    from redis.exceptions import RedisError

    try:
        return asyncio.run(_rebuild(Settings.from_env()))
    except (KafkaError, RedisError) as exc:
        print(f"segments rebuild-read-model: {exc}", file=sys.stderr)
        return 1


async def _rebuild(settings: Settings) -> int:
    from common.topics import MEMBERS_TOPIC, MEMBERSHIP_TOPIC, RULES_TOPIC, TOPICS, ensure_topics
    from serving.read_model_rebuild import RebuildError, rebuild
    from serving.server import connect_redis

    wanted = (MEMBERS_TOPIC, MEMBERSHIP_TOPIC, RULES_TOPIC)
    await ensure_topics(settings, tuple(s for s in TOPICS if s.name in wanted))
    redis = connect_redis(settings)
    try:
        report = await rebuild(settings, redis)
    except RebuildError as exc:
        print(f"segments rebuild-read-model: {exc}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()
    print(report.summary())
    return 0
