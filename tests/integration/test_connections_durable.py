"""Connections live in `segments.connections`; Redis only caches them.

A private redis-server (never the session's: FLUSHALL there would wipe every other
test's keys) serves the connectors here; Kafka is the session broker.

Checked: FLUSHALL while the connector runs loses nothing (webhooks keep verifying, the
cache is rewritten); a new connector process with an empty (or stale) Redis serves every
connection and no deleted one; two replicas agree; `segments rotate-secrets` re-encrypts
every record under the first key, after which the old key can be dropped.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from common.settings import Settings
from connectors.secrets import SecretBox, SecretUnreadable
from connectors.store import ConnectionStore, new_connection_id
from segments.stack import LocalRedis, StackError
from tests.conftest import IN_CI
from tests.connector_harness import Connector, read_events, running_connector
from tests.localstripe_server import free_port
from tests.stripe_signing import sign
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def event(n: int) -> bytes:
    return (b'{"id":"evt_durable_%03d","object":"event","type":"customer.created",'
            b'"created":1700000000,"data":{"object":{"id":"cus_%03d","object":"customer",'
            b'"email":"c%03d@example.com"}}}' % (n, n, n))


def secret_of(n: int) -> str:
    return f"whsec_durable_{n:03d}"


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    local = LocalRedis(tmp_path / "redis", f"redis://127.0.0.1:{free_port()}/0")
    try:
        local.up()
    except StackError as exc:
        if IN_CI:
            pytest.fail(f"redis-server is required under CI=true: {exc}")
        pytest.skip(f"redis-server unavailable: {exc}")
    yield local
    local.down()


@pytest.fixture
def private(settings: Settings, private_redis: LocalRedis) -> Settings:
    return replace(settings, redis_url=private_redis.url)


@pytest.fixture
async def raw_redis(private: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(private.redis_url)
    yield client
    await client.aclose()


async def connect(connector: Connector, n: int) -> str:
    connection_id = new_connection_id()
    await connector.store.create(
        connection_id=connection_id, account_id=f"acct{n}", api_key=f"sk_test_durable_{n}",
        webhook_secret=secret_of(n), registration="manual", webhook_endpoint_id=None)
    return connection_id


async def post(connector: Connector, connection_id: str, n: int, body: bytes) -> int:
    status, _ = await connector.post_webhook(connection_id, body,
                                             {"Stripe-Signature": sign(body, secret_of(n))})
    return status


async def cached_ids(client: aioredis.Redis, prefix: str) -> set[str]:
    return {m.decode() for m in await client.smembers(f"{prefix}connections")}


async def test_flushall_while_the_connector_runs_loses_nothing(
    private: Settings, raw_redis: aioredis.Redis
) -> None:
    prefix = private.topic_prefix
    async with running_connector(private) as connector:
        ids = [await connect(connector, n) for n in range(3)]
        for n, cid in enumerate(ids):
            assert await post(connector, cid, n, event(n)) == 200
        assert await cached_ids(raw_redis, prefix) == set(ids)

        await raw_redis.flushall()
        assert await raw_redis.dbsize() == 0
        # The connector answers from its table (built from the topic): no gap at all.
        for n, cid in enumerate(ids):
            assert await post(connector, cid, n, event(10 + n)) == 200
        # ...and notices the flush (its sentinel key is gone) and rewrites the cache.
        await async_wait_for(lambda: cached_ids(raw_redis, prefix),
                             what="the connection cache rewritten")
        assert await cached_ids(raw_redis, prefix) == set(ids)
        for cid in ids:
            cached = await raw_redis.hgetall(f"{prefix}connection:{cid}")
            assert cached[b"id"] == cid.encode()
            # Only tokens: the plaintext secrets are never in Redis.
            assert b"whsec_durable" not in b"".join(cached.values())
        # A read-only (CLI) store reads the rewritten cache and decrypts it.
        reader = ConnectionStore(raw_redis, connector.store.box, prefix=prefix)
        conn = await reader.get(ids[1])
        assert conn is not None
        assert reader.api_key(conn) == "sk_test_durable_1"
        # Created after the flush: works too.
        late = await connect(connector, 7)
        assert await post(connector, late, 7, event(7)) == 200

    got = await read_events(private, expect=7)
    assert sorted(e.event["id"] for e in got) == sorted(
        [f"evt_durable_{n:03d}" for n in (0, 1, 2, 10, 11, 12, 7)])


async def test_a_new_connector_with_an_empty_or_stale_redis_serves_every_connection(
    private: Settings, raw_redis: aioredis.Redis
) -> None:
    prefix = private.topic_prefix
    async with running_connector(private) as first:
        ids = [await connect(first, n) for n in range(4)]
        stale = await raw_redis.hgetall(f"{prefix}connection:{ids[3]}")
        status, answer = await first.request("DELETE", f"/connections/{ids[3]}")
        assert (status, answer["deleted"]) == (200, True)
        assert await post(first, ids[3], 3, event(3)) == 404

    # Redis lost; then a stale copy of the deleted connection comes back (an old dump).
    await raw_redis.flushall()
    await raw_redis.hset(f"{prefix}connection:{ids[3]}", mapping=stale)
    await raw_redis.sadd(f"{prefix}connections", ids[3])

    async with running_connector(private) as second:
        assert await second.store.list_ids() == sorted(ids[:3])
        for n, cid in enumerate(ids[:3]):
            assert await post(second, cid, n, event(n)) == 200
            status, shown = await second.request("GET", f"/connections/{cid}")
            assert (status, shown["account_id"]) == (200, f"acct{n}")
        assert await post(second, ids[3], 3, event(3)) == 404
        assert (await second.request("GET", f"/connections/{ids[3]}"))[0] == 404
        # The cache was rebuilt from the topic: the stale entry is gone.
        assert await cached_ids(raw_redis, prefix) == set(ids[:3])
        assert not await raw_redis.exists(f"{prefix}connection:{ids[3]}")


async def test_two_replicas_agree(private: Settings) -> None:
    async with running_connector(private) as one, running_connector(private) as two:
        cid = await connect(one, 0)
        await async_wait_for(lambda: post(two, cid, 0, event(0)), what="replica two verifies")
        assert await post(two, cid, 0, event(0)) == 200
        assert await two.store.add_webhook_secret(cid, "whsec_rotated_by_two")
        body = event(1)
        header = {"Stripe-Signature": sign(body, "whsec_rotated_by_two")}

        async def one_has_the_new_secret() -> bool:
            return (await one.post_webhook(cid, body, header))[0] == 200

        await async_wait_for(one_has_the_new_secret, what="replica one sees the new secret")
        assert (await one.request("DELETE", f"/connections/{cid}"))[0] == 200

        async def gone() -> bool:
            return await post(two, cid, 0, event(2)) == 404

        await async_wait_for(gone, what="replica two sees the deletion")


def rotate_cli(settings: Settings, keys: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "REDIS_URL": settings.redis_url, "SEGMENTS_TOPIC_PREFIX": settings.topic_prefix,
           "SEGMENTS_SECRET_KEY": keys, "SEGMENTS_PARTITIONS": str(settings.partitions)}
    return subprocess.run([sys.executable, "-m", "segments.cli", "rotate-secrets", *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
                          check=False)


async def test_rotate_secrets_then_the_old_key_can_go(
    private: Settings, raw_redis: aioredis.Redis
) -> None:
    old, new = new_key(), new_key()
    with_old = replace(private, secret_key=old)
    async with running_connector(with_old) as connector:
        ids = [await connect(connector, n) for n in range(3)]

    # Before: the new key alone reads nothing.
    new_only = SecretBox(new)
    reader = ConnectionStore(raw_redis, new_only, prefix=private.topic_prefix)
    for cid in ids:
        conn = await reader.get(cid)
        assert conn is not None
        with pytest.raises(SecretUnreadable):
            reader.api_key(conn)

    # Without the old key in the list: refused, nothing changed, ids named.
    refused = rotate_cli(private, new)
    assert refused.returncode == 1
    assert all(cid in refused.stderr for cid in ids)
    assert "3 unreadable" in refused.stdout

    dry = rotate_cli(private, f"{new},{old}", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would re-encrypt 3, 0 already" in dry.stdout

    done = rotate_cli(private, f"{new},{old}")
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 3, 0 already under the first key, 0 unreadable" in done.stdout
    assert "[3/3]" in done.stdout
    for secret in ("sk_test_durable", "whsec_durable", old, new):
        assert secret not in done.stdout + done.stderr

    again = rotate_cli(private, f"{new},{old}")
    assert again.returncode == 0, again.stderr
    assert "re-encrypted 0, 3 already under the first key" in again.stdout

    # The Redis cache holds the new tokens too...
    for n, cid in enumerate(ids):
        conn = await reader.get(cid)
        assert conn is not None
        assert reader.api_key(conn) == f"sk_test_durable_{n}"
    # ...and a connector with only the new key serves every connection from the topic.
    await raw_redis.flushall()
    async with running_connector(replace(private, secret_key=new)) as connector:
        for n, cid in enumerate(ids):
            assert await post(connector, cid, n, event(n)) == 200
            conn = await connector.store.get(cid)
            assert conn is not None
            assert connector.store.api_key(conn) == f"sk_test_durable_{n}"
