"""A fault-injecting HTTP proxy on loopback, in front of a Stripe-compatible server.

Each request, by a seeded random draw, is either forwarded untouched or meets one fault:

- `429`: `429 Too Many Requests` with `Retry-After` (0 or 1 s) and Stripe's error body;
- `500`: `500` with Stripe's `api_error` body;
- `timeout`: nothing is answered for `hold_s` (longer than the client's timeout);
- `drop`: the connection is closed before any answer;
- `truncate`: the real answer's headers and half its body, then the connection closes.

`counts` tallies what happened, for the report. At most `max_faults_in_a_row`
consecutive faults are injected, so that a client retrying as Stripe recommends always
gets through eventually (a real outage longer than that is the resumable backfill's
business, covered elsewhere).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import aiohttp
import orjson
from aiohttp import web

FAULTS = ("429", "500", "timeout", "drop", "truncate")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
              "content-encoding"}


class FaultProxy:
    def __init__(self, upstream: str, *, seed: int, rates: dict[str, float],
                 hold_s: float = 3.0, max_faults_in_a_row: int = 2) -> None:
        unknown = set(rates) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {unknown}")
        self.upstream = upstream.rstrip("/")
        self.rng = random.Random(seed)
        self.rates = rates
        self.hold_s = hold_s
        self.max_faults_in_a_row = max_faults_in_a_row
        self.counts: Counter[str] = Counter()
        self._in_a_row = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _draw(self) -> str | None:
        if self._in_a_row >= self.max_faults_in_a_row:
            self._in_a_row = 0
            return None
        x = self.rng.random()
        for fault, rate in self.rates.items():
            if x < rate:
                self._in_a_row += 1
                return fault
            x -= rate
        self._in_a_row = 0
        return None

    async def _forward(self, request: web.Request) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._session.request(request.method, self.upstream + request.path_qs,
                                         headers=headers, data=await request.read()) as resp:
            body = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
            return resp.status, out, body

    async def handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._draw()
        self.counts["requests"] += 1
        self.counts[fault or "forwarded"] += 1
        if fault == "429":
            return web.Response(
                status=429, headers={"Retry-After": self.rng.choice(["0", "0", "0", "1"])},
                body=orjson.dumps({"error": {"type": "rate_limit_error",
                                             "message": "Too many requests (injected)"}}),
                content_type="application/json")
        if fault == "500":
            return web.Response(
                status=500, content_type="application/json",
                body=orjson.dumps({"error": {"type": "api_error",
                                             "message": "Injected server error"}}))
        if fault == "timeout":
            await asyncio.sleep(self.hold_s)
        if fault in ("drop", "timeout"):
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=204)  # never reaches the closed connection
        status, headers, body = await self._forward(request)
        if fault == "truncate" and len(body) > 1:
            response = web.StreamResponse(status=status, headers=headers)
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.abort()
            return response
        return web.Response(status=status, headers=headers, body=body)
