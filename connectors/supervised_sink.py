"""A Kafka sink that the connector can start while Kafka is down.

The connector must keep answering (503, so Stripe retries) rather than refuse to start
or crash when the broker is away, so the producer is connected in the background and
reconnected after it stops working. Until then `publish` raises `SinkUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from common import kafka
from common.settings import Settings
from connectors.contract import RawEvent
from connectors.sink import KafkaEventSink, SinkUnavailable

log = logging.getLogger(__name__)

#: Non-retriable publish failures after which the producer is rebuilt from scratch: an
#: idempotent producer can end in a state it does not recover from by itself
#: (out-of-order sequence, closed).
RECYCLE_AFTER_FAILURES = 3


def _transient(cause: BaseException | None) -> bool:
    """A timeout or a retriable Kafka error: the producer itself is fine."""
    if cause is None or isinstance(cause, (TimeoutError, OSError)):
        return True
    if type(cause).__name__ == "KafkaTimeoutError":
        return True
    return bool(getattr(cause, "retriable", False))


class SupervisedSink:
    """`KafkaEventSink` started in the background, retried, and rebuilt when stuck."""

    def __init__(
        self,
        settings: Settings,
        *,
        timeout: float = 5.0,
        retry_interval: float = 0.5,
        max_retry_interval: float = 5.0,
        factory: Callable[[Settings, float], KafkaEventSink] | None = None,
        on_state: Callable[[bool], None] | None = None,
        prepare: Callable[[], Awaitable[object]] | None = None,
        stuck_after: float = 30.0,
    ) -> None:
        self.settings = settings
        self.stuck_after = stuck_after
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.max_retry_interval = max_retry_interval
        self._factory = factory or (
            lambda settings, timeout: KafkaEventSink(settings, timeout=timeout))
        self._on_state = on_state or (lambda up: None)
        #: Runs once before the first connection, e.g. declaring the topics.
        self._prepare = prepare
        self._sink: KafkaEventSink | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        self._fatal = 0
        self._up = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._sink is not None

    async def start(self) -> None:
        """Begin connecting; returns at once (see `wait_connected`)."""
        self._ensure_connecting()

    def _ensure_connecting(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._connect(), name="kafka-sink-connect")

    async def wait_connected(self, timeout: float) -> bool:
        """True once the producer is up; for startup logs and tests."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), timeout)
        return self._sink is not None

    async def _connect(self) -> None:
        delay = self.retry_interval
        while True:
            sink = self._factory(self.settings, self.timeout)
            try:
                if self._prepare is not None:
                    await self._prepare()
                    self._prepare = None
                await sink.start()
            except Exception as exc:  # any failure to connect means "try again later"
                with contextlib.suppress(Exception):
                    await sink.stop()
                log.warning("Kafka producer not connected (%s); retrying in %.1fs",
                            type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_interval)
                continue
            self._sink, self._failing_since, self._fatal = sink, None, 0
            self._up.set()
            self._on_state(True)
            log.info("Kafka producer connected to %s", self.settings.kafka_bootstrap_servers)
            return

    async def publish(self, event: RawEvent) -> None:
        sink = self._sink
        if sink is None:
            self._ensure_connecting()
            raise SinkUnavailable("the Kafka producer is not connected")
        try:
            await sink.publish(event)
        except SinkUnavailable as exc:
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
            if not _transient(exc.__cause__):
                self._fatal += 1
            # A producer in a state it cannot leave: rebuild it. Timeouts alone are what
            # an outage or an overload look like, and the producer reconnects by itself;
            # only when they go on without a single success is it rebuilt too.
            stuck = self._fatal >= RECYCLE_AFTER_FAILURES or (
                now - self._failing_since > self.stuck_after)
            if stuck and self._sink is sink:
                await self._recycle(sink)
            raise
        self._failing_since, self._fatal = None, 0

    async def _recycle(self, sink: KafkaEventSink) -> None:
        log.warning("Kafka producer failing repeatedly; rebuilding it")
        self._sink = None
        self._up.clear()
        self._on_state(False)
        # Stopping flushes with the broker gone; do not let it hold up requests.
        task = asyncio.create_task(sink.stop())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._ensure_connecting()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sink, self._sink = self._sink, None
        self._up.clear()
        if sink is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sink.stop(), self.timeout)
        self._on_state(False)


async def kafka_answers(settings: Settings, timeout: float = 2.0) -> bool:
    """True if a broker answers a metadata request now (for /healthz)."""
    client = kafka.client(settings, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.close()
