"""End to end: the web page in headless Chromium follows membership changes live."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from common.settings import Settings
from serving.server import ApiProcess
from tests.conftest import IN_CI
from tests.e2e.cdp import Chromium, chromium_binary
from tests.read_model_harness import change, feeder, get_json, rule_doc
from tests.tokens import token
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
