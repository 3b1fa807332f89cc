"""`segments members SEGMENT_ID`: who is in a segment now, from the Redis read model."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from common.settings import Settings

PAGE = 1000


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "members",
        help="print a segment's members (one email per line) from the read model",
        description=(
            "Reads the Redis read model that `segments api` keeps current. Emails go to "
            "stdout in order, one per line; the count goes to stderr."
        ),
    )
    parser.add_argument("segment_id")
    parser.add_argument(
        "--account", dest="account_id", default=None,
        help="account of the segment (needed when several accounts use the id)",
    )
    parser.add_argument("--limit", type=int, default=None, help="print at most N members")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from serving.read_model import valid_id

    for name in ("segment_id", "account_id"):
        value = getattr(args, name)
        if value is not None and not valid_id(value):
            print(f"segments members: {name} must be 1-128 characters of A-Z a-z 0-9 . _ -",
                  file=sys.stderr)
            return 2
    if args.limit is not None and args.limit < 1:
        print("segments members: --limit must be at least 1", file=sys.stderr)
        return 2
    from redis.exceptions import RedisError

    try:
        return asyncio.run(_print_members(Settings.from_env(), args))
    except RedisError as exc:
        print(f"segments members: cannot read the read model: {exc}", file=sys.stderr)
        return 1


async def _print_members(settings: Settings, args: argparse.Namespace) -> int:
    from serving.read_model import Namespace
    from serving.read_model_query import AmbiguousSegment, ReadModelReader
    from serving.server import connect_redis

    redis = connect_redis(settings)
    try:
        reader = ReadModelReader(redis, Namespace(settings.topic_prefix))
        try:
            account_id = await reader.resolve_account(args.segment_id, args.account_id)
        except AmbiguousSegment as exc:
            print(f"segments members: {exc} (use --account)", file=sys.stderr)
            return 2
        if account_id is None:
            where = f" in account {args.account_id!r}" if args.account_id else ""
            print(f"segments members: segment {args.segment_id!r} not found{where}",
                  file=sys.stderr)
            return 1
        printed, after, total = 0, None, 0
        while args.limit is None or printed < args.limit:
            want = PAGE if args.limit is None else min(PAGE, args.limit - printed)
            page = await reader.members_page(account_id, args.segment_id, after, want)
            total = page.member_count
            for member in page.members:
                line = orjson.dumps(member).decode() if args.json else member["email"]
                sys.stdout.write(line + "\n")
            printed += len(page.members)
            if page.next_cursor is None or not page.members:
                break
            after = page.members[-1]["email"]
        sys.stdout.flush()
        print(f"{args.segment_id} ({account_id}): {total} members, {printed} printed",
              file=sys.stderr)
        return 0
    finally:
        await redis.aclose()
