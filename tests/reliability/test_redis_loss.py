"""Redis lost under the read model: killed, restarted empty, flushed, while changes flow.

A private redis-server (never the session's) serves the read model; the serving process
(`ApiProcess`: read-model writer, live feed, query API) runs under a supervisor that
restarts it when it exits, as an orchestrator does: on losing Redis the process stops
on purpose. Membership changes keep arriving on Kafka through every fault.

Checked: changes written while Redis was dead are applied once it is back (processing
waited, nothing skipped); changes keep being applied after a FLUSHALL (processing goes
on); and `rebuild` then makes Redis equal, key for key, to the state obtained by
applying every change in order to an untouched namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from common.settings import Settings
from segments.stack import LocalRedis, StackError
from segments.stack.processes import read_pid
from serving.read_model import (
    Namespace,
    ReadModelStore,
    Write,
    write_from_change,
    write_from_rule_record,
)
from serving.read_model_query import ReadModelReader
from serving.read_model_rebuild import rebuild
from serving.server import ApiProcess
from stream.changes import MembershipChange, rule_key
from tests.conftest import IN_CI
from tests.localstripe_server import free_port
from tests.read_model_harness import Feeder, change, dump_namespace, feeder, rule_doc
from tests.reliability.ledger import LEDGER
from tests.waiting import async_wait_for

pytestmark = pytest.mark.reliability

SEGMENTS = ("vip", "churn")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    local = LocalRedis(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    try:
        local.up()
    except StackError as exc:
        if IN_CI:
            pytest.fail(f"redis-server is required under CI=true: {exc}")
        pytest.skip(f"redis-server unavailable: {exc}")
    yield local
    local.down()


def kill_9(local: LocalRedis) -> None:
    pid = read_pid(local.pidfile)
    assert pid is not None, "private redis-server not running"
    os.killpg(pid, signal.SIGKILL)
    local.pidfile.unlink(missing_ok=True)


@dataclass
class Supervisor:
    """Runs the serving process, restarting it whenever it stops (like an orchestrator)."""

    settings: Settings
    starts: int = 0
    failures: int = 0
    task: asyncio.Task[None] | None = None
    current: ApiProcess | None = None

    async def _loop(self) -> None:
        while True:
            process = ApiProcess(self.settings, port=0)
            try:
                self.starts += 1
                async with process:
                    self.current = process
                    await process.wait()
            except asyncio.CancelledError:
                raise
            except Exception:  # the process stopped on purpose: Redis or Kafka went away
                self.failures += 1
            self.current = None
            await asyncio.sleep(0.3)

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop())

    async def has_failed(self) -> bool:
        return self.failures >= 1

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@contextlib.asynccontextmanager
async def supervised(settings: Settings) -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(settings)
    supervisor.start()
    try:
        yield supervisor
    finally:
        await supervisor.stop()


class Stream:
    """Membership changes as the agents would write them, remembered in order."""

    def __init__(self, feeder: Feeder) -> None:
        self.feeder = feeder
        self.writes: list[Write] = []
        self.sent: list[MembershipChange] = []
        self.changes_made = 0

    async def rule(self, account: str, segment: str) -> None:
        doc = rule_doc(account, segment)
        await self.feeder.rule(account, segment, doc)
        import orjson

        self.writes.append(write_from_rule_record(rule_key(account, segment), orjson.dumps(doc)))

    async def changes(self, count: int, tag: str) -> MembershipChange:
        """`count` changes: joins of fresh emails, and leaves of every third one."""
        batch: list[MembershipChange] = []
        for i in range(count):
            self.changes_made += 1
            account = ("acme", "globex")[i % 2]
            segment = SEGMENTS[(i // 2) % 2]
            email = f"{tag}{i // 4}@example.com"
            kind = "left" if self.changes_made % 3 == 0 else "joined"
            batch.append(change(account, segment, email, kind))
        await self.feeder.changes(batch)
        self.writes += [write_from_change(c) for c in batch]
        self.sent += batch
        return batch[-1]

    def changes_tagged(self, tag: str) -> list[MembershipChange]:
        return [c for c in self.sent if c.email.startswith(tag)]


async def wrong_members(redis: Redis, settings: Settings,
                        changes: list[MembershipChange]) -> list[str]:
    """Members whose presence in the read model is not what their last change says."""
    last = {(c.account_id, c.segment_id, c.email): c for c in changes}
    return [f"{k}: {c.change}" for k, c in last.items() if not await applied(redis, settings, c)]


async def applied(redis: Redis, settings: Settings, last: MembershipChange) -> bool:
    """Whether the read model shows `last` (the final change of a batch)."""
    reader = ReadModelReader(redis, Namespace(settings.topic_prefix))
    page = await reader.members_page(last.account_id, last.segment_id, None, 1000)
    present = any(m["email"] == last.email for m in page.members)
    return present == (last.change == "joined")


async def test_redis_killed_restarted_and_flushed_mid_stream(
        settings: Settings, private_redis: LocalRedis) -> None:
    settings = replace(settings, redis_url=private_redis.url)
    redis = Redis.from_url(private_redis.url)

    async def waits_for(last: MembershipChange, what: str) -> None:
        async def check() -> bool:
            with contextlib.suppress(Exception):
                return await applied(redis, settings, last)
            return False

        await async_wait_for(check, 60, interval=0.2, what=what)

    async with feeder(settings) as sender:
        stream = Stream(sender)
        for account in ("acme", "globex"):
            for segment in SEGMENTS:
                await stream.rule(account, segment)
        async with supervised(settings) as supervisor:
            last = await stream.changes(200, "before")
            await waits_for(last, "changes before the fault")

            kill_9(private_redis)  # Redis dies with everything in memory
            down_last = await stream.changes(100, "while-down")
            await async_wait_for(supervisor.has_failed, 30,
                                 what="the serving process to stop on losing Redis")
            await asyncio.sleep(1.0)
            private_redis.up()  # back, and empty (no persistence)
            await waits_for(down_last, "changes written while Redis was dead")
            after_restart = await stream.changes(100, "after-restart")
            await waits_for(after_restart, "changes after the restart")
            # Every change made while Redis was dead is there: none was skipped.
            missing = await wrong_members(redis, settings, stream.changes_tagged("while-down"))
            assert missing == [], missing

            await redis.flushall()  # lost again, this time under a running writer
            flushed_last = await stream.changes(100, "after-flush")
            await waits_for(flushed_last, "changes after FLUSHALL")

            report = await rebuild(settings, redis)
            await stream.changes(40, "after-rebuild")

            reference = f"ref{uuid.uuid4().hex[:8]}."
            await ReadModelStore(redis, Namespace(reference)).apply(stream.writes, "0")
            expected = await dump_namespace(redis, reference)
            got: dict[str, Any] = {}

            async def matches() -> bool:
                nonlocal got
                got = await dump_namespace(redis, settings.topic_prefix)
                return got == expected

            try:
                await async_wait_for(matches, 60, interval=0.5,
                                     what="the rebuilt read model to equal the reference")
            except AssertionError:
                raise AssertionError(_diff(got, expected)) from None
            restarts = supervisor.starts - 1
        for key in [k async for k in redis.scan_iter(count=1000)]:
            LEDGER.check_bytes("redis value", await redis.dump(key))
    await redis.aclose()
    print(f"redis loss: 1 kill -9 + restart empty, 1 FLUSHALL, {len(stream.writes)} writes, "
          f"{restarts} restart(s) of the serving process, rebuild read "
          f"{report.records_read} records; read model equals the reference")


def _diff(got: dict[str, Any], expected: dict[str, Any]) -> str:
    keys = sorted(set(got) | set(expected))
    lines = [f"{k}: got {got.get(k)!r:.120} expected {expected.get(k)!r:.120}"
             for k in keys if got.get(k) != expected.get(k)]
    return f"{len(lines)} keys differ:\n" + "\n".join(lines[:20])
