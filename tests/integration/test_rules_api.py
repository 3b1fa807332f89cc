"""Rules over HTTP, black-box on the real servers: the query API (with its read model and
status table), a real stream worker, Kafka and Redis. Every answer is also validated
against the OpenAPI document (`tests/openapi_check.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from common.settings import Settings
from common.topics import EVENTS_TOPIC, RULES_TOPIC, ensure_topics
from connectors.contract import RawEvent
from serving.server import ApiProcess
from stream.app import StreamOptions, create_app
from tests import stripe_events as se
from tests.clock import ManualClock
from tests.drain import end_offsets, read_to_end
from tests.openapi_check import OpenApi
from tests.tokens import bearer
from tests.waiting import async_wait_for
from tests.worker_runner import running

pytestmark = pytest.mark.integration

ACME = bearer("acme")
SEGMENT = "/accounts/{account_id}/segments/{segment_id}"


def big_payers(name: str = "Paid over $50") -> dict[str, Any]:
    return {"name": name, "filter": "charge_succeeded",
            "conditions": [{"field": "amount", "op": "gt", "value": "50"}]}


class Client:
    """Calls the API as acme (unless told otherwise) and checks every answer against the
    OpenAPI document; `problems` collects what did not match."""

    def __init__(self, api: ApiProcess, http: aiohttp.ClientSession) -> None:
        self.api, self.http = api, http
        self.openapi = OpenApi()
        self.problems: list[str] = []

    async def call(self, method: str, route: str, headers: dict[str, str] | None = None,
                   params: dict[str, str] | None = None, **path: str) -> tuple[int, Any, Any]:
        """(status, decoded JSON body or None, response headers)."""
        url = self.api.url + route.format(**path)
        kw: dict[str, Any] = {"headers": {**ACME, **(headers or {})}, "params": params}
        async with self.http.request(method, url, **kw) as resp:
            return await self._answer(method, route, resp)

    async def put(self, segment_id: str, doc: Any, headers: dict[str, str] | None = None,
                  account: str = "acme") -> tuple[int, Any, Any]:
        route = "/accounts/{account_id}/segments/{segment_id}"
        url = f"{self.api.url}/accounts/{account}/segments/{segment_id}"
        async with self.http.put(url, data=orjson.dumps(doc), headers={
                **ACME, "Content-Type": "application/json", **(headers or {})}) as resp:
            return await self._answer("PUT", route, resp)

    async def _answer(self, method: str, route: str,
                      resp: aiohttp.ClientResponse) -> tuple[int, Any, Any]:
        if resp.content_type == "text/event-stream":
            body = await asyncio.wait_for(resp.content.readline(), 10)
        else:
            body = await resp.read()
        self.problems += self.openapi.check(method, route, resp.status, resp.content_type,
                                            body)
        doc = orjson.loads(body) if resp.content_type == "application/json" else None
        return resp.status, doc, resp.headers

    async def segment(self, segment_id: str) -> tuple[int, Any]:
        status, doc, _ = await self.call("GET", SEGMENT,
                                         account_id="acme", segment_id=segment_id)
        return status, doc


async def pay(settings: Settings, producer: AIOKafkaProducer, email: str, cents: int,
              at: int) -> None:
    charge = se.charge(amount=cents, billing_email=email, created=at)
    raw = RawEvent("conn1", "acme", "webhook", 0,  # type: ignore[arg-type]
                   se.event("charge.succeeded", charge, created=at))
    await producer.send_and_wait(settings.topic(EVENTS_TOPIC), raw.to_bytes(), key=raw.key())


async def rules_end(settings: Settings) -> int:
    """The high watermark of segments.rules (waits for a just-created topic's metadata)."""
    async def ends() -> tuple[int] | None:
        try:
            found = await end_offsets(settings,
                                      [settings.topic(RULES_TOPIC)])
        except AssertionError:  # not in the broker's metadata yet
            return None
        return (sum(found.values()),)  # a tuple: 0 is an answer too

    return (await async_wait_for(ends, 30, what="segments.rules metadata"))[0]


@pytest.fixture
async def client(settings: Settings, redis: Redis) -> AsyncIterator[Client]:
    await ensure_topics(settings)
    async with ApiProcess(settings, port=0) as api, aiohttp.ClientSession() as http:
        c = Client(api, http)
        yield c
        assert c.problems == [], "answers that do not match the OpenAPI document"


async def test_create_fill_ready_replace_delete(settings: Settings, client: Client) -> None:
    clock = ManualClock()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for email, cents in (("ann@example.com", 10_000), ("bob@example.com", 1_000),
                             ("cy@example.com", 7_500)):
            await pay(settings, producer, email, cents, clock.now - 3600)
    finally:
        await producer.stop()

    # No worker yet: the rule is stored and served, but no partition has computed it.
    status, doc, headers = await client.put("big", big_payers())
    assert (status, doc["version"], doc["id"], doc["account_id"]) == (201, 1, "big", "acme")
    assert headers["ETag"] == '"1"'

    async def served(version: int) -> Any:
        code, seg = await client.segment("big")
        ok = code == 200 and seg["rule"] is not None and seg["rule"]["version"] == version
        return seg if ok else None

    seg = await async_wait_for(lambda: served(1), 30, what="the rule in the read model")
    assert (seg["status"], seg["member_count"]) == ("populating", 0)

    # A worker computes it from the history it holds: filled, then ready.
    app = create_app(settings, StreamOptions(clock=clock, tick_interval=0.2))
    async with running(app):
        async def filled() -> Any:
            seg = await served(1)
            return seg if seg and seg["status"] == "ready" and seg["member_count"] == 2 else None

        seg = await async_wait_for(filled, 60, what="big filled and ready")
        _, listing, _ = await client.call("GET", "/accounts/{account_id}/segments",
                                          account_id="acme")
        assert [(s["segment_id"], s["status"], s["member_count"])
                for s in listing["segments"]] == [("big", "ready", 2)]
        _, page, _ = await client.call(
            "GET", "/accounts/{account_id}/segments/{segment_id}/members",
            account_id="acme", segment_id="big")
        assert [m["email"] for m in page["members"]] == ["ann@example.com", "cy@example.com"]

        # Replace: a good If-Match gives version 2, a stale one 409 and changes nothing.
        stricter = {**big_payers("Paid over $80"), "id": "big", "account_id": "acme",
                    "conditions": [{"field": "amount", "op": "gt", "value": "80"}]}
        status, doc, headers = await client.put("big", stricter, {"If-Match": '"1"'})
        assert (status, doc["version"], headers["ETag"]) == (200, 2, '"2"')
        before = await rules_end(settings)
        status, doc, _ = await client.put("big", big_payers(), {"If-Match": "1"})
        assert status == 409
        assert "version 2" in doc["error"]
        assert await rules_end(settings) == before

        async def refilled() -> Any:
            seg = await served(2)
            return seg if seg and seg["status"] == "ready" and seg["member_count"] == 1 else None

        await async_wait_for(refilled, 60, what="version 2 computed by every partition")

        status, _, _ = await client.call("DELETE", SEGMENT,
                                         account_id="acme", segment_id="big")
        assert status == 204
        status, _, _ = await client.call("DELETE", SEGMENT,
                                         account_id="acme", segment_id="big")
        assert status == 404  # read from the topic itself: no lag

        async def gone() -> bool:
            return (await client.segment("big"))[0] == 404

        await async_wait_for(gone, 60, what="big gone from the read model")


async def test_invalid_rule_lists_every_error_and_publishes_nothing(
        settings: Settings, client: Client) -> None:
    before = await rules_end(settings)
    bad = {"id": "other-id", "name": "", "filter": "charge_failed",
           "conditions": [{"field": "refund_amount", "op": "gt", "value": "5"},
                          {"field": "amount", "op": "between", "value": ["9", "1"]},
                          {"field": "currency", "op": "in", "value": ["usd", "zzz"]},
                          {"field": "date", "op": "within_last",
                           "value": {"count": 0, "unit": "years"}}],
           "timezone": "Mars/Olympus"}
    status, doc, _ = await client.put("seg", bad)
    assert status == 422
    assert [e["path"] for e in doc["errors"]] == [
        "/id", "/name", "/timezone", "/conditions/0/field", "/conditions/1/value",
        "/conditions/2/value/1", "/conditions/3/value/count", "/conditions/3/value/unit"]
    assert all(e["message"] for e in doc["errors"])
    for body in ([], "x", {"account_id": "globex", **big_payers()}):
        status, doc, _ = await client.put("seg", body)
        assert status == 422, body
    assert doc["errors"][0]["path"] == "/account_id"
    async with client.http.put(client.api.url + "/accounts/acme/segments/seg",
                               data=b"{nope", headers={**ACME,
                                                       "Content-Type": "application/json"}) as r:
        assert r.status == 422
        assert (await r.json())["errors"][0]["path"] == ""
    assert await rules_end(settings) == before
    assert await read_to_end(settings,
                             settings.topic(RULES_TOPIC)) == []


async def test_other_accounts_segments_are_not_found(settings: Settings,
                                                     client: Client) -> None:
    status, _, _ = await client.put("seg", big_payers(), headers=bearer("globex"))
    assert status == 404
    status, _, _ = await client.put("seg", big_payers(), headers=bearer("globex"),
                                    account="acme")
    assert status == 404
    status, _, _ = await client.call("DELETE", SEGMENT,
                                     headers=bearer("globex"), account_id="acme",
                                     segment_id="seg")
    assert status == 404
    assert await rules_end(settings) == 0
    status, _, _ = await client.put("seg", big_payers())
    assert status == 201
    status, _, _ = await client.call("DELETE", SEGMENT,
                                     headers=bearer("globex"), account_id="acme",
                                     segment_id="seg")
    assert status == 404
    status, _doc, _ = await client.put("seg", big_payers(), headers=bearer("globex"))
    assert status == 404


async def test_concurrent_conditional_writes_one_wins(settings: Settings,
                                                      client: Client) -> None:
    """Writers of one segment are serialised: of five replacing version 1 at once, exactly
    one commits version 2; the others get 409 and publish nothing."""
    status, _, _ = await client.put("race", big_payers())
    assert status == 201
    answers = await asyncio.gather(*(
        client.put("race", big_payers(f"writer {i}"), {"If-Match": "1"}) for i in range(5)))
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200, 409, 409, 409, 409], statuses
    records = await read_to_end(settings, settings.topic(RULES_TOPIC))
    versions = [orjson.loads(r.value)["version"] for r in records]
    assert versions == [1, 2]
    # Unconditional writers at once: each gets its own version, none is lost.
    answers = await asyncio.gather(*(client.put("race", big_payers(f"w{i}")) for i in range(3)))
    assert sorted(doc["version"] for _, doc, _ in answers) == [3, 4, 5], answers


async def _listed(client: Client, segment_id: str) -> bool:
    return (await client.segment(segment_id))[0] == 200


async def test_every_route_is_documented_and_answers_as_documented(
        settings: Settings, client: Client) -> None:
    assert (await client.put("doc", big_payers()))[0] == 201

    async def listed() -> bool:
        return (await client.segment("doc"))[0] == 200

    await async_wait_for(listed, 30, what="doc in the read model")
    calls: list[tuple[str, str, dict[str, str], dict[str, str]]] = [
        ("GET", "/accounts/{account_id}/segments", {"account_id": "acme"}, {}),
        ("GET", SEGMENT,
         {"account_id": "acme", "segment_id": "doc"}, {}),
        ("GET", SEGMENT,
         {"account_id": "acme", "segment_id": "nope"}, {}),
        ("GET", "/accounts/{account_id}/segments/{segment_id}/members",
         {"account_id": "acme", "segment_id": "doc"}, {}),
        ("GET", "/accounts/{account_id}/contacts/{email}/segments",
         {"account_id": "acme", "email": "ann@example.com"}, {}),
        ("GET", "/segments", {}, bearer(admin=True)),
        ("GET", "/segments", {}, {}),
        ("GET", "/events", {}, {}),
        ("GET", "/openapi.json", {}, {}),
        ("GET", "/healthz", {}, {}),
        ("GET", "/metrics", {}, {}),
        ("GET", "/", {}, {}),
        ("GET", "/static/{name}", {"name": "app.js"}, {}),
        ("GET", "/static/{name}", {"name": "builder.js"}, {}),
        ("GET", "/static/{name}", {"name": "schema.json"}, {}),
        ("GET", "/static/{name}", {"name": "nope.js"}, {}),
        ("DELETE", SEGMENT,
         {"account_id": "acme", "segment_id": "doc"}, {}),
        ("DELETE", "/accounts/{account_id}/contacts/{email}",
         {"account_id": "acme", "email": "nobody@example.com"}, {}),
    ]
    for method, route, path, headers in calls:
        await client.call(method, route, headers, **path)
    # Without workers serving queries both answer 503 (retry), as documented.
    preview = "/accounts/{account_id}/segments/preview"
    async with client.http.post(client.api.url + preview.format(account_id="acme"),
                                data=orjson.dumps(big_payers()),
                                headers={**ACME, "Content-Type": "application/json"}) as resp:
        assert (await client._answer("POST", preview, resp))[0] == 503
    explain = "/accounts/{account_id}/segments/{segment_id}/members/{email}"
    await client.put("doc2", big_payers())
    await async_wait_for(lambda: _listed(client, "doc2"), 30, what="doc2 in the read model")
    status, _, _ = await client.call("GET", explain, account_id="acme", segment_id="doc2",
                                     email="ann@example.com")
    assert status == 503
    _status, doc, _ = await client.call("GET", "/openapi.json")
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearer"]["bearerFormat"] == "JWT"
    registered = {(r.method, r.resource.canonical) for r in client.api.app.router.routes()
                  if r.method != "HEAD" and r.resource is not None}
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert registered == documented
    exercised = {(m, r) for m, r, _ in client.openapi.checked}
    assert registered - exercised == set()  # PUT came from put() above
