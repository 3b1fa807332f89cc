"""`segments backfill ID` as a real process: key from the store or stdin, resume, restart."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import stripe

from common.settings import Settings
from common.topics import ensure_topics
from connectors.secrets import SecretBox
from connectors.store import ConnectionStore, new_connection_id
from tests.conftest import TEST_SECRET_KEY
from tests.integration.test_backfill import topic_contents
from tests.localstripe_server import running_localstripe
from tests.stripe_activity import flush, make_activity

pytestmark = pytest.mark.integration

KEY = "sk_test_cli_0123456789abcdef"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def localstripe_base() -> Iterator[str]:
    with running_localstripe() as base:
        flush(base)
        make_activity(stripe.StripeClient(KEY, base_addresses={"api": base}), 5)
        yield base


def segments(settings: Settings, base: str, *args: str,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "REDIS_URL": settings.redis_url, "SEGMENTS_TOPIC_PREFIX": settings.topic_prefix,
           "SEGMENTS_SECRET_KEY": TEST_SECRET_KEY, "STRIPE_API_BASE": base,
           "SEGMENTS_BACKFILL_SETTLE_S": "0", "SEGMENTS_BACKFILL_OVERLAP_S": "0",
           "SEGMENTS_BACKFILL_RATE": "200",
           "SEGMENTS_PARTITIONS": str(settings.partitions)}
    return subprocess.run([sys.executable, "-m", "segments.cli", "backfill", *args],
                          input=stdin or "", capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120, check=False)


async def test_backfill_of_a_stored_connection_resumes_and_restarts(
        settings: Settings, redis: aioredis.Redis, localstripe_base: str) -> None:
    await ensure_topics(settings)
    # Written to segments.connections; the follower caches it in Redis, where
    # `segments backfill` reads it.
    store = ConnectionStore(redis, SecretBox(TEST_SECRET_KEY), prefix=settings.topic_prefix,
                            settings=settings)
    await store.start()
    try:
        assert await store.wait_loaded(30)
        conn = await store.create(connection_id=new_connection_id(), account_id="acme",
                                  api_key=KEY, webhook_secret="whsec_test",
                                  registration="manual", webhook_endpoint_id=None)
    finally:
        await store.stop()

    first = segments(settings, localstripe_base, conn.id)
    assert first.returncode == 0, first.stderr
    assert f"backfill {conn.id}: done" in first.stderr
    assert KEY not in first.stderr + first.stdout
    events = len(await topic_contents(settings))
    assert events > 20

    again = segments(settings, localstripe_base, conn.id)
    assert again.returncode == 0, again.stderr
    assert len(await topic_contents(settings)) == events  # finished: nothing repeated

    redo = segments(settings, localstripe_base, conn.id, "--restart")
    assert redo.returncode == 0, redo.stderr
    assert "starting over" in redo.stderr
    assert len(await topic_contents(settings)) == 2 * events


async def test_key_from_stdin_for_a_connection_not_in_the_store(
        settings: Settings, redis: aioredis.Redis, localstripe_base: str) -> None:
    missing = segments(settings, localstripe_base, "conn_" + "0" * 24)
    assert missing.returncode == 2
    assert "no connection" in missing.stderr

    done = segments(settings, localstripe_base, "conn_" + "1" * 24, "--key-file", "-",
                    "--account", "acme", "--since", "2000-01-01T00:00:00Z", stdin=KEY + "\n")
    assert done.returncode == 0, done.stderr
    assert len(await topic_contents(settings)) > 20
