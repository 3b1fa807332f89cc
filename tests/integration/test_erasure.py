"""Erasure proved black-box: after `segments forget`, one person's email is gone from
the latest state of every topic that keeps state (compacted `segments.members`, every
worker changelog `segments.state.*`, read to their end offsets, latest value per key),
from Redis, and from the query API; another contact and the same email in another
account stay. A real worker, read-model writer and API on the real broker and Redis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from common.settings import Settings
from common.topics import (
    BY_CHARGE_TOPIC,
    CONTROL_TOPIC,
    DLQ_TOPIC,
    EVENTS_TOPIC,
    FACTS_TOPIC,
    MEMBERS_TOPIC,
    STATE_NAMES,
    ensure_topics,
    state_topic,
)
from connectors.emails import EmailResolver
from connectors.secrets import SecretBox, resolve_secret_key
from connectors.store import ConnectionStore, new_connection_id
from serving.erasure import forget
from serving.server import ApiProcess
from stream.app import StreamOptions, create_app
from tests import stripe_events as se
from tests.connector_harness import running_connector
from tests.drain import read_to_end, wait_processed
from tests.integration.test_pipeline import Topics, rule
from tests.tokens import ADMIN, bearer
from tests.waiting import async_wait_for
from tests.worker_runner import running

pytestmark = pytest.mark.integration

ANN = "ann@example.com"


async def no_key(connection_id: str) -> str | None:
    return None


@pytest.fixture
async def topics(settings: Settings) -> AsyncIterator[Topics]:
    await ensure_topics(settings)
    t = Topics(settings)
    await t.producer.start()
    yield t
    await t.close()


async def members(http: aiohttp.ClientSession, api: ApiProcess, account: str) -> list[str]:
    async with http.get(f"{api.url}/accounts/{account}/segments/vip/members",
                        headers=ADMIN) as resp:
        if resp.status == 404:
            return []
        doc = await resp.json()
        return sorted(m["email"] if isinstance(m, dict) else m for m in doc["members"])


async def latest_naming(settings: Settings, topic: str, email: str) -> list[str]:
    """Keys of `topic` whose latest record is a value (not a tombstone) naming `email`."""
    latest: dict[bytes, bytes | None] = {}
    for record in await read_to_end(settings, settings.topic(topic)):
        latest[record.key] = record.value
    return [repr(k) for k, v in latest.items()
            if v is not None and (email.encode() in k or email.encode() in v)]


async def redis_naming(redis: aioredis.Redis, prefix: str, email: str) -> list[str]:
    found = []
    async for raw in redis.scan_iter(match=prefix.replace("*", "\\*") + "*", count=1000):
        kind = (await redis.type(raw)).decode()
        if kind == "string":
            value: object = await redis.get(raw)
        elif kind == "set":
            value = await redis.smembers(raw)
        elif kind == "zset":
            value = await redis.zrange(raw, 0, -1)
        elif kind == "hash":
            value = await redis.hgetall(raw)
        else:
            value = await redis.lrange(raw, 0, -1) if kind == "list" else None
        if email.encode() in raw or email.encode() in repr(value).encode():
            found.append(raw.decode())
    return found


@pytest.mark.parametrize("via", ["cli", "api"])
async def test_forget_erases_one_person_everywhere(settings: Settings, topics: Topics,
                                                   redis: aioredis.Redis, via: str) -> None:
    # The account's connections (forget erases customer emails per connection).
    # Written as the connector writes them: to segments.connections, cached in Redis.
    store = ConnectionStore(redis, SecretBox(resolve_secret_key(settings)),
                            prefix=settings.topic_prefix, settings=settings)
    await store.start()
    ids = {"acme": new_connection_id(), "globex": new_connection_id()}
    try:
        assert await store.wait_loaded(30)
        for account, connection_id in ids.items():
            await store.create(connection_id=connection_id, account_id=account,
                               api_key="sk_test_erasure_0123456789",
                               webhook_secret="whsec_erasure_0123456789",
                               registration="manual", webhook_endpoint_id=None)
    finally:
        await store.stop()
    # The connector's customer-email cache names her too (and Bob, who stays).
    cache = EmailResolver(redis, settings, no_key)
    await cache.remember(ids["acme"], "cus_cached", "Ann@Example.com")
    await cache.remember(ids["acme"], "cus_bob", "bob@example.com")
    app = create_app(settings, StreamOptions(tick_interval=0.2))
    async with running(app), ApiProcess(settings, port=0) as api, \
            aiohttp.ClientSession() as http:
        for account in ("acme", "globex"):
            await topics.rule(rule("vip", "charge_succeeded",
                                   {"field": "amount", "op": "gt", "value": "50"},
                                   account=account), account, "vip")
        now = int(time.time())
        ann = se.customer(email="Ann@Example.com")
        await topics.raw(se.event("customer.created", ann, created=now),
                         connection=ids["acme"])
        # Ann's charge names only her customer: her email comes from the customers state.
        await topics.raw(se.event("charge.succeeded", se.charge(
            amount=10_000, customer=ann["id"], billing_email=None, created=now), created=now),
            connection=ids["acme"])
        await topics.raw(se.event("charge.succeeded", se.charge(
            amount=9_000, billing_email="bob@example.com", created=now), created=now),
            connection=ids["acme"])
        await topics.raw(se.event("charge.succeeded", se.charge(
            amount=9_000, billing_email=ANN, created=now), created=now),
            account="globex", connection=ids["globex"])

        seen: list[object] = []

        async def everyone_in() -> bool:
            now = (await members(http, api, "acme"), await members(http, api, "globex"))
            seen[:] = [now]
            return now == ([ANN, "bob@example.com"], [ANN])

        try:
            await async_wait_for(everyone_in, 60, what="both contacts in acme's segment")
        except Exception as exc:
            async with http.get(f"{api.url}/accounts/acme/segments/vip/members",
                                headers=ADMIN) as resp:
                body = await resp.text()
            raise AssertionError(f"members: {seen}; {resp.status} {body[:300]}; changes "
                                 f"{[(c.email, c.change) for c in await topics.changes()]}"
                                 ) from exc
        assert await latest_naming(settings, MEMBERS_TOPIC, ANN)

        # Everything about Ann processed first (the charges' payers travel through
        # segments.by-charge on their own): erasure acts on what the workers hold.
        group = f"{settings.topic_prefix}segments"
        await wait_processed(settings, group, [
            settings.topic(t) for t in (EVENTS_TOPIC, BY_CHARGE_TOPIC, FACTS_TOPIC)])
        if via == "cli":
            sent = await forget(settings, "acme", " Ann@Example.com ")
            assert sent.partitions == settings.partitions
        else:
            url = f"{api.url}/accounts/acme/contacts/Ann@Example.com"
            async with http.delete(url, headers=bearer("globex")) as resp:
                assert resp.status == 404  # another account's token: as if unknown
            async with http.delete(url) as resp:
                assert resp.status == 401
            async with http.delete(url, headers=bearer("acme")) as resp:
                assert resp.status == 202
                assert (await resp.json())["partitions"] == settings.partitions

        async def ann_gone() -> bool:
            return await members(http, api, "acme") == ["bob@example.com"]

        await async_wait_for(ann_gone, 60, what="ann gone from the API")
        await wait_processed(settings, group,
                             [settings.topic(CONTROL_TOPIC)])

        dead = await read_to_end(settings, settings.topic(DLQ_TOPIC))
        assert dead == [], [dict(r.headers) for r in dead]
        # Every topic that keeps state, latest value per key: only globex's Ann is left.
        for topic in (MEMBERS_TOPIC, *(state_topic(n) for n in STATE_NAMES)):
            naming = await latest_naming(settings, topic, ANN)
            # globex's own: keyed by account, or by globex's connection.
            assert all("globex" in k or ids["globex"] in k for k in naming), (topic, naming)
        assert await latest_naming(settings, state_topic("contacts"), ANN)  # globex's
        assert not [k for k in await latest_naming(settings, state_topic("customers"), ANN)]
        # Redis (read model, whatever generation): only globex's.
        in_redis = await redis_naming(redis, settings.topic_prefix, ANN)
        assert in_redis
        assert all("globex" in k for k in in_redis), in_redis
        assert await redis.get(f"{settings.topic_prefix}email:{ids['acme']}:cus_bob")
        # The API.
        async with http.get(f"{api.url}/accounts/acme/contacts/{ANN}/segments",
                            headers=ADMIN) as resp:
            assert (await resp.json())["segments"] == []
        assert await members(http, api, "globex") == [ANN]


async def test_purging_a_connection_erases_everything_of_its_account(
        settings: Settings, topics: Topics, redis: aioredis.Redis) -> None:
    """`DELETE /connections/{id}?purge=true` on the connector's internal port: refused
    while the account has another connection; then every contact of the account is gone
    from the workers' state, `segments.members`, Redis and the API; another account's
    contacts stay."""
    app = create_app(settings, StreamOptions(tick_interval=0.2))
    async with running_connector(settings) as connector, running(app), \
            ApiProcess(settings, port=0) as api, aiohttp.ClientSession() as http:
        ids = {"acme": new_connection_id(), "globex": new_connection_id(),
               "acme-2": new_connection_id()}
        for name, connection_id in ids.items():
            await connector.store.create(
                connection_id=connection_id, account_id=name.split("-")[0],
                api_key="sk_test_purge_0123456789", webhook_secret="whsec_purge_0123456789",
                registration="manual", webhook_endpoint_id=None)
        for account in ("acme", "globex"):
            await topics.rule(rule("vip", "charge_succeeded",
                                   {"field": "amount", "op": "gt", "value": "50"},
                                   account=account), account, "vip")
        now = int(time.time())
        for email, account in ((ANN, "acme"), ("bob@example.com", "acme"), (ANN, "globex")):
            await topics.raw(se.event("charge.succeeded", se.charge(
                amount=9_000, billing_email=email, created=now), created=now),
                account=account, connection=ids[account])

        async def everyone_in() -> bool:
            return (await members(http, api, "acme"), await members(http, api, "globex")) \
                == ([ANN, "bob@example.com"], [ANN])

        await async_wait_for(everyone_in, 60, what="both accounts' members")
        group = f"{settings.topic_prefix}segments"
        await wait_processed(settings, group, [
            settings.topic(t) for t in (EVENTS_TOPIC, BY_CHARGE_TOPIC, FACTS_TOPIC)])

        def delete(name: str, query: str = "?purge=true") -> Any:
            return http.delete(f"{connector.admin_url}/connections/{ids[name]}{query}",
                               headers=bearer("acme", "globex"))

        async with delete("acme") as resp:
            assert resp.status == 409  # acme-2 still feeds acme's contacts
        async with delete("acme-2", "") as resp:
            assert resp.status == 200
        async with delete("acme") as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["purge_partitions"] == settings.partitions

        async def acme_empty() -> bool:
            return await members(http, api, "acme") == []

        await async_wait_for(acme_empty, 60, what="acme's members gone")
        await wait_processed(settings, group, [settings.topic(CONTROL_TOPIC)])
        assert await read_to_end(settings, settings.topic(DLQ_TOPIC)) == []
        for topic in (MEMBERS_TOPIC, *(state_topic(n) for n in STATE_NAMES)):
            assert await latest_naming(settings, topic, "bob@example.com") == [], topic
            naming = await latest_naming(settings, topic, ANN)
            assert all("globex" in k or ids["globex"] in k for k in naming), (topic, naming)
        assert await latest_naming(settings, state_topic("contacts"), ANN)  # globex's
        assert await redis_naming(redis, settings.topic_prefix, "bob@example.com") == []
        assert all("globex" in k for k in await redis_naming(redis, settings.topic_prefix, ANN))
        assert await members(http, api, "globex") == [ANN]
