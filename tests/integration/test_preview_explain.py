"""Preview and explain, black-box over HTTP: the query API, two real workers (each
with its query endpoint) on a 4-partition real Kafka, and Redis.

The preview's count is proved equal to what saving the rule then produces (joins read
from `segments.membership` to its end offsets, and the compacted `segments.members`);
explain is checked for a member and a non-member; a partition whose owner stops serving
makes both routes answer 503 with Retry-After until another worker has it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from common.auth import TokenVerifier
from common.settings import Settings
from common.topics import (
    CONTROL_TOPIC,
    FACTS_TOPIC,
    MEMBERS_TOPIC,
    MEMBERSHIP_TOPIC,
    RULES_TOPIC,
    ensure_topics,
)
from segments.rules_admin import publish_rule
from serving.server import ApiProcess
from stream.app import StreamApp, StreamOptions, create_app, group_id
from stream.facts import Fact, contact_key
from stream.partitioning import partition_for
from stream.query_server import QueryServer
from tests.drain import read_to_end, wait_processed
from tests.tokens import TEST_AUTH_SECRET, bearer
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration

DAY = 86_400
CONTACTS = 60
RULE = {"name": "Failed over $50, usd, last 14 days", "filter": "charge_failed",
        "conditions": [{"field": "amount", "op": "gt", "value": "50"},
                       {"field": "currency", "op": "is", "value": "usd"},
                       {"field": "date", "op": "within_last",
                        "value": {"count": 14, "unit": "days"}}]}
ACME = bearer("acme")


def dataset(now: int) -> list[Fact]:
    """acme's contacts: c{i} fails a charge of (i * 3) dollars, usd for even i, eur for
    odd; every fifth one 20 days ago. globex holds the same emails, all qualifying."""
    facts = []
    for i in range(CONTACTS):
        email = f"c{i:03d}@example.com"
        age = 20 if i % 5 == 0 else 2
        facts.append(Fact(f"ch_{i}:failed", "charge_failed", "acme", "conn1", email,
                          now - age * DAY - i, amount=i * 300,
                          currency="usd" if i % 2 == 0 else "eur",
                          source_event_id=f"evt_{i}", source_event_type="charge.failed"))
        facts.append(Fact(f"ch_g{i}:failed", "charge_failed", "globex", "conn2", email,
                          now - DAY, amount=99_900, currency="usd",
                          source_event_id=f"evt_g{i}", source_event_type="charge.failed"))
    return facts


def expected_members() -> list[str]:
    return sorted(f"c{i:03d}@example.com" for i in range(CONTACTS)
                  if i * 300 > 5000 and i % 2 == 0 and i % 5 != 0)


@dataclass
class Worker:
    app: StreamApp
    query: QueryServer


@dataclass
class Stack:
    settings: Settings
    api: ApiProcess
    workers: list[Worker]
    http: aiohttp.ClientSession

    async def preview(self, doc: Any, headers: dict[str, str] = ACME,
                      account: str = "acme") -> tuple[int, dict[str, str], Any]:
        async with self.http.post(f"{self.api.url}/accounts/{account}/segments/preview",
                                  json=doc, headers=headers) as resp:
            return resp.status, dict(resp.headers), orjson.loads(await resp.read())

    async def explain(self, email: str, headers: dict[str, str] = ACME,
                      segment: str = "big") -> tuple[int, dict[str, str], Any]:
        url = f"{self.api.url}/accounts/acme/segments/{segment}/members/{email}"
        async with self.http.get(url, headers=headers) as resp:
            return resp.status, dict(resp.headers), orjson.loads(await resp.read())


async def _produce(settings: Settings, facts: list[Fact]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for fact in facts:
            await producer.send(settings.topic(FACTS_TOPIC), fact.to_bytes(), key=fact.key())
        await producer.flush()
    finally:
        await producer.stop()


@pytest.fixture
async def stack(settings: Settings, redis: Redis) -> AsyncIterator[Stack]:
    await ensure_topics(settings)
    verifier = TokenVerifier(secret=TEST_AUTH_SECRET)
    async with AsyncExitStack() as stack:
        workers = []
        for _ in range(2):
            app = create_app(settings, StreamOptions())
            await app.start()
            stack.push_async_callback(app.stop)
            query = QueryServer(app, settings, verifier, redis)
            await query.start()
            stack.push_async_callback(query.stop)
            workers.append(Worker(app, query))

        async def both_own() -> bool:
            owned = [w.app.assigned() for w in workers]
            return all(owned) and set().union(*owned) == set(range(settings.partitions))

        await async_wait_for(both_own, 60, what="both workers owning partitions")
        await _produce(settings, dataset(int(time.time())))
        await wait_processed(settings, group_id(settings),
                             [settings.topic(FACTS_TOPIC)])
        api = await stack.enter_async_context(ApiProcess(settings, port=0))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        yield Stack(settings, api, workers, http)


async def _saved_members(settings: Settings) -> tuple[set[str], set[str]]:
    """Members of acme's "big" by the joins/leaves on segments.membership, and by the
    compacted segments.members, both read to their end offsets."""
    joined: set[str] = set()
    for record in await read_to_end(settings,
                                    settings.topic(MEMBERSHIP_TOPIC)):
        change = orjson.loads(record.value)
        if (change["account_id"], change["segment_id"]) == ("acme", "big"):
            (joined.add if change["change"] == "joined" else joined.discard)(change["email"])
    current: dict[bytes, bytes | None] = {}
    for record in await read_to_end(settings,
                                    settings.topic(MEMBERS_TOPIC)):
        current[record.key] = record.value
    members = {orjson.loads(v)["email"] for v in current.values()
               if v is not None and orjson.loads(v)["segment_id"] == "big"
               and orjson.loads(v)["account_id"] == "acme"}
    return joined, members


async def test_preview_equals_the_saved_rule_and_explain_says_why(stack: Stack) -> None:
    settings = stack.settings
    status, _, body = await async_wait_for(_ok(stack.preview, RULE), 30,
                                           what="a preview from every partition")
    want = expected_members()
    assert body["count"] == len(want) > 0
    assert body["sample"] == want[:20]
    assert body["as_of"].endswith("Z")
    # Nothing published: the preview changes no state.
    joined, members = await _saved_members(settings)
    assert joined == members == set()

    await publish_rule(settings, {**RULE, "id": "big", "account_id": "acme"})
    await wait_processed(settings, group_id(settings),
                         [settings.topic(t) for t in (RULES_TOPIC, CONTROL_TOPIC, FACTS_TOPIC)])
    joined, members = await _saved_members(settings)
    assert len(joined) == len(members) == body["count"]
    assert joined == members == set(want)

    # A member: since (from the read model, once it has the join), and why.
    member = want[0]
    async def explained() -> Any:
        status, _, doc = await stack.explain(member)
        return doc if status == 200 and doc.get("since") else None
    doc = await async_wait_for(explained, 30, what="the member explained with its since")
    assert doc["member"] is True
    assert doc["next_change_at"] is not None  # the 14-day window ends
    [fact] = doc["facts"]
    assert fact["qualifies"] is True
    assert fact["failed_conditions"] == []
    assert fact["stripe_event_ids"] == [f"evt_{int(member[1:4])}"]
    assert fact["currency"] == "usd"
    # A non-member: eur (condition 1) and too small (condition 0).
    status, _, doc = await stack.explain("c001@example.com")
    assert status == 200
    assert doc["member"] is False
    assert doc["since"] is None
    assert [f["failed_conditions"] for f in doc["facts"]] == [[0, 1]]
    # Too old: only the date (condition 2).
    status, _, doc = await stack.explain("c020@example.com")
    assert [f["failed_conditions"] for f in doc["facts"]] == [[2]]
    assert doc["member"] is False
    # A contact with no facts at all.
    status, _, doc = await stack.explain("nobody@example.com")
    assert (status, doc["member"], doc["facts"]) == (200, False, [])


async def test_invalid_rules_and_other_accounts(stack: Stack) -> None:
    await async_wait_for(_ok(stack.preview, RULE), 30, what="a preview")
    status, _, body = await stack.preview(
        {"filter": "charge_failed", "conditions": [
            {"field": "amount", "op": "gt", "value": "lots"},
            {"field": "nope", "op": "eq", "value": "1"}]})
    assert status == 422
    paths = [e["path"] for e in body["errors"]]
    assert "/conditions/0/value" in paths
    assert any(p.startswith("/conditions/1") for p in paths)
    assert all(e["message"] for e in body["errors"])
    status, _, body = await stack.preview({**RULE, "account_id": "globex"})
    assert status == 422
    # Another account's token: 404, as for an account that does not exist.
    globex = bearer("globex")
    status, _, _ = await stack.preview(RULE, headers=globex)
    assert status == 404
    await publish_rule(stack.settings, {**RULE, "id": "big", "account_id": "acme"})
    await async_wait_for(_ok(stack.explain, "c002@example.com"), 30, what="explain")
    status, _, _ = await stack.explain("c002@example.com", headers=globex)
    assert status == 404
    status, _, _ = await stack.explain("c002@example.com", segment="no-such-segment")
    assert status == 404
    status, headers, _ = await stack.preview(RULE, headers={})
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_partition_without_its_owner_answers_retry(stack: Stack) -> None:
    _, _, before = await async_wait_for(_ok(stack.preview, RULE), 30, what="a preview")
    leaving = stack.workers[1]
    gone = leaving.app.assigned()
    await leaving.query.stop()  # its partitions are no longer served (nor advertised)
    status, headers, body = await stack.preview(RULE)
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert "error" in body
    assert "count" not in body
    # Explain of a contact on one of the gone partitions: retry as well.
    email = next(f"c{i:03d}@example.com" for i in range(CONTACTS)
                 if partition_for(contact_key("acme", f"c{i:03d}@example.com"),
                                  stack.settings.partitions) in gone)
    await publish_rule(stack.settings, {**RULE, "id": "big", "account_id": "acme"})

    async def known() -> tuple[int, Any, Any] | None:
        answer = await stack.explain(email)
        return None if answer[0] == 404 else answer  # the read model has the rule yet

    status, headers, _ = await async_wait_for(known, 30, what="the rule in the read model")
    assert (status, headers.get("Retry-After")) == (503, "1")
    # The worker leaves; the other takes its partitions over, restores, and answers
    # the same count.
    await leaving.app.stop()
    _, _, after = await async_wait_for(_ok(stack.preview, RULE), 60,
                                       what="the remaining worker serving everything")
    assert stack.workers[0].app.assigned() == set(range(stack.settings.partitions))
    assert (after["count"], after["sample"]) == (before["count"], before["sample"])


def _ok(call: Any, *args: Any) -> Any:
    async def attempt() -> Any:
        status, headers, body = await call(*args)
        return (status, headers, body) if status == 200 else None
    return attempt
