"""Headless Chromium driven over the DevTools protocol, with nothing but aiohttp."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp

from tests.waiting import async_wait_for


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless browser with one page; `evaluate` runs JavaScript in it."""

    def __init__(self, binary: str, profile: Path, window: tuple[int, int] = (1200, 800)) -> None:
        self.binary = binary
        self.profile = profile
        self.window = window
        self.exceptions: list[str] = []
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        args = [
            self.binary, "--headless=new", "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}", f"--window-size={self.window[0]},{self.window[1]}",
            "--no-first-run", "--no-default-browser-check", "--disable-gpu",
            "--disable-dev-shm-usage", "--disable-extensions", "about:blank",
        ]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        log = (self.profile.parent / "chromium.log").open("wb")
        self._process = await asyncio.create_subprocess_exec(
            *args, stdout=log, stderr=asyncio.subprocess.STDOUT)
        port_file = self.profile / "DevToolsActivePort"

        async def port_known() -> bool:
            if self._process is not None and self._process.returncode is not None:
                raise BrowserError(f"chromium exited with {self._process.returncode}")
            return port_file.exists() and bool(port_file.read_text().strip())

        await async_wait_for(port_known, 30, what="chromium's DevTools port")
        port = int(port_file.read_text().split()[0])
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json()
        page = next(t for t in targets if t["type"] == "page")
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Runtime.enable")
        await self.send("Page.enable")
        await self.send("Emulation.setDeviceMetricsOverride", width=self.window[0],
                        height=self.window[1], deviceScaleFactor=1, mobile=False)

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            doc = message.json()
            if "id" in doc:
                future = self._waiting.pop(doc["id"], None)
                if future is not None and not future.done():
                    future.set_result(doc)
            elif doc.get("method") == "Runtime.exceptionThrown":
                details = doc["params"]["exceptionDetails"]
                self.exceptions.append(str(details.get("exception", {}).get("description")
                                           or details.get("text")))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None, "not started"
        message_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = future
        await self._ws.send_json({"id": message_id, "method": method, "params": params})
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression,
                                 returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

        async def loaded() -> bool:
            return bool(await self.evaluate("document.readyState === 'complete'"))

        await async_wait_for(loaded, 30, what=f"{url} loaded")

    async def screenshot(self, path: Path) -> None:
        import base64

        result = await self.send("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(result["data"]))

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
