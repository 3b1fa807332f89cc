"""Screenshot of the web page once it shows data: `python -m tests.e2e.screenshot URL OUT`.

Chromium's own `--screenshot` fires before the live feed has rendered (the page keeps an
event stream open), so this drives it over DevTools and waits for the page to be filled.
The page reads its bearer token from the address's fragment: a URL without `#token=`
gets the one in `SEGMENTS_SCREENSHOT_TOKEN` (kept out of argv, so out of `ps`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from tests.e2e.cdp import Chromium, chromium_binary
from tests.waiting import TimedOut, async_wait_for


async def screenshot(url: str, out: Path, feed_entries: int = 8) -> None:
    binary = chromium_binary()
    if binary is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "profile"
        profile.mkdir()
        browser = Chromium(binary, profile)
        await browser.start()
        try:
            token = os.environ.get("SEGMENTS_SCREENSHOT_TOKEN", "")
            try:  # the timeout's message would name the address, token included
                await browser.navigate(url if "#token=" in url or not token
                                       else f"{url.split('#')[0]}#token={token}")
            except TimedOut:
                raise SystemExit("screenshot: the page did not load within 30 s") from None

            async def filled() -> bool:
                return bool(await browser.evaluate(
                    "document.body.dataset.loaded === 'true' && "
                    f"document.querySelectorAll('#feed li').length >= {feed_entries}"))

            try:
                await async_wait_for(filled, 15, what="the page to fill")
            except TimedOut:
                print("screenshot: few changes on the feed; taking it anyway", file=sys.stderr)
            await asyncio.sleep(1.5)  # let the highlight of the latest change fade
            out.parent.mkdir(parents=True, exist_ok=True)
            await browser.screenshot(out)
        finally:
            await browser.stop()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m tests.e2e.screenshot URL OUT.png")
    asyncio.run(screenshot(sys.argv[1], Path(sys.argv[2])))
