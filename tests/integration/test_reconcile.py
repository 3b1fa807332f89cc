"""Gap repair (`connectors.reconcile`): an outage longer than Stripe's retries loses nothing.

localstripe posts each webhook once: what it posts while the connector is down is gone
unless the reconciler reads it back from the Events API when the connector starts again.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import stripe
from aiohttp.test_utils import TestServer
from redis.exceptions import RedisError

from common.settings import Settings
from common.stripe_event_types import NEEDED_EVENT_TYPES
from connectors.backfill import BackfillOptions
from connectors.reconcile import ReconcileOptions, SeenEvents
from connectors.server import RECONCILER
from connectors.signing import sign
from tests.connector_harness import read_events, running_connector
from tests.integration.test_backfill_stripe_semantics import StripeLike
from tests.integration.test_connections import API_KEY, connect, make_activity
from tests.localstripe_server import running_localstripe
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration

#: localstripe runs on this host's clock and lists at once: no settle delay. One round
#: at start; the test runs further rounds itself.
AT_START_ONLY = ReconcileOptions(settle_s=0, rate_per_s=200, interval_s=3600)


@pytest.fixture(scope="module")
def localstripe_url() -> Iterator[str]:
    with running_localstripe() as base:
        yield base


def needed_event_ids(base: str, since: int) -> set[str]:
    """Every event of a needed type localstripe made since `since`, via the library."""
    client = stripe.StripeClient(API_KEY, base_addresses={"api": base})
    listing = client.v1.events.list({"limit": 100, "created": {"gte": since}})
    return {e.id for e in listing.auto_paging_iter() if e.type in NEEDED_EVENT_TYPES}


async def test_events_made_while_the_connector_was_down_arrive_once(
    settings: Settings, localstripe_url: str
) -> None:
    emulated = replace(settings, stripe_api_base=localstripe_url)
    started = int(time.time())
    async with running_connector(emulated, registration="localstripe", reconcile=True,
                                 reconcile_options=AT_START_ONLY) as connector:
        status, created = await connect(connector)
        assert status == 201, created
        connection_id = created["id"]
        await asyncio.to_thread(make_activity, localstripe_url, "before@example.com")
        before = await asyncio.to_thread(needed_event_ids, localstripe_url, started)

        async def delivered() -> bool:
            got = await read_events(emulated, expect=len(before), timeout=2, quiet=0.2)
            return {e.event_id for e in got} >= before

        await async_wait_for(delivered, 60, interval=0.3, what="webhooks before the outage")

    # The outage: localstripe keeps producing, its webhooks fail and are not retried.
    await asyncio.to_thread(make_activity, localstripe_url, "during@example.com")
    everything = await asyncio.to_thread(needed_event_ids, localstripe_url, started)
    missed = everything - before
    assert missed, "the outage produced no events"
    await asyncio.sleep(2.5)  # localstripe posts after ~1 s: let those posts fail
    topic = {e.event_id for e in await read_events(emulated)}
    assert not topic & missed, "webhooks reached a stopped connector?"

    async with running_connector(emulated, registration="localstripe", declare_topics=False,
                                 reconcile=True, reconcile_options=AT_START_ONLY) as restarted:
        async def repaired() -> bool:
            got = await read_events(emulated, expect=len(everything), timeout=2, quiet=0.2)
            return {e.event_id for e in got} >= everything

        await async_wait_for(repaired, 60, interval=0.3, what="the reconciler at start")
        # More rounds read the same window again (the settle overlap) and publish nothing.
        again = await restarted.app[RECONCILER].run_once()
        assert again == {connection_id: 0}

    got = await read_events(emulated)  # to the end offsets
    counts = Counter(e.event_id for e in got)
    assert set(counts) == everything
    assert [i for i, n in counts.items() if n > 1] == []  # none twice
    sources = {e.event_id: e.source for e in got}
    assert {i for i in missed if sources[i] != "backfill"} == set()
    assert {i for i in before if sources[i] != "webhook"} == set()
    assert all(e.connection_id == connection_id for e in got)


async def test_the_watermark_is_the_newest_event_seen(settings: Settings,
                                                      redis: aioredis.Redis) -> None:
    seen = SeenEvents(redis, settings.topic_prefix)
    assert await seen.watermark("conn_x") is None
    await seen.add("conn_x", [{"id": "evt_b", "created": 200}, {"id": "evt_a", "created": 100},
                              {"id": "evt_no_time"}])
    assert await seen.watermark("conn_x") == 200
    assert await seen.since("conn_x", 150) == {"evt_b"}
    await seen.prune("conn_x", 150)
    assert await seen.since("conn_x", 0) == {"evt_b"}
    await seen.forget("conn_x")
    assert await seen.watermark("conn_x") is None


async def zadds_of(monitor: Any, key: str, marker: str) -> int:
    """`ZADD`s of `key` MONITOR showed before the `ECHO marker` sent after them."""
    count = 0
    while True:
        command = (await monitor.next_command())["command"]
        if command == f"ECHO {marker}":
            return count
        if command.startswith(f"ZADD {key} "):
            count += 1


async def test_concurrent_adds_are_one_write_each_caller_waits_for(
        settings: Settings, redis: aioredis.Redis) -> None:
    """Hundreds of webhooks' records at once are a few `ZADD`s, and every caller returns
    only once its own id is in Redis."""
    # Room for a connection per caller: neither the adds nor the checks wait for one.
    wide = aioredis.Redis.from_url(settings.redis_url, max_connections=1000)
    seen = SeenEvents(wide, settings.topic_prefix)
    key = seen.key("conn_many")

    async def add(n: int) -> bool:
        await seen.add("conn_many", [{"id": f"evt_{n}", "created": 1000 + n}])
        return await wide.zscore(key, f"evt_{n}") == 1000 + n

    try:
        async with redis.monitor() as monitor:
            written = await asyncio.gather(*(add(n) for n in range(300)))
            marker = f"end-{time.time_ns()}"
            await wide.echo(marker)
            calls = await zadds_of(monitor, key, marker)
        assert all(written), f"{written.count(False)} adds returned before their write"
        assert await seen.since("conn_many", 0) == {f"evt_{n}" for n in range(300)}
        assert 1 <= calls <= 5, f"{calls} ZADDs for 300 concurrent adds"
        await seen.forget("conn_many")
    finally:
        await wide.aclose()


async def test_a_failed_write_reaches_every_caller(settings: Settings) -> None:
    """Redis unreachable: each caller gets the error (the webhook answers 200 anyway and
    the reconciler publishes the event again, see `connectors.webhooks`)."""
    unreachable = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    seen = SeenEvents(unreachable, settings.topic_prefix)
    try:
        results = await asyncio.gather(
            *(seen.add("conn_x", [{"id": f"evt_{n}", "created": n}]) for n in range(20)),
            return_exceptions=True)
    finally:
        await unreachable.aclose()
    assert len(results) == 20
    assert all(isinstance(r, RedisError) for r in results), results


# --- Stripe's listing semantics: types[], newest first, eventual consistency -------------


def stripe_event(event_id: str, created: int, seq: int) -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": "charge.succeeded", "created": created,
            "seq": seq, "api_version": "2024-06-20", "livemode": False,
            "data": {"object": {"object": "charge", "id": f"ch_{event_id}",
                                "customer": "cus_1", "amount": 500, "currency": "usd"}}}


async def test_the_settle_overlap_catches_missed_and_late_listed_events(
    settings: Settings,
) -> None:
    """A webhook brought W; M (older than W, within the settle delay) was missed; L was
    made at once but Stripe lists it only later. Rounds publish M, then L,
    then nothing; W is never published again."""
    now = int(time.time())
    w, m = stripe_event("evt_w", now - 5, 2), stripe_event("evt_m", now - 30, 1)
    fake = StripeLike([w, m], lag_s=0)
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        fake_url = str(server.make_url("")).rstrip("/")
        options = ReconcileOptions(settle_s=60, rate_per_s=200, interval_s=3600)
        async with running_connector(replace(settings, stripe_api_base=fake_url),
                                     reconcile_options=options) as connector:
            status, created = await connect(connector, webhook_secret="whsec_manual_test")
            assert status == 201, created
            connection_id = created["id"]
            body = orjson.dumps(w)
            status, answer = await connector.post_webhook(
                connection_id, body, {"Stripe-Signature": sign(body, "whsec_manual_test"),
                                      "Content-Type": "application/json"})
            assert status == 200, answer
            reconciler = connector.app[RECONCILER]
            assert await reconciler.run_once() == {connection_id: 1}  # M
            # L is made now, but Stripe's listing shows it only a while later.
            late = stripe_event("evt_l", int(time.time()), 3)
            fake.lag_s = 30
            fake.events = sorted([*fake.events, late], key=lambda e: (e["created"], e["seq"]),
                                 reverse=True)
            assert await reconciler.run_once() == {connection_id: 0}
            fake.lag_s = 0  # a while later
            assert await reconciler.run_once() == {connection_id: 1}  # L
            assert await reconciler.run_once() == {connection_id: 0}
            # Stripe's types[] filter was used, in groups of at most 20 (the connect's
            # key check lists without one).
            used = [t for t in fake.types_seen if t]
            assert len(used) >= 4
            assert all(len(t) <= 20 for t in used)
    finally:
        await server.close()
    got = await read_events(settings)
    assert sorted((e.event_id, e.source) for e in got) == [
        ("evt_l", "backfill"), ("evt_m", "backfill"), ("evt_w", "webhook")]


async def test_the_backfills_tail_is_not_published_again(settings: Settings) -> None:
    """The backfill reads up to the connection's creation; the reconciler's first window
    starts a settle delay before it. What the backfill published there counts as seen."""
    now = int(time.time())
    fake = StripeLike([stripe_event("evt_tail", now - 10, 1),
                       stripe_event("evt_old", now - 3600, 0)])
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        fake_url = str(server.make_url("")).rstrip("/")
        async with running_connector(
                replace(settings, stripe_api_base=fake_url), start_backfill=True,
                backfill_options=BackfillOptions(rate_per_s=200, settle_s=0, overlap_s=0),
                reconcile_options=ReconcileOptions(settle_s=60, rate_per_s=200,
                                                   interval_s=3600)) as connector:
            status, created = await connect(connector, webhook_secret="whsec_manual_test")
            assert status == 201, created

            async def backfilled() -> bool:
                _, doc = await connector.request("GET", f"/connections/{created['id']}")
                return isinstance(doc["backfill"], dict) and doc["backfill"]["state"] == "done"

            await async_wait_for(backfilled, 30, interval=0.2, what="the backfill")
            assert await connector.app[RECONCILER].run_once() == {created["id"]: 0}
    finally:
        await server.close()
    got = await read_events(settings)
    assert sorted(e.event_id for e in got) == ["evt_old", "evt_tail"]
