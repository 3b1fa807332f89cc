"""The limits every server of ours runs with (`common.http`): a body deadline, the
keep-alive timeout; and that every server's app and runner are built with them."""

from __future__ import annotations

import asyncio
import select
import socket
import time

import pytest
from aiohttp import web

from common.auth import TokenVerifier
from common.http import (
    BODY_DEADLINE_S,
    KEEPALIVE_TIMEOUT_S,
    application,
    hardened,
    runner,
)
from common.settings import Settings
from connectors.server import create_admin_app, create_app
from segments.commands.worker import metrics_app
from serving.app import build_app
from serving.change_feed import ChangeFeed
from serving.metrics import ServingMetrics
from serving.read_model import Namespace
from serving.status_table import StatusTable
from tests.conftest import TEST_SECRET_KEY
from tests.tokens import TEST_AUTH_SECRET

pytestmark = pytest.mark.unit


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    run = runner(app, shutdown_timeout=1.0)
    await run.setup()
    site = web.TCPSite(run, "127.0.0.1", 0)
    await site.start()
    return run, run.addresses[0][1]


async def _echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


async def _exchange(port: int, head: bytes, body_parts: list[bytes],
                    pause: float, until: bytes = b"}") -> tuple[bytes, float]:
    """Send `head`, then each part with a pause; what the server answered, and when."""

    def talk() -> tuple[bytes, float]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            started = time.monotonic()
            sock.sendall(head)
            for part in body_parts:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server answered already: stop, and read it
                try:
                    sock.sendall(part)
                except OSError:  # the server hung up: what did it say?
                    break
                time.sleep(pause)
            answer = b""
            try:
                while chunk := sock.recv(4096):
                    answer += chunk
                    if answer.endswith(until):
                        break
            except OSError:
                pass
            return answer, time.monotonic() - started

    return await asyncio.to_thread(talk)


async def test_a_trickled_body_gets_408_at_the_deadline() -> None:
    app = application(body_deadline_s=0.3)
    app.router.add_post("/", _echo)
    run, port = await _serve(app)
    try:
        head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        # 10 bytes every 0.1 s: would take a second, the deadline is 0.3 s.
        answer, elapsed = await _exchange(port, head, [b"x" * 10] * 10, 0.1)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:60]
        assert b"Connection: close" in answer
        assert elapsed < 0.9  # well before the whole body could have come
        # A body that arrives in time is read as usual.
        answer, _ = await _exchange(port, head, [b"y" * 100], 0, b"y" * 100)
        assert answer.startswith(b"HTTP/1.1 200")
        assert answer.endswith(b"y" * 100)
    finally:
        await run.cleanup()


async def test_the_deadline_counts_from_the_request_not_from_each_read() -> None:
    """Waiting for the body is what is bounded: a request without one is untouched,
    and a handler that is slow after reading is not cut short."""

    async def slow(request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(0.4)
        return web.Response(body=body)

    app = application(body_deadline_s=0.2)
    app.router.add_post("/", slow)
    run, port = await _serve(app)
    try:
        head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n"
        answer, _ = await _exchange(port, head, [b"abc"], 0, b"abc")
        assert answer.startswith(b"HTTP/1.1 200")
        assert answer.endswith(b"abc")
    finally:
        await run.cleanup()


async def test_an_idle_keep_alive_connection_is_closed() -> None:
    app = application()
    app.router.add_get("/", _ok)
    run = web.AppRunner(app, access_log=None, keepalive_timeout=0.3)
    await run.setup()
    await web.TCPSite(run, "127.0.0.1", 0).start()
    port = run.addresses[0][1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
        # The server hangs up by itself shortly after the timeout.
        assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()
    finally:
        await run.cleanup()


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def test_defaults() -> None:
    assert BODY_DEADLINE_S == 10.0
    run = runner(application())
    assert run._kwargs["keepalive_timeout"] == KEEPALIVE_TIMEOUT_S  # type: ignore[attr-defined]


def test_every_server_app_is_hardened() -> None:
    """Connector (public and admin), query API and a worker's metrics port."""
    settings = Settings(secret_key=TEST_SECRET_KEY, auth_secret=TEST_AUTH_SECRET)
    public = create_app(settings, start_backfill=False)
    admin = create_admin_app(public, TokenVerifier(secret=TEST_AUTH_SECRET))
    serving_metrics = ServingMetrics()
    api = build_app(None, Namespace(""), serving_metrics, ChangeFeed(None, "c", serving_metrics),
                    TokenVerifier(secret=TEST_AUTH_SECRET), settings=settings,
                    status=StatusTable(settings))

    class Worker:
        metrics = serving_metrics
        group_id = "g"

    worker = metrics_app(Worker(), settings)
    for app in (public, admin, api, worker):
        assert hardened(app)
    assert not hardened(web.Application())
