"""Workers as real processes: kill -9 in the middle, and two sharing the partitions.

The expected output is computed independently of the stream: every contact whose
facts satisfy a rule joins that segment exactly once, whatever the interleaving of
rules and facts. With a relative window (`test_kill_9_while_windows_close`), every
contact leaves exactly once, at the exact instant its window closed, even when the
worker that should have said so was killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import Settings
from common.topics import ensure_topics
from tests import stripe_events as se
from tests.integration.test_pipeline import Topics, rule, wait_changes
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration
CONTACTS = 60
ROUNDS = 6


def worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SEGMENTS_TOPIC_PREFIX": settings.topic_prefix,
        "SEGMENTS_PARTITIONS": str(settings.partitions),
        "REDIS_URL": settings.redis_url,
        # A killed worker's partitions move after this: the tests wait it out per kill.
        "SEGMENTS_SESSION_TIMEOUT_S": "10",
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "segments.cli", "worker", "--no-envelope-check",
             "--loglevel", os.environ.get("WORKER_LOGLEVEL", "warning"),
             *(["--at-least-once"] if os.environ.get("WORKER_ALO") else [])],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def round_events(r: int) -> list[dict[str, object]]:
    """Round r: every contact pays; amounts vary so some rounds qualify and some not."""
    events = []
    now = int(time.time())
    for c in range(CONTACTS):
        amount = 2_000 if (c + r) % 3 else 9_000
        ch = se.charge(amount=amount, billing_email=f"c{c}@example.com", created=now)
        events.append(se.event("charge.succeeded", ch, created=now))
        if (c + r) % 4 == 0:
            events.append(se.event("charge.failed", se.charge(
                failed=True, billing_email=f"c{c}@example.com", created=now), created=now))
    return events


def expected_joins() -> set[tuple[str, str]]:
    joins = set()
    for c in range(CONTACTS):
        if any((c + r) % 3 == 0 for r in range(ROUNDS)):
            joins.add(("big", f"c{c}@example.com"))
        if sum((c + r) % 4 == 0 for r in range(ROUNDS)) >= 2:
            joins.add(("twice-failed", f"c{c}@example.com"))
    return joins


async def publish_rules(topics: Topics) -> None:
    await topics.rule(rule("big", "charge_succeeded",
                           {"field": "amount", "op": "gte", "value": "90"}), "acme", "big")
    await topics.rule(rule("twice-failed", "charge_failed",
                           {"field": "occurrences", "op": "gte", "value": 2}),
                      "acme", "twice-failed")


def assert_exact(changes: list[object]) -> None:
    joins = [(c.segment_id, c.email, c.change) for c in changes]  # type: ignore[attr-defined]
    counts = Counter(joins)
    assert [k for k, v in counts.items() if v > 1] == [], "duplicate membership changes"
    assert {(s, e) for s, e, _ in joins} == expected_joins()
    assert {change for _, _, change in joins} == {"joined"}


async def test_kill_9_mid_stream(settings: Settings, tmp_path: Path,
                                 processes: list[subprocess.Popen[bytes]]) -> None:
    await ensure_topics(settings)
    topics = Topics(settings)
    await topics.producer.start()
    try:
        await publish_rules(topics)
        processes.append(worker(settings, tmp_path / "w1.log"))
        for r in range(ROUNDS):
            for event in round_events(r):
                await topics.raw(event)
            if r == 1:
                # Mid-stream: wait until output flows, then kill -9 without warning.
                await wait_changes(topics, 1, timeout=90)
                os.killpg(processes[0].pid, signal.SIGKILL)
                processes[0].wait()
            if r == 3:
                processes.append(worker(settings, tmp_path / "w1.log"))
        changes = await wait_changes(topics, len(expected_joins()), timeout=60)
        # Everything the inputs caused, so a duplicate would show.
        assert_exact(await topics.drained())
    finally:
        await topics.close()
    assert changes


async def test_two_workers_share_partitions(settings: Settings, tmp_path: Path,
                                            processes: list[subprocess.Popen[bytes]]) -> None:
    await ensure_topics(settings)
    topics = Topics(settings)
    await topics.producer.start()
    try:
        await publish_rules(topics)
        processes.append(worker(settings, tmp_path / "w1.log"))
        processes.append(worker(settings, tmp_path / "w2.log"))
        for r in range(ROUNDS):
            for event in round_events(r):
                await topics.raw(event)
        await wait_changes(topics, len(expected_joins()), timeout=120)
        assert_exact(await topics.drained())
    finally:
        await topics.close()


@pytest.mark.reliability
async def test_repeated_kills_at_random_points(settings: Settings, tmp_path: Path,
                                              processes: list[subprocess.Popen[bytes]]) -> None:
    """Three kill -9s at random moments (one while another worker takes over)."""
    import random

    seed = int(os.environ.get("KILL_SEED", "0")) or random.randrange(1, 2**32)
    print(f"KILL_SEED={seed}")  # replays this run's kill points
    rng = random.Random(seed)
    await ensure_topics(settings)
    topics = Topics(settings)
    await topics.producer.start()
    kills = 0
    try:
        await publish_rules(topics)
        processes.append(worker(settings, tmp_path / "w.log"))
        for r in range(ROUNDS):
            events = round_events(r)
            cut = rng.randrange(len(events))
            for i, event in enumerate(events):
                await topics.raw(event)
                if i == cut and r in (1, 2, 4):
                    # Wait until this worker has produced something, then kill it.
                    await wait_changes(topics, 1, timeout=90)
                    os.killpg(processes[-1].pid, signal.SIGKILL)
                    processes[-1].wait()
                    kills += 1
                    processes.append(worker(settings, tmp_path / "w.log"))
        await wait_changes(topics, len(expected_joins()), timeout=120)
        assert_exact(await topics.drained())
    finally:
        await topics.close()
    assert kills == 3


HOUR = 3600


async def test_kill_9_while_windows_close(settings: Settings, tmp_path: Path,
                                          processes: list[subprocess.Popen[bytes]]) -> None:
    """Each contact paid just under an hour ago: joins now, leaves on the clock within
    the next minute. The worker is killed while the leaves are being published."""
    from stream.changes import iso

    await ensure_topics(settings)
    topics = Topics(settings)
    await topics.producer.start()
    contacts = 30
    try:
        await topics.rule(rule("recent", "charge_succeeded",
                               {"field": "date", "op": "within_last",
                                "value": {"count": 1, "unit": "hours"}}), "acme", "recent")
        processes.append(worker(settings, tmp_path / "w.log"))
        start = int(time.time())
        # Windows close 20..49 s from now: after every join, spread over the kill.
        closes = {f"w{c}@example.com": start + 20 + c for c in range(contacts)}
        for email, close in closes.items():
            ch = se.charge(amount=5_000, billing_email=email, created=close - HOUR)
            await topics.raw(se.event("charge.succeeded", ch, created=close - HOUR))
        await wait_changes(topics, contacts, timeout=19)  # every join, before any leave

        async def some_left() -> bool:
            return any(c.change == "left" for c in await topics.changes())

        await async_wait_for(some_left, 60, what="the first window to close")
        os.killpg(processes[-1].pid, signal.SIGKILL)
        left_before_kill = sum(c.change == "left" for c in await topics.changes())
        processes[-1].wait()
        processes.append(worker(settings, tmp_path / "w.log"))
        # The killed worker's successor published the rest (not a test of nothing).
        assert left_before_kill < contacts
        changes = await wait_changes(topics, 2 * contacts, timeout=120)
        assert len(await topics.drained()) == 2 * contacts
    finally:
        await topics.close()
    by_email: dict[str, list[tuple[str, str, str]]] = {}
    for c in changes:
        by_email.setdefault(c.email, []).append((c.change, c.cause, c.at))
    assert set(by_email) == set(closes)
    for email, close in closes.items():
        joined, left = by_email[email]
        # "rule" when the fact reached its partition before the rule did.
        assert joined[0] == "joined", email
        assert joined[1] in ("fact", "rule"), email
        assert left == ("left", "time", iso(close)), email
