"""`segments rules add|list|show|delete`: administer segment rules on Kafka.

Rules live on the compacted `segments.rules` topic (see `serving.rules_store`); every
change increments the rule's `version`, and `delete` publishes a tombstone.
Exit codes: 0 done, 1 not found or Kafka unreachable, 2 invalid input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from common.settings import Settings

PROG = "segments rules"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "rules",
        help="add, list, show or delete segment rules",
        description="Segment rules, stored on the compacted segments.rules topic.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser(
        "add", help="validate a rule (JSON) and publish it as its next version",
        description=(
            "Reads one rule document (SPEC: 'A rule') from FILE or stdin, validates it and "
            "publishes it. An existing rule (same account and id) is replaced and its "
            "version incremented; any version in the input is ignored. Every problem of "
            "an invalid rule is printed as 'path: reason' and nothing is published (exit 2)."
        ),
    )
    add.add_argument("file", nargs="?", default="-", metavar="FILE",
                     help="rule JSON file ('-' or nothing: stdin)")
    add.set_defaults(func=_run(_add))

    listing = actions.add_parser("list", help="print the current rules as a table",
                                 description="Reads the rules topic back and prints a table.")
    listing.add_argument("--account", dest="account_id", help="only this account's rules")
    listing.set_defaults(func=_run(_list))

    for name, help_text in (("show", "print one rule's JSON document"),
                            ("delete", "delete a rule (publishes a tombstone)")):
        action = actions.add_parser(name, help=help_text, description=help_text + ".")
        action.add_argument("rule_id", metavar="ID")
        action.add_argument("--account", dest="account_id", required=True,
                            help="account of the rule (ids are unique per account only)")
        action.set_defaults(func=_run(_show if name == "show" else _delete))


def _run(
    handler: Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    """Wrap an async handler: Kafka failures become one line on stderr and exit 1."""

    def run(args: argparse.Namespace) -> int:
        from aiokafka.errors import KafkaError

        from common.topics import KafkaTopicError

        settings = Settings.from_env()
        # aiokafka logs every failed connect; the one line below says it all.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        try:
            return asyncio.run(handler(settings, args))
        except (KafkaError, KafkaTopicError, OSError) as exc:
            print(f"{PROG}: Kafka at {settings.kafka_bootstrap_servers} is unavailable: "
                  f"{exc}", file=sys.stderr)
            return 1

    return run


def _read_doc(path: str) -> object:
    if path == "-":
        text = sys.stdin.read()
    else:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    return json.loads(text, parse_float=Decimal)


async def _add(settings: Settings, args: argparse.Namespace) -> int:
    from rules import RuleError
    from segments.rules_admin import publish_rule

    try:
        doc = _read_doc(args.file)
    except FileNotFoundError:
        print(f"{PROG}: no such file: {args.file}", file=sys.stderr)
        return 2
    except (ValueError, UnicodeDecodeError) as exc:
        print(f"{PROG}: not valid JSON: {exc}", file=sys.stderr)
        return 2
    try:
        rule = await publish_rule(settings, doc)
    except RuleError as exc:
        count = len(exc.errors)
        print(f"{PROG}: invalid rule, {count} problem{'s' if count != 1 else ''}, "
              "nothing published:", file=sys.stderr)
        for error in exc.errors:
            print(f"{error.path or '(rule)'}: {error.reason}", file=sys.stderr)
        return 2
    print(f"stored rule {rule.id} (account {rule.account_id}) version {rule.version}")
    return 0


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    from segments.rules_admin import read_rules

    docs = [doc for (account, _), doc in sorted((await read_rules(settings)).items())
            if args.account_id is None or account == args.account_id]
    header = ("ACCOUNT", "ID", "FILTER", "VERSION", "NAME")
    rows = [header] + [
        (str(d.get("account_id", "")), str(d.get("id", "")), str(d.get("filter", "")),
         str(d.get("version", "")), str(d.get("name", "")))
        for d in docs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())
    return 0


async def _show(settings: Settings, args: argparse.Namespace) -> int:
    from segments.rules_admin import read_rules

    doc = (await read_rules(settings)).get((args.account_id, args.rule_id))
    if doc is None:
        print(f"{PROG}: no rule {args.rule_id!r} in account {args.account_id!r}",
              file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2, ensure_ascii=False))
    return 0


async def _delete(settings: Settings, args: argparse.Namespace) -> int:
    from segments.rules_admin import delete_rule

    if not await delete_rule(settings, args.account_id, args.rule_id):
        print(f"{PROG}: no rule {args.rule_id!r} in account {args.account_id!r}; "
              "nothing deleted", file=sys.stderr)
        return 1
    print(f"deleted rule {args.rule_id} (account {args.account_id})")
    return 0
