"""`segments demo`: the main job on sample data, from a bare machine to live segments.

Brings up the local Kafka and Redis, declares the topics under a fresh prefix, adds
one rule per filter, starts a stream worker in this process, feeds a month of sample
Stripe activity for many customers, and shows each segment filling as the joined/left
events arrive. Ctrl-C stops everything it started; `--once` exits by itself when the
feed has been processed (CI runs it that way).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import replace
from typing import Any

from segments.settings import Settings

ACCOUNT = "demo"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="the main job on sample data: local stack, worker, live segments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--customers", type=int, default=300, help="sample customers")
    parser.add_argument("--once", action="store_true",
                        help="exit when the feed is processed (exit 1 if a segment is empty)")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="with --once: give up after this many seconds")
    parser.add_argument("--seed", type=int, default=7)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segments.stack import LocalKafka, LocalRedis, StackError, stack_dir

    settings = Settings.from_env()
    if not settings.topic_prefix:
        settings = replace(settings, topic_prefix=f"demo{int(time.time())}.")
    try:
        if settings.kafka_bootstrap_servers in ("localhost:9092", "127.0.0.1:9092"):
            print("stack: starting local Kafka (KRaft) and Redis…", flush=True)
            LocalKafka(stack_dir()).up()
            LocalRedis(stack_dir(), settings.redis_url).up()
    except StackError as exc:
        print(f"segments demo: {exc}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_demo(settings, args))
    except KeyboardInterrupt:
        print("\nstopped.")
        return 130


async def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from connectors.contract import RawEvent
    from connectors.sink import KafkaEventSink
    from segments.demo_feed import DEMO_RULES, Feed
    from segments.rules_admin import publish_rule
    from segments.topics import ensure_topics
    from stream.app import StreamOptions, create_app

    print(f"topics: prefix {settings.topic_prefix!r}")
    await ensure_topics(settings)
    for doc in DEMO_RULES:
        rule = await publish_rule(settings, {**doc, "account_id": ACCOUNT})
        print(f"rule:  {rule.id:16} {rule.name}")
    app = create_app(settings, StreamOptions(store="memory://", datadir=tempfile.mkdtemp()))
    await app.start()
    watcher = Watcher(settings)
    await watcher.start()
    try:
        feed = Feed(args.seed, int(time.time()))
        sent = 0
        started = time.monotonic()
        async with KafkaEventSink(settings) as sink:
            for n in range(args.customers):
                for event in feed.customer_story(n):
                    source = "backfill" if n % 3 == 0 else "webhook"
                    await sink.publish(RawEvent(f"conn-{ACCOUNT}", ACCOUNT, source,  # type: ignore[arg-type]
                                                int(time.time() * 1000), event))
                    sent += 1
        print(f"feed:  {sent} Stripe events for {args.customers} customers "
              f"in {time.monotonic() - started:.1f}s")
        return await watcher.show(len(DEMO_RULES), once=args.once, timeout=args.timeout,
                                  sent=sent)
    finally:
        await watcher.stop()
        with contextlib.suppress(Exception):
            await app.stop()


class Watcher:
    """Reads segments.membership and keeps per-segment member counts for the live view."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.members: Counter[str] = Counter()
        self.causes: Counter[str] = Counter()
        self.recent: deque[str] = deque(maxlen=8)
        self.changes = 0
        self.last_change = time.monotonic()
        self._consumer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from stream.changes import MEMBERSHIP_TOPIC

        self._consumer = AIOKafkaConsumer(
            self.settings.topic(MEMBERSHIP_TOPIC),
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            auto_offset_reset="earliest", isolation_level="read_committed", group_id=None)
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def poll(self) -> None:
        from stream.changes import MembershipChange

        batch = await self._consumer.getmany(timeout_ms=300)
        for records in batch.values():
            for record in records:
                change = MembershipChange.from_bytes(record.value)
                self.members[change.segment_id] += 1 if change.change == "joined" else -1
                self.causes[change.cause] += 1
                self.changes += 1
                self.last_change = time.monotonic()
                self.recent.append(f"{change.at}  {change.email:28} {change.change:6} "
                                   f"{change.segment_id} ({change.cause})")

    def render(self, sent: int, elapsed: float) -> str:
        lines = [f"segments after {elapsed:5.1f}s — {self.changes} changes "
                 f"({self.changes / max(elapsed, 0.1):.0f}/s) from {sent} events"]
        for segment, count in sorted(self.members.items()):
            lines.append(f"  {segment:18} {count:5d} members  {'█' * min(count // 2, 40)}")
        lines.append("recent:")
        lines.extend(f"  {line}" for line in self.recent)
        return "\n".join(lines)

    async def show(self, segments: int, *, once: bool, timeout: float, sent: int) -> int:
        started = time.monotonic()
        tty = sys.stdout.isatty()
        last_print = 0.0
        while True:
            await self.poll()
            now = time.monotonic()
            if now - last_print > (0.5 if tty else 5.0):
                view = self.render(sent, now - started)
                print(("\x1b[2J\x1b[H" if tty else "") + view, flush=True)
                last_print = now
            filled = sum(1 for count in self.members.values() if count > 0)
            settled = now - self.last_change > 3.0 and self.changes > 0
            if once and ((filled >= segments and settled) or now - started > timeout):
                break
        print(self.render(sent, time.monotonic() - started))
        filled = sum(1 for count in self.members.values() if count > 0)
        print(f"\nsummary: {filled}/{segments} segments have members; changes by cause: "
              f"{dict(self.causes)}")
        print("query them: segments api  (then GET http://127.0.0.1:8081/segments/"
              f"{{segment}}?account_id={ACCOUNT}), or segments members SEGMENT --account {ACCOUNT}")
        return 0 if filled >= segments else 1
