"""The README's main job, as CI runs it: `segments demo --once` fills every segment.

The demo runs as a subprocess, as a user runs it. Afterwards this test checks, from the
outside, that every demo segment has members in the read model (through the query API)
and that the events came in through the connector: every envelope on `stripe.events`
names the connection made by `POST /connections`, the webhook ones are exactly those
the connector's metrics counted, and the backfill's are those its progress reported.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections import Counter

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from common.settings import Settings
from common.topics import EVENTS_TOPIC
from connectors.contract import RawEvent
from segments.demo.feed import DEMO_RULES
from segments.localstripe import free_port
from serving.server import ApiProcess
from tests.conftest import TEST_SECRET_KEY
from tests.tokens import TEST_AUTH_SECRET

pytestmark = pytest.mark.integration

#: CI's bound on the whole demo run (stack already up), start to exit.
BUDGET_S = 90


async def raw_events(settings: Settings) -> list[RawEvent]:
    """Everything on the demo's events topic, up to its end offsets."""
    topic = settings.topic(EVENTS_TOPIC)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, partition) for partition in range(settings.partitions)]
        consumer.assign(partitions)
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:  # explicit offsets: no race with the initial offset reset
            consumer.seek(tp, starts[tp])
        out: list[RawEvent] = []
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            out.extend(RawEvent.from_bytes(m.value) for msgs in batch.values() for m in msgs)
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        return out
    finally:
        await consumer.stop()


def _printed_token(text: str) -> str:
    found = re.search(r"^token:\s+(\S+)", text, re.MULTILINE)
    assert found, f"no token in the demo's output:\n{text[:3000]}"
    return found.group(1)


def _number(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in the demo's output:\n{text[-3000:]}"
    return int(found.group(1).replace(",", ""))


async def test_demo_once_fills_every_segment(settings: Settings) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "REDIS_URL": settings.redis_url, "SEGMENTS_TOPIC_PREFIX": settings.topic_prefix,
           "SEGMENTS_PARTITIONS": str(settings.partitions),
           "SEGMENTS_SECRET_KEY": TEST_SECRET_KEY,
           "SEGMENTS_AUTH_SECRET": TEST_AUTH_SECRET,
           "CONNECTOR_PORT": str(free_port()), "API_PORT": str(free_port()),
           "CONNECTOR_ADMIN_PORT": str(free_port())}
    started = time.monotonic()
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "segments.cli", "demo", "--once", "--customers", "80",
         "--backfill-customers", "8", "--timeout", "70"],
        env=env, capture_output=True, text=True, timeout=BUDGET_S + 30, check=False)
    elapsed = time.monotonic() - started
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert f"segments: {len(DEMO_RULES)}/{len(DEMO_RULES)} have members" in out
    assert elapsed < BUDGET_S, f"the demo took {elapsed:.0f}s"
    assert "stopping: connector, query API, worker, localstripe" in out

    # Every demo segment has members, asked of the query API over the read model.
    # The demo printed a token for its account and the page's address carrying it.
    token = _printed_token(out)
    assert f"/#token={token}" in out
    async with ApiProcess(settings, port=0, read_model=False) as api, \
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for rule in DEMO_RULES:
            url = f"{api.url}/accounts/demo/segments/{rule['id']}/members?limit=5"
            async with http.get(url) as resp:
                page = await resp.json()
            assert resp.status == 200, page
            assert page["member_count"] > 0, (rule["id"], page)
            assert page["members"], (rule["id"], page)
        async with http.get(f"{api.url}/accounts/demo/segments/big-refunds") as resp:
            edited = await resp.json()
        assert edited["rule"]["version"] == 2  # the demo's rule edit reached the read model

    # The events came through the connector: webhooks and the backfill of one connection.
    events = await raw_events(settings)
    connections = {e.connection_id for e in events}
    [connection] = connections
    assert connection.startswith("conn_"), connection
    assert {e.account_id for e in events} == {"demo"}
    sources = Counter(e.source for e in events)
    assert sources["webhook"] == _number(r"in\s+([\d,]+) signed webhooks accepted by the "
                                         r"connector", out)
    assert sources["backfill"] == _number(r"backfill done: ([\d,]+) events", out) > 0
    assert any(e.event_type.startswith("payment_intent.") for e in events
               if e.source == "backfill"), "localstripe's payments came back by the backfill"
