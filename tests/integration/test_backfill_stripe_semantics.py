"""The backfill against a server that lists events the way Stripe does (localstripe does not).

Stripe lists newest first, filters by `types[]` (at most 20), pages with
`starting_after`, and answers 429 with `Retry-After` when the rate limit is exceeded.
`StripeLike` below is a real HTTP server (aiohttp, loopback) with exactly that
behaviour over events spread across hours, so the backfill's slicing, its oldest-first
order, its pacing and its 429 handling are tested through the official library and the
real Kafka topic.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer

from common.settings import Settings
from common.stripe_event_types import NEEDED_EVENT_TYPES
from common.topics import ensure_topics
from connectors.backfill import (
    BackfillJob,
    BackfillOptions,
    BackfillProgress,
    read_progress,
    run_backfill,
)
from connectors.contract import RawEvent
from connectors.sink import KafkaEventSink
from tests.integration.test_backfill import topic_contents

pytestmark = pytest.mark.integration

TYPES = sorted(NEEDED_EVENT_TYPES)


class StripeLike:
    """`GET /v1/events` and `GET /v1/customers` with Stripe's listing semantics."""

    def __init__(self, events: list[dict[str, Any]], *, rate_limit_first: int = 0,
                 lag_s: int = 0) -> None:
        # Stripe's order: newest first; within a second, the later-made event first.
        self.events = sorted(events, key=lambda e: (e["created"], e["seq"]), reverse=True)
        self.rate_limit_first = rate_limit_first
        #: Eventual consistency: an event is listed only once it is `lag_s` seconds old.
        self.lag_s = lag_s
        self.request_times: list[float] = []
        self.types_seen: list[list[str]] = []
        self.windows: list[tuple[int, int]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/events", self.list_events)
        app.router.add_get("/v1/customers", self.list_customers)
        return app

    def _limited(self) -> web.Response | None:
        self.request_times.append(time.monotonic())
        if len(self.request_times) <= self.rate_limit_first:
            return web.json_response(
                {"error": {"type": "invalid_request_error", "message": "Too many requests"}},
                status=429, headers={"Retry-After": "1"})
        return None

    async def list_customers(self, request: web.Request) -> web.Response:
        return self._limited() or web.json_response(
            {"object": "list", "data": [], "has_more": False, "url": "/v1/customers"})

    async def list_events(self, request: web.Request) -> web.Response:
        limited = self._limited()
        if limited is not None:
            return limited
        q = request.query
        types = [v for k, v in q.items() if re.fullmatch(r"types\[\d*\]", k)]
        if len(types) > 20:
            return web.json_response({"error": {"type": "invalid_request_error",
                                                "param": "types"}}, status=400)
        self.types_seen.append(types)
        gte, lte = int(q.get("created[gte]", 0)), int(q.get("created[lte]", 2**40))
        self.windows.append((gte, lte))
        listed_before = time.time() - self.lag_s
        rows = [e for e in self.events if gte <= e["created"] <= lte
                and e["created"] <= listed_before and (not types or e["type"] in types)]
        if "starting_after" in q:
            ids = [e["id"] for e in rows]
            rows = rows[ids.index(q["starting_after"]) + 1:]
        limit = int(q.get("limit", 10))
        return web.Response(body=orjson.dumps({
            "object": "list", "url": "/v1/events", "has_more": len(rows) > limit,
            "data": rows[:limit]}), content_type="application/json")


def make_events(n: int, start: int) -> list[dict[str, Any]]:
    """`n` events over ~2 hours, in bursts sharing a second, some of unneeded types."""
    out = []
    for seq in range(n):
        created = start + (seq // 4) * 53  # four events per second, every 53 s
        kind = TYPES[seq % len(TYPES)] if seq % 7 else "balance.available"
        customer = f"cus_{seq % 9}"
        out.append({"id": f"evt_{seq:05d}_{uuid.uuid4().hex[:6]}", "object": "event",
                    "type": kind, "created": created, "seq": seq, "api_version": "2024-06-20",
                    "data": {"object": {"object": "charge", "id": f"ch_{seq}",
                                        "customer": customer}}})
    return out


async def _serve(fake: StripeLike) -> TestServer:
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    return server


@pytest.mark.parametrize("in_flight", [1, 100])
async def test_oldest_first_across_slices_with_types_filter(
        settings: Settings, redis: aioredis.Redis, in_flight: int) -> None:
    start = int(time.time()) - 3 * 3600
    events = make_events(160, start)
    fake = StripeLike(events)
    server = await _serve(fake)
    settings = Settings(**{**settings.__dict__,
                           "stripe_api_base": str(server.make_url("")).rstrip("/")})
    await ensure_topics(settings)
    options = BackfillOptions(rate_per_s=500, settle_s=0, overlap_s=0, page_size=10, slice_cap=24,
                              max_in_flight=in_flight)
    job = BackfillJob("conn_" + uuid.uuid4().hex[:24], "acme", "sk_test_x", since=start - 60)
    try:
        async with KafkaEventSink(settings) as sink:
            recorder = Recorder(sink)
            final = await run_backfill(job, settings=settings, sink=recorder, redis=redis,
                                       options=options)
    finally:
        await server.close()

    wanted = [e for e in events if e["type"] in NEEDED_EVENT_TYPES]
    produced = await topic_contents(settings)
    assert sorted(e.event_id for e in produced) == sorted(e["id"] for e in wanted)
    assert final.state == "done"
    assert final.filter == "types"
    assert final.events == len(wanted)
    assert all(t == TYPES for t in fake.types_seen), "one types[] group, all needed types"
    # Oldest first, including Stripe's order within one second, for each customer.
    for customer in {e["data"]["object"]["customer"] for e in wanted}:
        seqs = [e.event["seq"] for e in produced
                if e.event["data"]["object"]["customer"] == customer]
        assert seqs == sorted(seqs)
    if in_flight == 1:  # strictly sequential: oldest first across customers too
        assert recorder.acked == sorted(recorder.acked)
    # The window was cut into slices, as the cap demands, and paged through.
    assert final.pages > len(wanted) // options.page_size
    assert await read_progress(redis, settings, job.connection_id) == final


class Recorder:
    """The real sink, noting the order in which Kafka acknowledged events."""

    def __init__(self, inner: KafkaEventSink) -> None:
        self.inner = inner
        self.acked: list[int] = []

    async def publish(self, event: RawEvent) -> None:
        await self.inner.publish(event)
        self.acked.append(int(event.event["seq"]))


async def test_requests_are_paced_and_429_waits_for_retry_after(
        settings: Settings, redis: aioredis.Redis) -> None:
    start = int(time.time()) - 3600
    events = make_events(60, start)
    fake = StripeLike(events, rate_limit_first=1)
    server = await _serve(fake)
    settings = Settings(**{**settings.__dict__,
                           "stripe_api_base": str(server.make_url("")).rstrip("/")})
    await ensure_topics(settings)
    options = BackfillOptions(rate_per_s=10, settle_s=0, overlap_s=0, page_size=10)
    job = BackfillJob("conn_" + uuid.uuid4().hex[:24], "acme", "sk_test_x", since=start - 60)
    try:
        async with KafkaEventSink(settings) as sink:
            final = await run_backfill(job, settings=settings, sink=sink, redis=redis,
                                       options=options)
    finally:
        await server.close()

    assert final.state == "done"
    assert len(await topic_contents(settings)) == final.events > 0
    times = fake.request_times
    assert times[1] - times[0] >= 0.95, "the 429's Retry-After: 1 was honoured"
    later = times[1:]
    assert len(later) >= 5
    # Never faster than 10 requests/s. Arrival times at the server jitter on a loaded
    # machine (one request delivered late makes the next gap short), so the rate is
    # checked over every window of 5 requests, and single gaps only against a burst.
    gaps = [b - a for a, b in itertools.pairwise(later)]
    windows = [later[i + 4] - later[i] for i in range(len(later) - 4)]
    assert min(windows) >= 4 * 0.1 - 0.05, windows
    assert min(gaps) >= 0.05, gaps


async def test_the_seconds_before_connecting_are_read_after_the_settle_delay(
        settings: Settings, redis: aioredis.Redis) -> None:
    """Issue 14: a customer who paid seconds before the account was connected appears.

    The listing is eventually consistent (an event is listed `lag` seconds after it is
    made) and the backfill's settle delay matches it. Webhooks cover what happens after
    the endpoint exists (`until`); everything before must come from the backfill, so it
    waits out the settle delay and reads the tail before it reports done.
    """
    lag = 3
    # Topics first: creating them can take seconds on a loaded machine, and the history
    # must be read before the window settles for the settling phase to be seen.
    await ensure_topics(settings)
    connected = int(time.time())
    events = [
        _event("evt_old", connected - 3600, 0),
        _event("evt_just_before", connected - 1, 1),  # paid a second before connecting
        _event("evt_at_connect", connected, 2),
    ]
    fake = StripeLike(events, lag_s=lag)
    server = await _serve(fake)
    settings = Settings(**{**settings.__dict__,
                           "stripe_api_base": str(server.make_url("")).rstrip("/")})
    options = BackfillOptions(rate_per_s=500, settle_s=lag, overlap_s=1, page_size=10)
    job = BackfillJob("conn_" + uuid.uuid4().hex[:24], "acme", "sk_test_x",
                      since=connected - 7200, until=connected)
    seen: list[BackfillProgress] = []
    try:
        async with KafkaEventSink(settings) as sink:
            final = await run_backfill(job, settings=settings, sink=sink, redis=redis,
                                       on_progress=seen.append, options=options)
    finally:
        await server.close()

    produced = await topic_contents(settings)
    assert sorted(e.event_id for e in produced) == ["evt_at_connect", "evt_just_before",
                                                     "evt_old"]
    target = connected + options.overlap_s
    assert (final.state, final.phase, final.until, final.target) == ("done", "done",
                                                                     target, target)
    assert final.updated_at >= target + lag, "done only once the whole window had settled"
    # Nothing newer than the window's end was asked for, nothing unsettled either.
    assert max(hi for _, hi in fake.windows) == target
    phases = [p.phase for p in seen]
    assert phases.index("history") < phases.index("settling") < phases.index("tail")
    settling = next(p for p in seen if p.phase == "settling")
    doc = settling.to_json()  # what GET /connections/{id} shows meanwhile
    assert (doc["state"], doc["phase_text"], doc["settle_until"]) == (
        "running", "waiting for Stripe's Events API to settle", target + lag)
    assert await read_progress(redis, settings, job.connection_id) == final


def _event(event_id: str, created: int, seq: int) -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": "charge.succeeded", "created": created,
            "seq": seq, "api_version": "2024-06-20",
            "data": {"object": {"object": "charge", "id": f"ch_{seq}", "customer": "cus_1"}}}
