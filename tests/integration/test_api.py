"""The query API, served over a read model fed through the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from common.settings import Settings
from serving.server import ApiProcess
from tests.read_model_harness import Feeder, change, feeder, get_json, rule_doc
from tests.tokens import bearer
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration

BIG = 250  # members of acme/vip: several pages


class Served:
    def __init__(self, api: ApiProcess, session: aiohttp.ClientSession, f: Feeder) -> None:
        self.api, self.session, self.feeder = api, session, f

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        return await get_json(self.session, self.api.url + path, **params)

    async def wait_count(self, segment: str, account: str, count: int) -> None:
        async def reached() -> bool:
            status, doc = await self.get(f"/accounts/{account}/segments/{segment}")
            return status == 200 and doc["member_count"] == count

        await async_wait_for(reached, 30, what=f"{account}/{segment} has {count} members")


@pytest.fixture
async def served(settings: Settings, redis: Redis) -> AsyncIterator[Served]:
    async with feeder(settings) as f:
        await f.rule("acme", "vip", rule_doc("acme", "vip", name="Acme VIPs"))
        await f.rule("globex", "vip", rule_doc("globex", "vip", name="Globex VIPs"))
        await f.rule("acme", "refunds", rule_doc("acme", "refunds", filter_="refunded"))
        await f.changes([change("acme", "vip", f"m{i:03d}@example.com") for i in range(BIG)])
        await f.changes([change("globex", "vip", "m000@example.com"),
                         change("globex", "vip", "only-globex@example.com"),
                         change("acme", "refunds", "m000@example.com")])
        async with ApiProcess(settings, port=0) as api, aiohttp.ClientSession() as session:
            s = Served(api, session, f)
            await s.wait_count("vip", "acme", BIG)
            await s.wait_count("vip", "globex", 2)
            await s.wait_count("refunds", "acme", 1)
            yield s


async def test_segment_rule_and_count_scoped_by_account(served: Served) -> None:
    status, doc = await served.get("/accounts/acme/segments/vip")
    assert status == 200
    assert doc["member_count"] == BIG
    assert doc["rule"]["name"] == "Acme VIPs"
    assert (doc["account_id"], doc["segment_id"]) == ("acme", "vip")
    status, doc = await served.get("/accounts/globex/segments/vip")
    assert (status, doc["member_count"], doc["rule"]["name"]) == (200, 2, "Globex VIPs")
    status, doc = await served.get("/accounts/acme/segments")
    assert [(s["account_id"], s["segment_id"], s["member_count"]) for s in doc["segments"]] == [
        ("acme", "refunds", 1), ("acme", "vip", BIG)]
    # The admin's unscoped listing, whole or narrowed to one account.
    status, doc = await served.get("/segments")
    assert [(s["account_id"], s["segment_id"], s["member_count"]) for s in doc["segments"]] == [
        ("acme", "refunds", 1), ("acme", "vip", BIG), ("globex", "vip", 2)]
    status, doc = await served.get("/segments", account_id="globex")
    assert [s["segment_id"] for s in doc["segments"]] == ["vip"]


async def test_unknown_and_malformed(served: Served) -> None:
    for path in ["/accounts/acme/segments/nope", "/accounts/globex/segments/refunds",
                 "/accounts/acme/segments/nope/members"]:
        status, doc = await served.get(path)
        assert status == 404, path
        assert "not found" in doc["error"]
    members = "/accounts/acme/segments/vip/members"
    bad = [
        (members, {"limit": "0"}, "limit must be"),
        (members, {"limit": "1001"}, "limit must be"),
        (members, {"limit": "ten"}, "limit must be"),
        (members, {"cursor": "%%%"}, "cursor is not"),
        (members, {"cursor": "Zm9v"}, "cursor is not"),
        ("/accounts/ac%20me/segments/vip", {}, "account_id must be"),
        ("/accounts/acme/segments/v!p", {}, "segment_id must be"),
        ("/segments", {"account_id": "ac me"}, "account_id must be"),
        ("/accounts/acme/contacts/not-an-email/segments", {}, "email must be"),
        ("/accounts/a:b/contacts/x@example.com/segments", {}, "account_id must be"),
    ]
    for path, params, message in bad:
        status, doc = await served.get(path, **params)
        assert (status, doc["error"][: len(message)]) == (400, message), (path, params)
    status, doc = await served.get("/no/such/route")
    assert status == 404


async def test_members_pages_cover_everyone_once(served: Served) -> None:
    emails: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 37}
        if cursor:
            params["cursor"] = cursor
        status, doc = await served.get("/accounts/acme/segments/vip/members", **params)
        assert status == 200
        assert doc["member_count"] == BIG
        assert len(doc["members"]) <= 37
        emails += [m["email"] for m in doc["members"]]
        pages += 1
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    assert pages == 7
    assert emails == [f"m{i:03d}@example.com" for i in range(BIG)]
    member = doc["members"][0]
    assert set(member) == {"email", "since", "fact_id", "rule_version"}
    assert member["since"] == "2026-11-26T23:00:00Z"
    status, doc = await served.get("/accounts/acme/segments/vip/members")
    assert len(doc["members"]) == 100  # the default limit


async def test_paging_while_members_join_and_leave(served: Served) -> None:
    """Members present throughout appear exactly once, whatever changes between pages."""
    status, first = await served.get("/accounts/acme/segments/vip/members", limit=50)
    assert status == 200
    seen = [m["email"] for m in first["members"]]
    await served.feeder.changes(
        [change("acme", "vip", "m010@example.com", "left", "time"),  # already seen
         change("acme", "vip", "m200@example.com", "left", "time"),  # not yet seen
         change("acme", "vip", "a-first@example.com"),  # sorts before the cursor
         change("acme", "vip", "z-last@example.com")])  # sorts after
    await served.wait_count("vip", "acme", BIG)
    cursor = first["next_cursor"]
    while cursor:
        _, doc = await served.get("/accounts/acme/segments/vip/members", limit=50,
                                  cursor=cursor)
        seen += [m["email"] for m in doc["members"]]
        cursor = doc["next_cursor"]
    assert len(seen) == len(set(seen))
    stayed = {f"m{i:03d}@example.com" for i in range(BIG)} - {"m010@example.com",
                                                              "m200@example.com"}
    assert stayed <= set(seen)
    assert "m200@example.com" not in seen
    assert "z-last@example.com" in seen


async def test_contact_segments_scoped_and_normalized(served: Served) -> None:
    path = "/accounts/acme/contacts/{}/segments"
    status, doc = await served.get(path.format(quote("  M000@Example.COM ")))
    assert status == 200
    assert doc["email"] == "m000@example.com"
    assert [s["segment_id"] for s in doc["segments"]] == ["refunds", "vip"]
    status, doc = await served.get(path.replace("acme", "globex").format("m000@example.com"))
    assert [s["segment_id"] for s in doc["segments"]] == ["vip"]
    status, doc = await served.get(path.format("only-globex@example.com"))
    assert (status, doc["segments"]) == (200, [])
    status, doc = await served.get(path.format("nobody@example.com"))
    assert (status, doc["segments"]) == (200, [])


async def test_leaving_and_rule_deletion(served: Served) -> None:
    f = served.feeder
    await f.changes([change("globex", "vip", "m000@example.com", "left", "time")])
    await served.wait_count("vip", "globex", 1)
    status, doc = await served.get("/accounts/globex/contacts/m000@example.com/segments")
    assert doc["segments"] == []
    # The rule is deleted: the segment stays while it has members, without a rule.
    await f.rule("globex", "vip", delete=True)

    async def rule_gone() -> bool:
        status, doc = await served.get("/accounts/globex/segments/vip")
        return status == 200 and doc["rule"] is None

    await async_wait_for(rule_gone, 30, what="globex/vip rule deleted")
    await f.changes([change("globex", "vip", "only-globex@example.com", "left", "rule")])

    async def segment_gone() -> bool:
        status, _ = await served.get("/accounts/globex/segments/vip")
        return status == 404

    await async_wait_for(segment_gone, 30, what="globex/vip gone")
    status, doc = await served.get("/segments")
    assert status == 200
    assert [(s["account_id"], s["segment_id"]) for s in doc["segments"]] == [
        ("acme", "refunds"), ("acme", "vip")]


async def test_health_and_metrics(served: Served) -> None:
    status, doc = await served.get("/healthz", headers={})
    assert (status, doc) == (200, {"status": "ok"})
    await served.get("/accounts/acme/segments/nope/members")
    async with served.session.get(served.api.url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert ('segments_read_model_changes_applied_total{cause="fact",change="joined"} '
            f"{BIG + 3}.0\n") in text
    assert ('segments_api_requests_total{route="/accounts/{account_id}/segments/{segment_id}/'
            'members",status="404"} 1.0\n') in text
    assert 'segments_read_model_lag_messages{topic="segments.membership"}' in text
    assert "segments_api_request_duration_seconds_bucket" in text


async def test_events_stream_changes_with_counts(served: Served) -> None:
    await served.feeder.changes([change("globex", "vip", "earlier@example.com")])
    await served.wait_count("vip", "globex", 3)
    async with served.session.get(served.api.url + "/events", params={"account_id": "globex"},
                                  headers=bearer("globex")) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert await response.content.readline() == b"retry: 2000\n"
        # A new stream starts with the latest changes (of this account only)...
        history = [await asyncio.wait_for(_next_event(response), 30)]
        while history[-1]["data"]["email"] != "earlier@example.com":
            assert len(history) < 4
            history.append(await asyncio.wait_for(_next_event(response), 30))
        assert {e["data"]["account_id"] for e in history} == {"globex"}
        seqs = [e["data"]["seq"] for e in history]
        assert seqs == sorted(seqs)
        # ...then follows live ones.
        await served.feeder.changes([change("acme", "vip", "new@example.com"),
                                     change("globex", "vip", "new@example.com")])
        event = await asyncio.wait_for(_next_event(response), 30)
    assert event["event"] == "change"
    data = event["data"]
    assert (data["account_id"], data["segment_id"], data["email"], data["change"],
            data["cause"], data["member_count"]) == ("globex", "vip", "new@example.com",
                                                     "joined", "fact", 4)
    assert data["at"] == "2026-11-26T23:00:00Z"
    assert data["seq"] > seqs[-1]


async def _next_event(response: aiohttp.ClientResponse) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if "data" in fields:
                return fields
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(": ")
        fields[name] = orjson.loads(value) if name == "data" else value
    raise AssertionError("stream ended")


async def test_web_page_and_assets(served: Served) -> None:
    for path, kind in [("/", "text/html"), ("/static/app.js", "text/javascript"),
                       ("/static/style.css", "text/css")]:
        async with served.session.get(served.api.url + path) as response:
            assert response.status == 200, path
            assert response.content_type == kind
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    async with served.session.get(served.api.url + "/static/index.html") as response:
        assert response.status == 404
    async with served.session.get(served.api.url + "/static/..%2Fapi.py") as response:
        assert response.status == 404
