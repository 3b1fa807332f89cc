"""Run the connector in-process on a real loopback port, and read what it produced.

The connector listens on a real TCP port (localstripe must be able to post to it) and
talks to the session's real Kafka and Redis. `read_events` reads the prefixed raw-event
topic from the beginning with a deadline, which is how tests prove that nothing (or
exactly what they expect) reached Kafka.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka import TopicPartition

from common import kafka
from common.settings import Settings
from common.topics import EVENTS_TOPIC, TopicSpec, ensure_topics
from connectors.contract import RawEvent
from connectors.server import SINK, STORE, create_admin_app, create_app
from connectors.store import ConnectionStore
from connectors.supervised_sink import SupervisedSink
from tests.localstripe_server import free_port
from tests.record_schemas import check_records
from tests.tokens import ADMIN

#: Only the raw-event topic: creating all six per test would be wasted time.
EVENTS_ONLY = (TopicSpec(EVENTS_TOPIC),)


@dataclass
class Connector:
    #: The public listener (webhooks only) and the internal one (connections, health).
    url: str
    admin_url: str
    settings: Settings
    app: web.Application
    http: aiohttp.ClientSession

    @property
    def store(self) -> ConnectionStore:
        return self.app[STORE]

    @property
    def sink(self) -> SupervisedSink:
        return self.app[SINK]

    async def post_webhook(self, connection_id: str, body: bytes,
                           headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.http.post(f"{self.url}/webhooks/stripe/{connection_id}", data=body,
                                  headers=headers or {}) as resp:
            return resp.status, await resp.json(content_type=None)

    async def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                      **kw: Any) -> tuple[int, Any]:
        """A request to the internal port, with an admin token unless `headers` say
        otherwise (`headers={}`: no token)."""
        headers = ADMIN if headers is None else headers
        async with self.http.request(method, f"{self.admin_url}{path}", headers=headers,
                                     **kw) as resp:
            return resp.status, await resp.json(content_type=None)


@asynccontextmanager
async def running_connector(settings: Settings, *, wait_kafka: bool = True,
                            declare_topics: bool = True, **kw: Any) -> AsyncIterator[Connector]:
    if declare_topics:
        await ensure_topics(settings, EVENTS_ONLY)
    port = free_port()
    settings = replace(settings, public_url=f"http://127.0.0.1:{port}", connector_port=port)
    kw.setdefault("start_backfill", False)
    # Background rounds against Stripe only where a test asks for them.
    kw.setdefault("check_health", False)
    kw.setdefault("reconcile", False)
    app = create_app(settings, **kw)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    admin = web.AppRunner(create_admin_app(app), access_log=None, shutdown_timeout=2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await admin.setup()
        await web.TCPSite(admin, "127.0.0.1", 0).start()  # a port the OS picks
        admin_port = admin.addresses[0][1]
        if wait_kafka:
            assert await app[SINK].wait_connected(30), "producer did not connect"
            assert await app[STORE].wait_loaded(30), "segments.connections not loaded"
        async with aiohttp.ClientSession() as http:
            yield Connector(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}",
                            settings, app, http)
    finally:
        await admin.cleanup()
        await runner.cleanup()


async def read_events(settings: Settings, *, expect: int = 0, timeout: float = 30.0,
                      quiet: float = 1.0) -> list[RawEvent]:
    """Everything on the raw-event topic, from the beginning.

    With `expect`, waits (up to `timeout`) until that many are there; then (and with
    `expect=0`, at once) keeps reading for `quiet` seconds so that extra messages
    would be seen too. Every record is checked against its schema
    (`tests/record_schemas.py`).
    """
    topic = settings.topic(EVENTS_TOPIC)
    # auto_offset_reset="earliest": assign() starts an offset reset of its own, which with
    # the default ("latest") can land after seek_to_beginning() and skip everything.
    consumer = kafka.consumer(settings, enable_auto_commit=False,
                              isolation_level="read_committed", auto_offset_reset="earliest")
    await consumer.start()
    try:
        # ensure_topics created it with settings.partitions partitions.
        partitions = [TopicPartition(topic, partition) for partition in range(settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        got: list[RawEvent] = []
        deadline = time.monotonic() + timeout
        quiet_until: float | None = None if expect else time.monotonic() + quiet
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                check_records(msgs)
                got.extend(RawEvent.from_bytes(m.value) for m in msgs)
            now = time.monotonic()
            if quiet_until is None and len(got) >= expect:
                quiet_until = now + quiet
            if quiet_until is not None and now >= quiet_until:
                return got
            if quiet_until is None and now > deadline:
                return got
    finally:
        await consumer.stop()


async def end_offsets_total(settings: Settings) -> int:
    """How many messages were ever written to the raw-event topic."""
    topic = settings.topic(EVENTS_TOPIC)
    consumer = kafka.consumer(settings)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, partition) for partition in range(settings.partitions)]
        ends = await consumer.end_offsets(parts)
        return sum(ends.values())
    finally:
        await consumer.stop()
