"""Gap repair: what webhooks missed, read back from the Events API.

Stripe retries a failed webhook for up to three days in live mode (only a few times in
test mode); a connector that was down longer, or an endpoint Stripe disabled, loses
events for good unless someone reads them back. Each connection's reconciler does that
at connector start and every `SEGMENTS_RECONCILE_INTERVAL_S` seconds (default 300).

What was seen: `SeenEvents` keeps, per connection, the ids and `created` times of the
events the connector published for it (webhooks record theirs after Kafka's ack, the
reconciler its own) in a Redis sorted set `{prefix}reconcile:{id}:seen`. Its highest
score is the watermark: the newest event seen (the connection's creation, from which
webhooks flow and before which the 30-day backfill reads, when none was). A round lists
the Events API for the needed types from the watermark minus the settle delay
(`SEGMENTS_BACKFILL_SETTLE_S`: the listing is eventually consistent) up to now, oldest
first, and publishes every listed event whose id is not in the set, as
`RawEvent(source="backfill")`, the envelope the backfill writes, then records it. So
overlapping rounds never publish an event twice, nor one a webhook delivered; what
repeats anyway (a crash between the ack and the record) collapses downstream by event
and fact id. Ids older than the round's start are pruned: no later round reads there.

Listing and rate limiting are the backfill's: `AsyncStripe` with a `RequestPacer`
(`SEGMENTS_BACKFILL_RATE`, 429s wait for `Retry-After`), the library's auto-pagination,
`types[]` in groups of 20 and, where an emulator refuses `types[]`, an unfiltered
listing filtered here. A Redis lock per connection (`...:lock`) keeps several connector
replicas from reconciling one connection at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import stripe
from stripe.params import EventListParams

from common.settings import Settings
from common.stripe_event_types import NEEDED_EVENT_TYPES
from common.windows import BACKFILL_DAYS
from connectors.backfill import BackfillOptions, rejects_types
from connectors.backfill_state import oldest_first, type_groups
from connectors.contract import RawEvent
from connectors.sink import EventSink
from connectors.store import Connection, ConnectionStore
from connectors.stripe_client import AsyncStripe, RequestPacer

log = logging.getLogger(__name__)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, kw_only=True)
class ReconcileOptions:
    interval_s: float = 300.0
    #: The overlap below the watermark: the Events API lists an event late.
    settle_s: int = 60
    rate_per_s: float = 20.0
    page_size: int = 100
    lock_ttl_s: int = 600

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReconcileOptions:
        """`SEGMENTS_RECONCILE_INTERVAL_S`, and the backfill's `SEGMENTS_BACKFILL_SETTLE_S`
        and `SEGMENTS_BACKFILL_RATE`."""
        env = os.environ if env is None else env
        backfill = BackfillOptions.from_env(env)
        raw = env.get("SEGMENTS_RECONCILE_INTERVAL_S", "").strip()
        interval = float(raw) if raw else cls.interval_s
        if interval <= 0:
            raise ValueError("SEGMENTS_RECONCILE_INTERVAL_S must be positive")
        return cls(interval_s=interval, settle_s=backfill.settle_s,
                   rate_per_s=backfill.rate_per_s)


class _Batch:
    """Scores waiting for one `ZADD`, and the future every contributor awaits."""

    def __init__(self) -> None:
        self.scores: dict[str, int] = {}
        self.written: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class SeenEvents:
    """Per connection: the ids (and `created`) of events published, in Redis.

    Every webhook records its event, so `add` is a group commit: the events added to
    one connection while the loop runs the other ready callbacks go out as one `ZADD`,
    and each caller returns once it is written (or gets its error). At 1,000 webhooks a
    second that is a few commands a second instead of a thousand round trips.
    """

    def __init__(self, redis: aioredis.Redis, prefix: str, *, overlap_s: int = 60) -> None:
        self.redis, self.prefix = redis, prefix
        #: How far below a watermark the reconciler reads (its settle delay): events
        #: older than a connection's creation minus this are never read again.
        self.overlap_s = overlap_s
        self._pending: dict[str, _Batch] = {}
        #: Writes under way (the loop keeps only weak references to tasks).
        self._writes: set[asyncio.Task[None]] = set()

    def key(self, connection_id: str) -> str:
        return f"{self.prefix}reconcile:{connection_id}:seen"

    async def add(self, connection_id: str, events: Sequence[dict[str, Any]]) -> None:
        scores = {str(e["id"]): int(e["created"]) for e in events
                  if isinstance(e.get("created"), int)}
        if not scores:
            return
        batch = self._pending.get(connection_id)
        if batch is None:
            batch = self._pending[connection_id] = _Batch()
            asyncio.get_running_loop().call_soon(self._write, connection_id, batch)
        batch.scores.update(scores)
        # shield: a caller cancelled (its request gone) leaves the others' write alone.
        await asyncio.shield(batch.written)

    def _write(self, connection_id: str, batch: _Batch) -> None:
        """Closes the batch and sends it; later adds start the next one."""
        del self._pending[connection_id]

        async def write() -> None:
            try:
                await self.redis.zadd(self.key(connection_id), batch.scores)
            except asyncio.CancelledError:
                batch.written.cancel()
                raise
            except Exception as exc:  # every waiter gets it (a RedisError, mostly)
                batch.written.set_exception(exc)
                # A batch whose callers were all cancelled: no "never retrieved".
                batch.written.exception()
                return
            batch.written.set_result(None)

        task = asyncio.ensure_future(write())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def watermark(self, connection_id: str) -> int | None:
        """The newest `created` seen, or None."""
        top = await self.redis.zrange(self.key(connection_id), -1, -1, withscores=True)
        return int(top[0][1]) if top else None

    async def since(self, connection_id: str, created: int) -> set[str]:
        ids = await self.redis.zrangebyscore(self.key(connection_id), created, "+inf")
        return {i.decode() if isinstance(i, bytes) else str(i) for i in ids}

    async def prune(self, connection_id: str, before: int) -> None:
        await self.redis.zremrangebyscore(self.key(connection_id), "-inf", f"({before}")

    async def forget(self, connection_id: str) -> None:
        await self.redis.delete(self.key(connection_id))


class Reconciler:
    """The gap repair of every connection of a store (see the module doc)."""

    def __init__(self, settings: Settings, store: ConnectionStore, sink: EventSink,
                 seen: SeenEvents, options: ReconcileOptions | None = None) -> None:
        self.settings, self.store, self.sink, self.seen = settings, store, sink, seen
        self.opts = options or ReconcileOptions.from_env()
        #: Connections whose Stripe (an emulator) refuses `types[]`.
        self._unfiltered: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def reconcile(self, conn: Connection) -> int:
        """One round for `conn`; returns how many events it published (0 when another
        replica holds the lock)."""
        lock = f"{self.seen.key(conn.id)}:lock"
        token = secrets.token_hex(8)
        if not await self.store.redis.set(lock, token, nx=True, ex=self.opts.lock_ttl_s):
            return 0
        try:
            return await self._reconcile(conn)
        finally:
            await self.store.redis.eval(_RELEASE, 1, lock, token)

    async def _reconcile(self, conn: Connection) -> int:
        now = int(time.time())
        watermark = max(await self.seen.watermark(conn.id) or 0, conn.created_at)
        # Not before what Stripe keeps (30 days), with a minute to spare.
        since = max(watermark - self.opts.settle_s, now - BACKFILL_DAYS * 86400 + 60)
        known = await self.seen.since(conn.id, since)
        await self.seen.prune(conn.id, since)
        pacer = RequestPacer(self.opts.rate_per_s, burst=1)
        async with AsyncStripe(self.store.api_key(conn), api_base=self.settings.stripe_api_base,
                               pacer=pacer) as api:
            listed = await self._list(api, conn.id, since, now)
        todo = [e for e in oldest_first(listed) if e.get("id") not in known]
        received = int(time.time() * 1000)
        published = 0
        try:
            for start in range(0, len(todo), self.opts.page_size):
                page = todo[start:start + self.opts.page_size]
                done: list[dict[str, Any]] = []
                try:
                    for event in page:  # one at a time: Kafka's order per key holds
                        await self.sink.publish(
                            RawEvent(conn.id, conn.account_id, "backfill", received, event))
                        done.append(event)
                finally:
                    await self.seen.add(conn.id, done)
                    published += len(done)
        finally:
            if published:
                log.info("reconcile %s: published %d event(s) webhooks missed, created "
                         "since %d", conn.id, published, since)
        return published

    async def _list(self, api: AsyncStripe, connection_id: str, lo: int,
                    hi: int) -> list[list[dict[str, Any]]]:
        groups: list[list[str] | None] = (
            [None] if connection_id in self._unfiltered else list(type_groups(NEEDED_EVENT_TYPES)))
        listings: list[list[dict[str, Any]]] = []
        for group in groups:
            params: EventListParams = {"limit": self.opts.page_size,
                                       "created": {"gte": lo, "lte": hi}}
            if group is not None:
                params["types"] = group
            try:
                listing = await api.client.v1.events.list_async(params=params)
            except stripe.InvalidRequestError as exc:
                if group is None or not rejects_types(exc):
                    raise
                self._unfiltered.add(connection_id)
                return await self._list(api, connection_id, lo, hi)
            events: list[dict[str, Any]] = []
            async for item in listing.auto_paging_iter():
                event = item.to_dict(for_json=True)
                if event.get("type") in NEEDED_EVENT_TYPES:
                    events.append(event)
            listings.append(events)
        return listings

    async def run_once(self) -> dict[str, int]:
        """A round over every connection; returns what each published. A connection
        whose round fails (key revoked: see `connectors.health`) is skipped."""
        published: dict[str, int] = {}
        for conn in self.store.connections():
            try:
                published[conn.id] = await self.reconcile(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reconcile %s failed: %s; next round in %.0f s", conn.id,
                            type(exc).__name__, self.opts.interval_s)
        return published

    async def run(self) -> None:
        if self.store.log is not None:
            await self.store.log.loaded.wait()
        while True:
            await self.run_once()
            await asyncio.sleep(self.opts.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="reconcile")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
