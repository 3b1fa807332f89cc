"""`segments members` and `segments rebuild-read-model` as a user runs them."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import urllib.request

import orjson
import pytest
from redis.asyncio import Redis

from common.settings import Settings
from segments.cli import main
from tests.read_model_harness import change, delete_namespace, dump_namespace, feeder
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("SEGMENTS_TOPIC_PREFIX", settings.topic_prefix)
    return settings


async def _feed_topics(settings: Settings) -> None:
    async with feeder(settings) as f:
        await f.rule("acme", "vip")
        await f.rule("globex", "vip")
        await f.changes([change("acme", "vip", f"m{i}@example.com") for i in range(5)])
        await f.changes([change("acme", "vip", "m3@example.com", "left", "time"),
                         change("globex", "vip", "g@example.com")])


async def _state(settings: Settings, flush: bool = False) -> dict[str, object]:
    redis = Redis.from_url(settings.redis_url)
    try:
        if flush:
            await delete_namespace(redis, settings.topic_prefix)
        return await dump_namespace(redis, settings.topic_prefix)
    finally:
        await redis.aclose()


def test_rebuild_then_members(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_feed_topics(env))
    try:
        assert main(["rebuild-read-model"]) == 0
        out = capsys.readouterr().out
        assert "5 members in 2 segments, 2 rules" in out
        assert main(["members", "vip", "--account", "acme"]) == 0
        captured = capsys.readouterr()
        assert captured.out.split() == [f"m{i}@example.com" for i in (0, 1, 2, 4)]
        assert "vip (acme): 4 members, 4 printed" in captured.err

        assert main(["members", "vip", "--account", "acme", "--limit", "2", "--json"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [orjson.loads(line)["email"] for line in lines] == ["m0@example.com",
                                                                   "m1@example.com"]
        assert main(["members", "vip"]) == 2
        assert "account_id is required" in capsys.readouterr().err
        assert main(["members", "nope"]) == 1
        assert "not found" in capsys.readouterr().err
        assert main(["members", "bad id"]) == 2

        # Redis loses everything; the rebuild brings back exactly the same state.
        before = asyncio.run(_state(env))
        assert asyncio.run(_state(env, flush=True)) == {}
        assert main(["rebuild-read-model"]) == 0
        assert asyncio.run(_state(env)) == before
    finally:
        asyncio.run(_state(env, flush=True))



def test_api_command_serves_and_stops_on_sigterm(env: Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "segments.cli", "api", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def healthy() -> bool:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for(healthy, 30, what="segments api /healthz")
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()
