"""The one entry point, `segments`: each subcommand lives in `segments/commands/`.

A command module exposes `register(subparsers)`, which adds its parser and sets
`func(args) -> int` as the handler; heavy imports happen inside handlers so that
`segments --help` stays instant. Logging is configured here, once, for every command
(`common.logs`: JSON lines, or readable text on a terminal).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Command modules, in the order `--help` lists them.
COMMANDS = [
    "stack",
    "connector",
    "connect",
    "backfill",
    "worker",
    "api",
    "members",
    "forget",
    "rebuild",
    "rules",
    "token",
    "rotate_secrets",
    "demo",
]
#: Operator tools print their own output; their logs show warnings and errors only
#: unless SEGMENTS_LOG_LEVEL says otherwise. Servers log at INFO.
QUIET_COMMANDS = frozenset({"stack", "connect", "backfill", "members", "rebuild-read-model",
                            "rules", "token", "rotate-secrets", "forget"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segments",
        description="Real-time contact segments from Stripe activity, on Kafka.",
        epilog="Configuration comes from the environment (see README: Configuration).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"segments.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from common.logs import LogConfigError, configure
    from common.settings import SettingsError

    args = build_parser().parse_args(argv)
    try:
        # SEGMENTS_LOG_FORMAT / SEGMENTS_LOG_LEVEL, before any command runs.
        configure(level="WARNING" if args.command in QUIET_COMMANDS else "INFO")
    except LogConfigError as exc:
        print(f"segments: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except SettingsError as exc:  # a bad configuration variable: say which, no traceback
        print(f"segments: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
