"""Abuse across the whole pipeline: connector → stream → read model → query API.

One pipeline for the module (in-process connector, stream worker and serving process on
the session's real Kafka and Redis), two Center accounts connected with their own
webhook secrets, and the same segment id and the same emails in both:

- replayed webhooks (same body, same signature, several times, plus a sibling event)
  are all acknowledged and collapse to one fact downstream;
- a webhook signed with the other connection's secret is refused by either connection;
- no query of the API, for any account, segment or email (valid, unknown, or built
  to confuse the key layout), returns anything of the other account.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from common.settings import Settings
from common.topics import EVENTS_TOPIC, FACTS_TOPIC, RULES_TOPIC, ensure_topics
from connectors.contract import RawEvent
from connectors.store import new_connection_id
from rules import parse_rule
from serving.server import ApiProcess
from stream.app import StreamOptions, create_app, group_id, source_topics
from stream.changes import rule_key, rule_record
from tests import stripe_events as se
from tests.conftest import TEST_SECRET_KEY
from tests.connector_harness import Connector, end_offsets_total, running_connector
from tests.drain import read_to_end, wait_processed
from tests.reliability.ledger import LEDGER
from tests.reliability.raw_http import exchange, request_bytes
from tests.reliability.topics import read_topic
from tests.stripe_signing import sign
from tests.tokens import ADMIN, TEST_AUTH_SECRET, bearer
from tests.waiting import async_wait_for
from tests.worker_runner import running

pytestmark = [pytest.mark.reliability, pytest.mark.asyncio(loop_scope="module")]

ACCOUNTS = ("acme", "globex")
#: Who is in segment "vip" of each account (same segment id, overlapping emails).
MEMBERS = {"acme": ("ann@example.com", "bob@example.com"),
           "globex": ("ann@example.com", "carol@example.com")}


@dataclass
class Pipeline:
    settings: Settings
    connector: Connector
    api: ApiProcess
    http: aiohttp.ClientSession
    connections: dict[str, str]
    secrets: dict[str, str]

    async def post(self, account: str, body: bytes, secret: str | None = None,
                   connection: str | None = None) -> int:
        header = sign(body, secret or self.secrets[account])
        status, _ = await self.connector.post_webhook(
            connection or self.connections[account], body, {"Stripe-Signature": header})
        return status

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """Status and JSON answer (the text itself when the answer is not JSON); with the
        admin's token unless `headers` say otherwise."""
        async with self.http.get(self.api.url + path,
                                 headers=ADMIN if headers is None else headers) as resp:
            text = await resp.text()
        try:
            return resp.status, orjson.loads(text)
        except orjson.JSONDecodeError:
            return resp.status, text


def charge_event(email: str, amount: int = 5000) -> tuple[dict[str, Any], dict[str, Any]]:
    now = int(time.time())
    charge = se.charge(amount=amount, billing_email=email, created=now - 60)
    return charge, se.event("charge.succeeded", charge, created=now - 60)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pipeline(kafka_bootstrap: str, redis_url: str,
                   tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pipeline]:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    LEDGER.prefixes.add(prefix)
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, redis_url=redis_url,
                        topic_prefix=prefix, partitions=4, secret_key=TEST_SECRET_KEY,
                        auth_secret=TEST_AUTH_SECRET)
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for account in ACCOUNTS:
            doc = {"id": "vip", "account_id": account, "name": f"{account} payers",
                   "filter": "charge_succeeded", "conditions": [], "timezone": "UTC"}
            await producer.send_and_wait(settings.topic(RULES_TOPIC),
                                         rule_record(parse_rule(doc).to_dict()),
                                         key=rule_key(account, "vip"))
    finally:
        await producer.stop()
    app = create_app(settings, StreamOptions())
    async with running(app), running_connector(settings) as connector, \
            ApiProcess(settings, port=0) as api, aiohttp.ClientSession() as http:
        connections, secrets = {}, {}
        for account in ACCOUNTS:
            secrets[account] = LEDGER.webhook_secret()
            connections[account] = new_connection_id()
            await connector.store.create(
                connection_id=connections[account], account_id=account,
                api_key=LEDGER.api_key(), webhook_secret=secrets[account],
                registration="manual", webhook_endpoint_id=None)
        pipeline = Pipeline(connector.settings, connector, api, http, connections, secrets)
        for account, emails in MEMBERS.items():
            for email in emails:
                assert await pipeline.post(account, orjson.dumps(charge_event(email)[1])) == 200
        for account, emails in MEMBERS.items():
            await wait_members(pipeline, account, set(emails))
        yield pipeline


async def processed(pipeline: Pipeline) -> None:
    """Until the worker group has committed all its source topics to their end."""
    await wait_processed(pipeline.settings, group_id(pipeline.settings),
                         source_topics(pipeline.settings))


async def wait_members(pipeline: Pipeline, account: str, emails: set[str]) -> None:
    async def there() -> bool:
        status, doc = await pipeline.get(f"/accounts/{account}/segments/vip/members")
        return status == 200 and {m["email"] for m in doc["members"]} >= emails

    await async_wait_for(there, 90, interval=0.3, what=f"{account}/vip members {emails}")


async def test_replayed_webhooks_become_one_fact(pipeline: Pipeline) -> None:
    charge, event = charge_event("dave@example.com", amount=777)
    body = orjson.dumps(event)
    header = sign(body, pipeline.secrets["acme"])  # one signature, replayed as it is
    before = await end_offsets_total(pipeline.settings)
    statuses = []
    for _ in range(5):
        status, _ = await pipeline.connector.post_webhook(pipeline.connections["acme"], body,
                                                   {"Stripe-Signature": header})
        statuses.append(status)
    sibling = orjson.dumps(se.event("payment_intent.succeeded", se.payment_intent(charge)))
    statuses.append(await pipeline.post("acme", sibling))
    assert statuses == [200] * 6  # Stripe's retries must be acknowledged, not refused
    await wait_members(pipeline, "acme", {"dave@example.com"})
    assert await end_offsets_total(pipeline.settings) - before == 6  # the connector keeps them all

    # Every replay processed (the worker committed its inputs to their end), then the
    # facts read to their end: a late duplicate cannot be still on its way.
    await processed(pipeline)
    facts = [r for r in await read_to_end(pipeline.settings,
                                          pipeline.settings.topic(FACTS_TOPIC))
             if charge["id"] in r.value.decode()]
    assert len(facts) == 1, [f.value for f in facts]


async def test_a_signature_made_with_another_connections_secret_is_refused(
        pipeline: Pipeline) -> None:
    before = await end_offsets_total(pipeline.settings)
    _, event = charge_event("mallory@example.com")
    body = orjson.dumps(event)
    assert await pipeline.post("acme", body, secret=pipeline.secrets["globex"]) == 400
    assert await pipeline.post("globex", body, secret=pipeline.secrets["acme"]) == 400
    # Both v1 signatures in one header, one per secret: still only one is this endpoint's.
    header = sign(body, [pipeline.secrets["globex"], "whsec_not_anyones"])
    status, _ = await pipeline.connector.post_webhook(pipeline.connections["acme"], body,
                                               {"Stripe-Signature": header})
    assert status == 400
    # A sentinel accepted after the refusals, the pipeline drained, then read to the end:
    # nothing of the refused event anywhere, only the sentinel added.
    _, sentinel = charge_event("sentinel-after-refusals@example.com")
    assert await pipeline.post("acme", orjson.dumps(sentinel)) == 200
    await processed(pipeline)
    raw = [RawEvent.from_bytes(r.value).event_id
           for r in await read_to_end(pipeline.settings,
                                      pipeline.settings.topic(EVENTS_TOPIC))]
    assert sentinel["id"] in raw
    assert event["id"] not in raw
    assert await end_offsets_total(pipeline.settings) == before + 1
    facts = await read_to_end(pipeline.settings,
                              pipeline.settings.topic(FACTS_TOPIC))
    assert not [f.value for f in facts if b"mallory@example.com" in f.value]


def _quoted(text: str) -> str:
    return quote(text, safe="")


async def test_no_query_returns_another_accounts_data(pipeline: Pipeline) -> None:
    only = {account: set(MEMBERS[account]) - set(MEMBERS[other])
            for account, other in (("acme", "globex"), ("globex", "acme"))}
    # The admin's token: an answer shows only the account its path names. acme's token:
    # never globex's data, whatever the path names.
    accounts = [*ACCOUNTS, "initech", "acme:vip", "acme*", "*", "acme\x00", "ACME", "acme "]
    segments = ["vip", "vip:acme", "vip*", "*", "", "VIP", "..", "vip\n"]
    emails = ["ann@example.com", "bob@example.com", "carol@example.com", "*@example.com",
              "ann@example.com:vip", "ANN@EXAMPLE.COM"]
    asked = 0
    for caller, headers in (("admin", ADMIN), ("acme", bearer("acme"))):
        for account in accounts:
            base = f"/accounts/{_quoted(account)}"
            paths = [f"{base}/segments", f"/segments?account_id={_quoted(account)}",
                     f"/events?account_id={_quoted(account)}&probe=1"]
            for segment in segments:
                paths += [f"{base}/segments/{_quoted(segment)}",
                          f"{base}/segments/{_quoted(segment)}/members?limit=1000"]
            for email in emails:
                paths.append(f"{base}/contacts/{_quoted(email)}/segments")
            for path in paths:
                if path.startswith("/events") and caller == "admin":
                    continue  # a stream that stays open: asked with acme's token only
                asked += 1
                status, doc = await _get_once(pipeline, path, headers)
                assert status < 500, (path, status, doc)
                text = (doc if isinstance(doc, str) else orjson.dumps(doc).decode()).lower()
                asked_for = unquote(path).lower()  # an answer may echo the question
                for owner, emails_of_owner in only.items():
                    visible = caller == "admin" or owner == caller
                    if visible and account.lower() == owner:
                        continue
                    leaked = [e for e in emails_of_owner if e in text and e not in asked_for]
                    assert not leaked, f"{caller}: {path} shows {owner}'s {leaked}: {doc}"
                    if owner not in account.lower():
                        assert f'"{owner}"' not in text, f"{caller}: {path} names {owner}: {doc}"
    # The answers for each account are exactly its own.
    for account in ACCOUNTS:
        status, doc = await pipeline.get(f"/accounts/{account}/segments/vip/members?limit=1000")
        assert status == 200
        assert {m["email"] for m in doc["members"]} >= set(MEMBERS[account])
        assert not {m["email"] for m in doc["members"]} & only["globex" if account == "acme"
                                                              else "acme"]
    # Header abuse on the query API: never a 5xx.
    for value in (b"\x80\x80", b"100-continue\xff", b"x" * 9000):
        authorization = (b"Authorization", ADMIN["Authorization"].encode())
        raw = request_bytes("GET", "/accounts/acme/segments/vip",
                            [(b"Expect", value), authorization], b"")
        port = int(pipeline.api.url.rsplit(":", 1)[1])
        for response in await asyncio.to_thread(exchange, port, raw):
            assert response.status < 500, (value[:20], response)
    # The unscoped listing is the admin's: refused to acme, without naming anyone.
    status, doc = await pipeline.get("/segments", bearer("acme"))
    assert status == 403
    assert "globex" not in str(doc)
    print(f"isolation: {asked} cross-account queries, none answered with another "
          "account's data")


async def _get_once(pipeline: Pipeline, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    """`pipeline.get`, but a stream (`/events`) is read for its first line only."""
    async with pipeline.http.get(pipeline.api.url + path, headers=headers) as resp:
        if resp.content_type == "text/event-stream":
            return resp.status, (await asyncio.wait_for(resp.content.readline(), 10)).decode()
        text = await resp.text()
    try:
        return resp.status, orjson.loads(text)
    except orjson.JSONDecodeError:
        return resp.status, text


async def test_raw_topic_holds_no_secret(pipeline: Pipeline) -> None:
    """Everything the connector wrote is scanned (the suite-wide scan repeats this)."""
    records = await read_topic(pipeline.settings.kafka_bootstrap_servers,
                               pipeline.settings.topic(EVENTS_TOPIC))
    assert records
    for record in records:
        LEDGER.check_bytes("topic message", record.value)
    for secret in pipeline.secrets.values():
        assert all(secret.encode() not in r.value for r in records)


__all__ = ["Path", "replace"]
