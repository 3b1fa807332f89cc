"""`segments forget --account A EMAIL`: erase one person (README, "Privacy")."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from common.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "forget",
        help="erase one person (an email within one account) from the workers' state, "
             "segments.members and the read model",
        description=(
            "Publishes an erasure record to every partition of segments.control. Each "
            "worker partition deletes the contact's facts, memberships and timers, the "
            "customer emails, parked occurrences and charge payers naming the email for "
            "the account's connections, and emits `left` (cause `erased`) with a "
            "tombstone on segments.members for each segment the contact was in; the "
            "read model drops it from there. Returns once Kafka has the records; the "
            "workers apply them in order with everything else. A later Stripe event "
            "naming the email is processed as usual."
        ),
    )
    parser.add_argument("--account", dest="account_id", required=True,
                        help="the Center account the contact belongs to")
    parser.add_argument("email")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from serving.erasure import NotAnEmail, forget
    from serving.read_model import valid_id

    if not valid_id(args.account_id):
        print("segments forget: --account must be 1-128 characters of A-Z a-z 0-9 . _ -",
              file=sys.stderr)
        return 2
    try:
        sent = asyncio.run(forget(Settings.from_env(), args.account_id, args.email))
    except NotAnEmail as exc:
        print(f"segments forget: {exc}", file=sys.stderr)
        return 2
    print(f"erasure requested for one contact of {sent.account_id} on {sent.partitions} "
          f"partitions ({sent.connections} connections)", file=sys.stderr)
    return 0
