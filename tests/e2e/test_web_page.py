"""End to end: the web page in headless Chromium follows membership changes live."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from common.auth import TokenVerifier
from common.settings import Settings
from common.topics import FACTS_TOPIC, ensure_topics
from rules.schema import build_schema as rule_schema
from serving.server import ApiProcess
from stream.app import StreamApp, StreamOptions, create_app, group_id
from stream.query_server import QueryServer
from tests.conftest import IN_CI
from tests.drain import wait_processed
from tests.e2e.cdp import Chromium, chromium_binary
from tests.integration.test_preview_explain import (
    CONTACTS,
    dataset,
    expected_members,
)
from tests.integration.test_preview_explain import _produce as produce_facts
from tests.read_model_harness import change, feeder, get_json, rule_doc
from tests.tokens import TEST_AUTH_SECRET, bearer, token
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Chromium]:
    binary = chromium_binary()
    if binary is None:
        if IN_CI:
            pytest.fail("chromium is required under CI=true (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    profile = tmp_path / "profile"
    profile.mkdir()
    chromium = Chromium(binary, profile)
    await chromium.start()
    try:
        yield chromium
    finally:
        await chromium.stop()


def count_cell(account: str, segment: str) -> str:
    return (f"(document.querySelector('tr[data-account=\"{account}\"]"
            f"[data-segment=\"{segment}\"] .count') || {{}}).textContent")


async def test_page_shows_counts_changing_live(
    settings: Settings, redis: Redis, browser: Chromium, tmp_path: Path
) -> None:
    async with feeder(settings) as f, ApiProcess(settings, port=0) as api, \
            aiohttp.ClientSession() as session:
        await f.rule("acme", "big-refunds", rule_doc("acme", "big-refunds",
                                                     name="Refunded over $50"))
        await f.rule("acme", "failed-twice", rule_doc("acme", "failed-twice",
                                                      filter_="charge_failed"))
        await f.changes([change("acme", "big-refunds", f"r{i}@example.com") for i in range(3)])
        # Another account's segment: the page, opened with a token for acme, never shows it.
        await f.rule("globex", "big-refunds", rule_doc("globex", "big-refunds"))
        await f.changes([change("globex", "big-refunds", "globex-only@example.com")])

        async def flow() -> None:
            """Changes keep arriving while the page loads."""
            for i in range(20):
                await f.changes([change("acme", "failed-twice", f"f{i}@example.com")])
                await asyncio.sleep(0.05)

        flowing = asyncio.create_task(flow())
        try:
            await browser.navigate(api.url + "/#token=" + token("acme"))

            async def page_ready() -> bool:
                return bool(await browser.evaluate("document.body.dataset.loaded === 'true'"))

            await async_wait_for(page_ready, 30, what="the page's first snapshot")
            await flowing
        finally:
            if not flowing.done():
                flowing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flowing

        async def page_shows(account: str, segment: str, count: int) -> bool:
            return bool(await browser.evaluate(count_cell(account, segment)) == str(count))

        await async_wait_for(lambda: page_shows("acme", "big-refunds", 3), 30,
                             what="big-refunds = 3 on the page")
        await async_wait_for(lambda: page_shows("acme", "failed-twice", 20), 30,
                             what="failed-twice = 20 on the page (snapshot + live)")

        # A change while the page is open: the count moves without a reload.
        await f.changes([change("acme", "big-refunds", "new@example.com"),
                         change("acme", "big-refunds", "r0@example.com", "left", "time")])
        await f.changes([change("acme", "big-refunds", "newer@example.com")])
        await f.changes([change("globex", "big-refunds", "globex-live@example.com")])
        await async_wait_for(lambda: page_shows("acme", "big-refunds", 4), 30,
                             what="big-refunds = 4 on the page")
        feed = await browser.evaluate("document.getElementById('feed').textContent")
        assert "newer@example.com" in feed
        assert "r0@example.com" in feed
        assert "globex" not in feed
        assert await browser.evaluate(
            "document.querySelectorAll('tr[data-account=\"globex\"]').length") == 0
        assert await browser.evaluate("document.getElementById('status').textContent") == "live"
        # The token left the address bar and was stored nowhere.
        assert await browser.evaluate("location.hash") == ""
        assert await browser.evaluate("localStorage.length + sessionStorage.length") == 0
        assert await browser.evaluate("document.cookie") == ""
        status, doc = await get_json(session, api.url + "/accounts/acme/segments/big-refunds")
        assert (status, doc["member_count"]) == (200, 4)
        await browser.screenshot(tmp_path / "web-page.png")
        assert browser.exceptions == []


# --- The rule builder, through the real API and two real workers ---------------------

@pytest.fixture
async def workers(settings: Settings, redis: Redis) -> AsyncIterator[list[StreamApp]]:
    """Two workers (each with its query endpoint) holding acme's contacts' facts."""
    await ensure_topics(settings)
    verifier = TokenVerifier(secret=TEST_AUTH_SECRET)
    async with AsyncExitStack() as stack:
        apps = []
        for _ in range(2):
            app = create_app(settings, StreamOptions())
            await app.start()
            stack.push_async_callback(app.stop)
            query = QueryServer(app, settings, verifier, redis)
            await query.start()
            stack.push_async_callback(query.stop)
            apps.append(app)

        async def both_own() -> bool:
            owned = [a.assigned() for a in apps]
            return all(owned) and set().union(*owned) == set(range(settings.partitions))

        await async_wait_for(both_own, 60, what="both workers owning partitions")
        await produce_facts(settings, dataset(int(time.time())))
        await wait_processed(settings, group_id(settings), [settings.topic(FACTS_TOPIC)])
        yield apps


async def type_into(browser: Chromium, element_id: str, text: str) -> None:
    """Focus the element, clear it and type `text` as a user would (input events)."""
    await browser.evaluate(f"(e => {{ e.focus(); e.select && e.select(); }})"
                           f"(document.getElementById({element_id!r}))")
    await browser.send("Input.insertText", text=text)


async def choose(browser: Chromium, element_id: str, value: str) -> None:
    await browser.evaluate(
        f"(s => {{ s.focus(); s.value = {value!r}; "
        "s.dispatchEvent(new Event('input', {bubbles: true})); "
        "s.dispatchEvent(new Event('change', {bubbles: true})); })"
        f"(document.getElementById({element_id!r}))")
    assert await browser.evaluate(f"document.getElementById({element_id!r}).value") == value


def text_of(element_id: str) -> str:
    return f"document.getElementById({element_id!r}).textContent"


async def test_builder_previews_saves_fills_and_explains(
    settings: Settings, workers: list[StreamApp], browser: Chromium, tmp_path: Path
) -> None:
    want = expected_members()
    shots = Path(os.environ.get("SEGMENTS_WEB_SCREENSHOTS", tmp_path))
    async with ApiProcess(settings, port=0) as api, aiohttp.ClientSession() as session:
        await browser.navigate(api.url + "/#token=" + token("acme"))

        async def builder_ready() -> bool:
            return bool(await browser.evaluate(
                "document.getElementById('builder').dataset.ready === 'true'"))

        await async_wait_for(builder_ready, 30, what="the builder read the rule schema")
        assert await browser.evaluate("document.getElementById('builder-note').hidden")
        # The filters and fields are the schema's: plan is only for subscription filters.
        filters = await browser.evaluate(
            "[...document.querySelectorAll('#rule-filter option')].map(o => o.value)")
        assert filters == rule_schema()["properties"]["filter"]["enum"]
        await type_into(browser, "rule-name", "Failed over $50, usd, last 14 days")
        assert await browser.evaluate("document.getElementById('rule-id').value") \
            == "failed-over-50-usd-last-14-days"
        await choose(browser, "rule-filter", "charge_failed")

        async def preview_is(count: str) -> bool:
            return bool(await browser.evaluate(text_of("preview-count")) == count)

        # No conditions: every acme contact with a failed charge.
        await async_wait_for(lambda: preview_is(str(CONTACTS)), 30, what="preview of all")

        await browser.evaluate("document.getElementById('add-condition').click()")
        fields = await browser.evaluate(
            "[...document.querySelectorAll('#cond-1-field option')].map(o => o.value)")
        assert set(fields) == {"amount", "currency", "date", "occurrences"}
        await choose(browser, "cond-1-field", "amount")
        await choose(browser, "cond-1-op", "gt")
        # A bad value: the API's 422 path shows up in the page, on the condition.
        await type_into(browser, "cond-1-value", "fifty")

        async def error_shown() -> bool:
            return "/conditions/0/value" in str(await browser.evaluate(text_of("preview-errors")))

        await async_wait_for(error_shown, 30, what="the 422 error on the page")
        assert await browser.evaluate(
            "document.querySelector('#conditions li').classList.contains('invalid')")
        await type_into(browser, "cond-1-value", "50")
        await browser.evaluate("document.getElementById('add-condition').click()")
        await choose(browser, "cond-2-field", "currency")
        await choose(browser, "cond-2-op", "is")
        await type_into(browser, "cond-2-value", "usd")
        await browser.evaluate("document.getElementById('add-condition').click()")
        await choose(browser, "cond-3-field", "date")
        await choose(browser, "cond-3-op", "within_last")
        await type_into(browser, "cond-3-value-count", "14")
        assert await browser.evaluate("document.getElementById('cond-3-value-unit').value") \
            == "days"

        await async_wait_for(lambda: preview_is(str(len(want))), 30,
                             what=f"the preview count {len(want)}")
        sample = await browser.evaluate(
            "[...document.querySelectorAll('#preview-sample li')].map(li => li.textContent)")
        assert sample == want[:20]
        assert await browser.evaluate(text_of("preview-errors")) == ""
        await browser.screenshot(shots / "web-builder.png")

        # Save: PUT, then the segment fills and its status turns ready.
        await browser.evaluate("document.getElementById('save').click()")

        async def saved() -> bool:
            return "version 1" in str(await browser.evaluate(text_of("save-note")))

        await async_wait_for(saved, 30, what="the rule saved")

        async def ready() -> bool:
            return bool(await browser.evaluate(text_of("segment-status")) == "ready"
                        and await browser.evaluate("document.querySelectorAll("
                                                   "'#members button.member').length")
                        == len(want))

        await async_wait_for(ready, 60, what="the segment ready with its members")
        assert await browser.evaluate(text_of("segment-count")) == f"{len(want)} members"
        listed = await browser.evaluate(
            "[...document.querySelectorAll('#members button')].map(b => b.dataset.email)")
        assert listed == want
        # The segment list (snapshot + live feed) shows it too.
        segment = "failed-over-50-usd-last-14-days"

        async def listed_count() -> bool:
            return bool(await browser.evaluate(count_cell("acme", segment)) == str(len(want)))

        await async_wait_for(listed_count, 30, what="the new segment's count in the list")
        status, doc = await get_json(session, f"{api.url}/accounts/acme/segments/{segment}",
                                     headers=bearer("acme"))
        assert (status, doc["status"], doc["member_count"]) == (200, "ready", len(want))

        # A member's explanation: which conditions its fact meets, when it changes.
        member = want[0]
        await browser.evaluate(
            f"document.querySelector('#members button[data-email=\"{member}\"]').click()")

        async def explained() -> bool:
            return bool(await browser.evaluate(
                "document.getElementById('explanation').dataset.state === 'ready'"))

        await async_wait_for(explained, 30, what="the explanation")
        summary = await browser.evaluate(text_of("explain-summary"))
        assert summary.startswith("Member")
        assert "time alone changes this at" in summary  # the 14-day window ends
        checks = await browser.evaluate(
            "[...document.querySelectorAll('#explain-facts .checks li')]"
            ".map(li => li.className)")
        assert checks == ["pass", "pass", "pass"]
        facts = await browser.evaluate(text_of("explain-facts"))
        assert f"evt_{int(member[1:4])}" in facts
        assert "qualifies" in facts
        assert await browser.evaluate("document.activeElement.id") == "explain-title"
        await browser.screenshot(shots / "web-explain.png")

        # Any contact, member or not: c001 paid in eur and too little (conditions 1 and 2).
        await type_into(browser, "explain-email", "c001@example.com")
        await browser.evaluate("document.getElementById('explain-form').requestSubmit()")

        async def explained_non_member() -> bool:
            return bool(await browser.evaluate(
                "document.getElementById('explanation').dataset.state === 'ready' && "
                + text_of("explain-title") + " === 'c001@example.com'"))

        await async_wait_for(explained_non_member, 30, what="the non-member's explanation")
        assert await browser.evaluate(text_of("explain-summary")) == "Not a member"
        checks = await browser.evaluate(
            "[...document.querySelectorAll('#explain-facts .checks li')]"
            ".map(li => li.textContent)")
        assert checks == ["✗ fails amount > 50", "✗ fails currency is usd",
                          "✓ holds date within the last 14 days"]

        # The segment list opens a segment's members too (a button: keyboard reachable).
        await browser.evaluate(
            f"document.querySelector('tr[data-segment=\"{segment}\"] button.segment-id')"
            ".click()")
        assert await browser.evaluate(text_of("members-title")) == segment

        # The id names a saved segment: the page says saving replaces it, and replaces it
        # conditionally (If-Match) as version 2, which fills again.
        async def save_offered(label: str) -> bool:
            return bool(await browser.evaluate(text_of("save")) == label)

        await type_into(browser, "rule-id", "not-saved-yet")
        await async_wait_for(lambda: save_offered("Save segment"), 30, what="a new id")
        await type_into(browser, "rule-id", segment)

        async def replace_offered() -> bool:
            return await save_offered("Replace segment")

        await async_wait_for(replace_offered, 30, what="the page offering to replace")
        assert "version 1" in await browser.evaluate(text_of("rule-id-help"))
        await browser.evaluate("document.getElementById('cond-3-value-count').value = '30'")
        await browser.evaluate("document.getElementById('save').click()")

        async def replaced() -> bool:
            return "version 2" in str(await browser.evaluate(text_of("save-note")))

        await async_wait_for(replaced, 30, what="version 2 saved")
        # 30 days: c020, c030, c040 and c050 (usd, over $50, 20 days ago) join.
        grown = len(want) + 4

        async def ready_again() -> bool:
            return bool(await browser.evaluate(text_of("segment-status")) == "ready"
                        and await browser.evaluate(text_of("segment-count"))
                        == f"{grown} members"
                        and await browser.evaluate(count_cell("acme", segment)) == str(grown))

        await async_wait_for(ready_again, 60, what=f"the replaced segment ready with {grown}")
        status, doc = await get_json(session, f"{api.url}/accounts/acme/segments/{segment}",
                                     headers=bearer("acme"))
        assert (status, doc["rule"]["version"]) == (200, 2)
        assert browser.exceptions == []
