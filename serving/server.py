"""One serving process: the read-model writer, the live feed and the query API.

`segments api` runs this until SIGINT/SIGTERM. If the writer or the feed stops on its
own (Kafka or Redis gone), the process exits non-zero on purpose, so that the
orchestrator restarts it, rather than serving a read model that no longer moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from aiohttp import web
from aiokafka.errors import KafkaError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from common.auth import AuthConfigError, TokenVerifier, resolve_verifier
from common.http import runner
from common.redis_client import redis_client
from common.settings import Settings
from common.topics import MEMBERSHIP_TOPIC, RULES_TOPIC, STATUS_TOPIC, TOPICS, ensure_topics
from serving.app import build_app
from serving.change_feed import MAX_SUBSCRIBERS, ChangeFeed
from serving.erasure import forget
from serving.metrics import ServingMetrics
from serving.read_model import Namespace
from serving.read_model_agent import ReadModelAgent
from serving.status_table import StatusTable

log = logging.getLogger(__name__)


def feed_max_subscribers(env: Mapping[str, str]) -> int:
    """`SEGMENTS_FEED_MAX_SUBSCRIBERS`: open `/events` streams per process (default 200)."""
    raw = env.get("SEGMENTS_FEED_MAX_SUBSCRIBERS", "").strip()
    if not raw:
        return MAX_SUBSCRIBERS
    value = int(raw)
    if value < 1:
        raise ValueError("SEGMENTS_FEED_MAX_SUBSCRIBERS must be at least 1")
    return value


def connect_redis(settings: Settings) -> Redis:
    return redis_client(settings)


class ApiProcess:
    """Start, run and stop the serving components; usable as an async context manager."""

    def __init__(
        self, settings: Settings, *, host: str = "127.0.0.1", port: int | None = None,
        read_model: bool = True, verifier: TokenVerifier | None = None,
    ) -> None:
        """`verifier` defaults to the configured keys (`common.auth.resolve_verifier`,
        which raises `AuthConfigError` in production when none is configured)."""
        verifier = resolve_verifier(settings) if verifier is None else verifier
        self.settings = settings
        self.host = host
        self.port = settings.api_port if port is None else port
        self.redis = connect_redis(settings)
        self.metrics = ServingMetrics()
        self.ns = Namespace(settings.topic_prefix)
        self.feed = ChangeFeed(self.redis, self.ns.feed, self.metrics,
                         max_subscribers=feed_max_subscribers(os.environ))
        self.agent = ReadModelAgent(settings, self.redis, self.metrics) if read_model else None
        self.status = StatusTable(settings)
        self.app = build_app(self.redis, self.ns, self.metrics, self.feed, verifier,
                             settings=settings, status=self.status,
                             erase=functools.partial(forget, settings))
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        assert self._runner is not None, "not started"
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        if self.agent is not None:
            wanted = (MEMBERSHIP_TOPIC, RULES_TOPIC, STATUS_TOPIC)
            await ensure_topics(self.settings, tuple(s for s in TOPICS if s.name in wanted))
        feed = asyncio.create_task(self.feed.run(), name="feed")
        self._tasks.append(feed)
        ready = asyncio.create_task(self.feed.ready.wait())
        await asyncio.wait({feed, ready}, return_when=asyncio.FIRST_COMPLETED)
        if feed.done():  # Redis refused the subscription
            ready.cancel()
            feed.result()
        if self.agent is not None:
            self._tasks.append(asyncio.create_task(self.agent.run(), name="read-model"))
        self._tasks.append(asyncio.create_task(self.status.run(), name="status"))
        self._runner = runner(self.app, shutdown_timeout=5.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("query API on %s", self.url)

    async def wait(self) -> None:
        """Returns when a background component stopped; raises what it raised."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        raise RuntimeError(f"{next(iter(done)).get_name()} stopped unexpectedly")

    async def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
        self.status.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        for task in self._tasks:
            if task.get_name() not in ("read-model", "status"):
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10.0)
        await self.redis.aclose()

    async def __aenter__(self) -> ApiProcess:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve(settings: Settings, host: str, port: int | None, *, read_model: bool) -> int:
    """Run until a signal (0) or until a component fails (1)."""
    try:
        verifier = resolve_verifier(settings)
    except AuthConfigError as exc:
        log.error("cannot start: %s", exc)
        return 2
    process = ApiProcess(settings, host=host, port=port, read_model=read_model,
                         verifier=verifier)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    status = 0
    try:
        await process.start()
    except (RedisError, KafkaError, OSError) as exc:
        log.error("cannot start: %s", exc)
        await process.stop()
        return 1
    try:
        stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait())
        watcher = asyncio.create_task(process.wait())
        await asyncio.wait({stopper, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if watcher.done():
            status = 1
            failure = watcher.exception()
            log.error("stopping: %s", failure, exc_info=failure)
        else:
            watcher.cancel()
        stopper.cancel()
    finally:
        await process.stop()
    return status
