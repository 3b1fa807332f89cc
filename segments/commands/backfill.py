"""`segments backfill CONNECTION_ID`: run or resume a connection's 30-day backfill.

The connector starts the backfill itself when an account is connected; this command
resumes one that stopped (Kafka or Stripe went away, the process was restarted) from
its saved cursor, or redoes it with `--restart`. The API key comes from the connection
store (encrypted with SEGMENTS_SECRET_KEY); `--key-file` (or `-` for stdin) supplies it
instead, e.g. for a connection made elsewhere, never from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from common.settings import Settings
from common.windows import BACKFILL_DAYS


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "backfill",
        help="run or resume the 30-day backfill of a connection",
        description=(
            "Reads the connection's last 30 days of Stripe events (Events API, paced under "
            "the rate limit) onto the stripe.events topic, resuming from the saved cursor. "
            "Progress is shown here and in GET /connections/{id}."
        ),
    )
    parser.add_argument("connection_id")
    parser.add_argument("--since", metavar="ISO",
                        help="start of the window (default: connection time - 30 days); "
                             "a different window than the saved one starts over")
    parser.add_argument("--restart", action="store_true",
                        help="forget the saved cursor and start over")
    parser.add_argument("--key-file", metavar="FILE",
                        help="read the API key from FILE ('-': stdin) instead of the store")
    parser.add_argument("--account", help="the Center account id (with --key-file, when the "
                                          "connection is not in the store)")
    parser.add_argument("--rate", type=float, default=None,
                        help="Stripe requests per second (default 20; test mode allows 25)")
    parser.set_defaults(func=run)


def parse_since(text: str) -> int:
    """ISO date or date-time (UTC unless it says otherwise) -> epoch seconds."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


class ProgressView:
    """A one-line bar redrawn with `\\r` on a terminal; a plain line every few seconds
    otherwise (logs and CI output stay readable)."""

    def __init__(self, out: TextIO, *, tty: bool | None = None, every_s: float = 5.0) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.every_s = every_s
        self.last: float | None = None

    def line(self, progress: Any) -> str:
        at = ""
        if progress.phase == "settling":
            at = f"  {progress.phase_text}"
        elif progress.cursor is not None:
            at_s = progress.cursor.lo
            at = "  at " + datetime.fromtimestamp(at_s, UTC).strftime("%Y-%m-%d %H:%M")
            span = max(1, progress.end - progress.since)
            at += f" ({min(100.0, 100 * (at_s - progress.since) / span):.0f}% of window)"
        return (f"backfill {progress.connection_id}: {progress.state}  {progress.events:,} events  "
                f"{progress.pages:,} pages  {progress.rate_per_s:,.1f} events/s{at}")

    def __call__(self, progress: Any) -> None:
        now = time.monotonic()
        final = progress.state != "running"
        if self.tty:
            if final or self.last is None or now - self.last >= 0.2:
                self.last = now
                self.out.write("\r\x1b[K" + self.line(progress))
                self.out.flush()
        elif final or self.last is None or now - self.last >= self.every_s:
            self.last = now
            print(self.line(progress), file=self.out, flush=True)

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


def _read_key(path: str) -> str:
    if path != "-":
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    if sys.stdin.isatty():
        return getpass.getpass("Stripe API key (input hidden): ").strip()
    return sys.stdin.read().strip()


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args, Settings.from_env()))
    except _Refused as exc:
        print(f"segments backfill: {exc}", file=sys.stderr)
        return 2


class _Refused(Exception):
    pass


async def _job(args: argparse.Namespace, settings: Settings, redis: Any) -> Any:
    from connectors.backfill import BackfillJob, read_progress

    stored = None
    if not args.key_file or not args.account:
        from connectors.secrets import SecretBox, resolve_secret_key
        from connectors.store import ConnectionStore

        store = ConnectionStore(redis, SecretBox(resolve_secret_key(settings)),
                                prefix=settings.topic_prefix)
        stored = await store.get(args.connection_id)
        if stored is None and not args.key_file:
            raise _Refused(f"no connection {args.connection_id} in the store; connect it "
                           "first, or give --key-file and --account")
    if args.key_file:
        try:
            api_key = _read_key(args.key_file)
        except OSError as exc:
            raise _Refused(f"cannot read {exc.filename}: {exc.strerror}") from None
    else:
        assert stored is not None  # refused above otherwise
        api_key = store.api_key(stored)
    if not api_key:
        raise _Refused("no API key given")
    account = args.account or (stored.account_id if stored is not None else None)
    if account is None:
        raise _Refused("--account is required when the connection is not in the store")
    if args.since:
        since = parse_since(args.since)
    elif stored is not None:
        since = stored.created_at - BACKFILL_DAYS * 86400
    else:
        previous = await read_progress(redis, settings, args.connection_id)
        since = previous.since if previous else int(time.time()) - BACKFILL_DAYS * 86400
    until = stored.created_at if stored is not None else None
    return BackfillJob(args.connection_id, account, api_key, since, until)


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from common.redis_client import redis_client
    from common.topics import EVENTS_TOPIC, ensure_topics, specs_named
    from connectors.backfill import (
        BackfillBusy,
        BackfillOptions,
        reset_backfill,
        run_backfill,
    )
    from connectors.sink import KafkaEventSink, SinkUnavailable

    redis = redis_client(settings)
    try:
        job = await _job(args, settings, redis)
        options = BackfillOptions.from_env()
        if args.rate:
            options = BackfillOptions(**{**options.__dict__, "rate_per_s": args.rate})
        if args.restart and await reset_backfill(redis, settings, job.connection_id):
            print(f"backfill {job.connection_id}: starting over", file=sys.stderr)
        await ensure_topics(settings, specs_named(EVENTS_TOPIC))
        view = ProgressView(sys.stderr)
        try:
            async with KafkaEventSink(settings) as sink:
                final = await run_backfill(job, settings=settings, sink=sink, redis=redis,
                                           on_progress=view, options=options)
        except BackfillBusy as exc:
            raise _Refused(f"{exc} (in the connector, or another `segments backfill`)") from None
        except SinkUnavailable as exc:
            view.close()
            print(f"segments backfill: Kafka stopped acknowledging ({exc}); the cursor is "
                  "saved: run the same command again to resume", file=sys.stderr)
            return 1
        except Exception as exc:
            view.close()
            print(f"segments backfill: stopped by {type(exc).__name__}; the cursor is saved: "
                  "run the same command again to resume", file=sys.stderr)
            return 1
        view(final)
        view.close()
        return 0
    finally:
        await redis.aclose()
