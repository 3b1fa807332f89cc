"""Screenshot of the web page once it shows data: `python -m tests.e2e.screenshot URL OUT`.

Chromium's own `--screenshot` fires before the live feed has rendered (the page keeps an
event stream open), so this drives it over DevTools and waits for the page to be filled.
"""

from __future__ import annotations

import asyncio
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
            await browser.navigate(url)

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
