"""The live feed's limits on the real aiohttp app: a cap on open streams (503 with
Retry-After past it) and a write timeout that drops a client that stopped reading."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import ClientSession, web

from common.auth import TokenVerifier
from common.http import runner
from common.settings import Settings
from serving.app import build_app
from serving.change_feed import ChangeFeed, FeedFull
from serving.metrics import ServingMetrics
from serving.read_model import Namespace
from serving.status_table import StatusTable
from tests.tokens import TEST_AUTH_SECRET, bearer, token

pytestmark = pytest.mark.unit


async def _serve(feed: ChangeFeed, metrics: ServingMetrics) -> tuple[web.AppRunner, int]:
    app = build_app(None, Namespace(""), metrics, feed, TokenVerifier(secret=TEST_AUTH_SECRET),
                    settings=Settings(), status=StatusTable(Settings()))
    run = runner(app, shutdown_timeout=1.0)
    await run.setup()
    await web.TCPSite(run, "127.0.0.1", 0).start()
    return run, run.addresses[0][1]


@pytest.fixture
async def session() -> AsyncIterator[ClientSession]:
    async with ClientSession() as client:
        yield client


def test_subscribe_refuses_past_the_cap() -> None:
    metrics = ServingMetrics()
    feed = ChangeFeed(None, "c", metrics, max_subscribers=2)
    with feed.subscribe(), feed.subscribe(), pytest.raises(FeedFull), feed.subscribe():
        pass
    with feed.subscribe():  # slots come back when streams close
        assert metrics.feed_subscribers._value.get() == 1


async def test_the_cap_answers_503_with_retry_after(session: ClientSession) -> None:
    metrics = ServingMetrics()
    feed = ChangeFeed(None, "c", metrics, max_subscribers=1)
    run, port = await _serve(feed, metrics)
    url = f"http://127.0.0.1:{port}/events"
    try:
        async with session.get(url, headers=bearer("acme")) as first:
            assert first.status == 200
            await first.content.readuntil(b"connected\n\n")
            async with session.get(url, headers=bearer("acme")) as second:
                assert second.status == 503
                assert second.headers["Retry-After"] == "5"
                assert "error" in await second.json()
        feed.close()
    finally:
        await run.cleanup()


async def test_a_client_that_stops_reading_is_dropped_not_buffered() -> None:
    """The queue is made large enough never to overflow: what drops the stream is the
    write that the client does not take within the write timeout."""
    metrics = ServingMetrics()
    feed = ChangeFeed(None, "c", metrics, queue_limit=1_000_000, write_timeout=0.5)
    run, port = await _serve(feed, metrics)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        request = (f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                   f"{token('acme')}\r\n\r\n").encode()
        await loop.sock_sendall(sock, request)
        await asyncio.wait_for(loop.sock_recv(sock, 1024), 5)  # headers: subscribed
        big = {"type": "change", "account_id": "acme", "email": "x" * 60_000}
        # Never read again: the server's socket buffers fill, then one write stalls.
        for _ in range(400):
            feed.dispatch(orjson.dumps([big]))
            await asyncio.sleep(0.005)
            if metrics.feed_dropped._value.get():
                break
        for _ in range(200):
            if metrics.feed_dropped._value.get():
                break
            await asyncio.sleep(0.05)
        assert metrics.feed_dropped._value.get() == 1
        assert metrics.feed_subscribers._value.get() == 0
        assert not feed._subscriptions
    finally:
        sock.close()
        await run.cleanup()
