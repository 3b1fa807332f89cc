"""No API key or webhook secret in clear: not in a log line, an answer, a topic, Redis.

Runs last (tests/reliability/conftest.py moves it there). First it drives every path a
key, a secret or a bearer token travels: connecting accounts through `POST /connections`
(valid keys, malformed ones, a publishable key, a secret with a space), showing and deleting a
connection, the backfill that the connection starts with its key, and webhooks signed
with the secret; every HTTP answer is checked. Then the scan: every topic of every
prefix the suite used (aborted transactions included) and every Redis key left under
them. Log records (root at DEBUG), captured outputs and every Redis command of the
suite (`MONITOR`) were checked as they happened; any hit is in `LEDGER.leaks`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from common.settings import Settings
from connectors.backfill import BackfillOptions
from serving.read_model import glob_escape
from tests import stripe_events as se
from tests.connector_harness import Connector, running_connector
from tests.localstripe_server import running_localstripe
from tests.reliability.ledger import LEDGER
from tests.reliability.topics import list_topics, read_topic
from tests.stripe_signing import sign
from tests.tokens import TEST_AUTH_SECRET, token
from tests.waiting import async_wait_for

pytestmark = pytest.mark.reliability

LEDGER.auth_secret(TEST_AUTH_SECRET)


@pytest.fixture(scope="module")
def localstripe() -> Iterator[str]:
    with running_localstripe() as base:
        yield base


async def _request(connector: Connector, method: str, path: str,
                   json: Any = None) -> tuple[int, Any]:
    """Status and answer (JSON when it is JSON); the answer is scanned for secrets."""
    headers = {"Authorization": "Bearer " + LEDGER.token(token(admin=True))}
    async with connector.http.request(method, connector.admin_url + path, json=json,
                                      headers=headers) as resp:
        body = await resp.read()
    LEDGER.check_bytes("HTTP answer", body)
    try:
        return resp.status, orjson.loads(body)
    except orjson.JSONDecodeError:
        return resp.status, body


async def test_every_path_a_secret_travels(settings: Settings, localstripe: str) -> None:
    emulated = replace(settings, stripe_api_base=localstripe)
    # localstripe runs on our own clock and is consistent at once: no settle delay, no
    # overlap (the defaults make a backfill wait two minutes before it is done).
    async with running_connector(emulated, registration="localstripe", start_backfill=True,
                                 backfill_options=BackfillOptions(settle_s=0, overlap_s=0)
                                 ) as connector:
        key, secret = LEDGER.api_key(), LEDGER.webhook_secret()
        status, created = await _request(connector, "POST", "/connections",
                                         json={"account_id": "acme", "api_key": key,
                                               "webhook_secret": secret})
        assert status == 201, created
        connection_id = created["id"]
        for bad in ({"account_id": "acme", "api_key": key + " x"},
                    {"account_id": "acme", "api_key": "pk_test_" + key[8:]},
                    {"account_id": "acme", "api_key": key, "webhook_secret": secret + "\n"},
                    {"account_id": "acme", "api_key": key, "webhook_secret": "x" + secret},
                    {"account_id": key, "api_key": key},
                    {"account_id": "acme", "api_key": key, "extra": secret}):
            status, answer = await _request(connector, "POST", "/connections", json=bad)
            assert status == 400, answer
        # Registered through localstripe: the connector made the secret itself.
        status, other = await _request(connector, "POST", "/connections",
                                       json={"account_id": "globex", "api_key": LEDGER.api_key()})
        assert status == 201, other

        async def backfilled() -> bool:
            _, shown = await _request(connector, "GET", f"/connections/{connection_id}")
            progress = shown.get("backfill") if isinstance(shown, dict) else None
            return isinstance(progress, dict) and progress.get("state") == "done"

        await async_wait_for(backfilled, 60, interval=0.3, what="the backfill to finish")
        body = orjson.dumps(se.event("customer.created", se.customer("zed@example.com")))
        for header in (sign(body, secret), sign(body, "whsec_wrong"), secret, f"t=1,v1={secret}"):
            status, answer = await connector.post_webhook(connection_id, body,
                                                          {"Stripe-Signature": header})
            LEDGER.check("HTTP answer", orjson.dumps(answer).decode())
            assert status in (200, 400, 503)  # 503: the broker slow under load
        await _request(connector, "GET", "/metrics")
        await _request(connector, "GET", "/healthz")
        for cid in (connection_id, other["id"]):
            status, _ = await _request(connector, "DELETE", f"/connections/{cid}")
            assert status == 200


async def test_zz_no_secret_in_clear(kafka_bootstrap: str, redis_url: str) -> None:
    topics = [t for prefix in sorted(LEDGER.prefixes)
              for t in await list_topics(kafka_bootstrap, prefix)]
    slots = asyncio.Semaphore(8)

    async def read(topic: str) -> list[Any]:
        async with slots:
            return await read_topic(kafka_bootstrap, topic, committed_only=False)

    messages = 0
    for records in await asyncio.gather(*(read(t) for t in topics)):
        for record in records:
            messages += 1
            LEDGER.check_bytes("topic message", record.value)
            LEDGER.check_bytes("topic key", record.key)
            for _, value in record.headers or ():
                LEDGER.check_bytes("topic header", value)
    client = aioredis.from_url(redis_url)
    values = 0
    try:
        for prefix in sorted(LEDGER.prefixes):
            async for key in client.scan_iter(match=glob_escape(prefix) + "*", count=1000):
                values += 1
                LEDGER.check_bytes("redis key", key)
                LEDGER.check_bytes("redis value", await client.dump(key))
    finally:
        await client.aclose()
    print(f"secrets scan: {len(LEDGER.needles)} secrets looked for in "
          f"{len(LEDGER.prefixes)} test namespaces ({messages} topic messages, {values} Redis "
          f"keys now) and as they happened: {dict(LEDGER.scanned)}")
    assert LEDGER.needles, "no secret was handed out: nothing to look for"
    assert LEDGER.leaks == [], "\n".join(LEDGER.leaks[:20])
