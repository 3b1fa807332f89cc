"""The 30-day backfill: a connected account's recent Stripe events onto `stripe.events`.

Stripe keeps 30 days of events; a new connection wants them so that rules such as
"refunded in the last 30 days" are right from the first minute. The backfill reads the
Events API for the needed types from `job.since` (connection time - 30 days) up to
`job.until` (the instant the webhook endpoint exists) plus `overlap_s`, through the
official library's auto-pagination, and publishes each event as a
`RawEvent(source="backfill")`, the very envelope webhooks produce, awaiting Kafka's
acknowledgement. Webhooks bring only what happens after the endpoint exists, so the
backfill must reach that instant: the listing is eventually consistent (read what is
`settle_s` old), so it reads the 30 days first, waits out the settle delay, reads the
tail, and only then reports done (`connectors.backfill_state`, "The window's end").
Events read by both the tail and webhooks collapse downstream (event and fact ids).

Order and resumability are `connectors.backfill_state`'s business (read its docstring):
slices of the window go oldest first; within a page, events of one Kafka key (one
customer) are published strictly one after the other, each after the previous one's
ack, while different keys overlap: Kafka keeps order per key only anyway, and one ack
at a time costs a broker round trip per event (~280 events/s on a local broker against
~20,000 overlapped). `max_in_flight=1` publishes strictly in sequence. The cursor is
saved in Redis after every acknowledged page.

Emulators: localstripe rejects `types[]` ("Unexpected types"); on that refusal the
backfill lists the slice unfiltered and keeps the needed types itself, and remembers the
choice in the progress document (`filter`).

Rate limits: every request (pages of auto-pagination and the library's retries
included) takes a token from a `RequestPacer` (default 20/s, under test mode's 25/s),
and a 429 makes it wait for `Retry-After` (see `connectors.stripe_client`).

Progress lives at `{prefix}backfill:{connection_id}` as JSON (`BackfillProgress`):
state, phase (with `phase_text`, e.g. "waiting for Stripe's Events API to settle"),
events, pages, rate, cursor, error; `GET /connections/{id}` shows it. A Redis
lock (`...:lock`) keeps two runs of one connection from producing twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
import stripe
from stripe.params import EventListParams

from common.settings import Settings
from common.stripe_event_types import NEEDED_EVENT_TYPES
from connectors.backfill_state import (
    BackfillProgress,
    Cursor,
    advance,
    first_slice,
    next_slice,
    oldest_first,
    pending,
    rate,
    readable_until,
    shrink_slice,
    tail_slice,
    type_groups,
)
from connectors.contract import RawEvent
from connectors.emails import EmailResolver
from connectors.errors import ConnectorError
from connectors.sink import EventSink
from connectors.stripe_client import AsyncStripe, RequestPacer

__all__ = ["BackfillBusy", "BackfillJob", "BackfillOptions", "BackfillProgress",
           "progress_key", "read_progress", "reset_backfill", "run_backfill"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[BackfillProgress], None]
#: Told the events of each page Kafka acknowledged (the gap repair records them).
PublishedCallback = Callable[[Sequence[dict[str, Any]]], Awaitable[None]]

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class BackfillJob:
    connection_id: str
    account_id: str
    api_key: str = field(repr=False)
    #: Epoch seconds: the connection time minus 30 days.
    since: int
    #: Epoch seconds: the instant the webhook endpoint exists (the connection's
    #: creation); None: the moment this backfill first starts.
    until: int | None = None


#: How long a stopped run waits for the acks of events already handed to Kafka.
STOP_GRACE_S = 5.0


@dataclass(frozen=True, kw_only=True)
class BackfillOptions:
    """Tuning; the defaults suit Stripe, tests shorten `settle_s`."""

    #: Stripe requests per second (test mode allows 25, live mode 100).
    rate_per_s: float = 20.0
    #: Read up to this many seconds ago: the Events API is eventually consistent.
    settle_s: int = 60
    #: Read this many seconds past `job.until`: clock skew between this host and
    #: Stripe, and a new endpoint's first moments (duplicates collapse downstream).
    overlap_s: int = 60
    page_size: int = 100
    #: Most events held in memory for one slice before it is cut narrower.
    slice_cap: int = 10_000
    #: Concurrent publishes within a page (one per Kafka key at a time); 1 = sequential.
    max_in_flight: int = 100
    #: Fill the email cache from the Customers list before the events.
    warm_customers: bool = True
    log_every_s: float = 5.0
    lock_ttl_s: int = 60
    #: Seconds before one Stripe request counts as failed (and is retried).
    request_timeout_s: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BackfillOptions:
        """`SEGMENTS_BACKFILL_RATE` (requests/s), `SEGMENTS_BACKFILL_SETTLE_S` and
        `SEGMENTS_BACKFILL_OVERLAP_S` (seconds)."""
        env = os.environ if env is None else env
        changes: dict[str, Any] = {}
        if raw := env.get("SEGMENTS_BACKFILL_RATE", "").strip():
            changes["rate_per_s"] = float(raw)
        if raw := env.get("SEGMENTS_BACKFILL_SETTLE_S", "").strip():
            changes["settle_s"] = int(raw)
        if raw := env.get("SEGMENTS_BACKFILL_OVERLAP_S", "").strip():
            changes["overlap_s"] = int(raw)
        return cls(**changes)

    def __post_init__(self) -> None:
        if self.settle_s < 0 or self.overlap_s < 0:
            raise ValueError("settle_s and overlap_s must not be negative")


class BackfillBusy(ConnectorError, RuntimeError):
    """Another run holds this connection's backfill lock."""


def progress_key(settings: Settings, connection_id: str) -> str:
    return f"{settings.topic_prefix}backfill:{connection_id}"


async def read_progress(redis: aioredis.Redis, settings: Settings,
                        connection_id: str) -> BackfillProgress | None:
    raw = await redis.get(progress_key(settings, connection_id))
    return None if raw is None else BackfillProgress.from_json(orjson.loads(raw))


async def reset_backfill(redis: aioredis.Redis, settings: Settings, connection_id: str) -> bool:
    """Forget the progress, so the next run starts over; True if there was any."""
    return bool(await redis.delete(progress_key(settings, connection_id)))


async def run_backfill(job: BackfillJob, *, settings: Settings, sink: EventSink,
                       redis: aioredis.Redis,
                       on_progress: ProgressCallback | None = None,
                       options: BackfillOptions | None = None,
                       on_published: PublishedCallback | None = None) -> BackfillProgress:
    """Backfill `job`, resuming from the saved cursor; returns the final progress.

    A finished backfill of the same window returns at once (`reset_backfill` to redo).
    Raises `BackfillBusy` if another run holds the lock, and re-raises whatever stopped
    the run (`SinkUnavailable`, a Stripe error) after saving `state: failed`.
    """
    return await _Run(job, settings, sink, redis, on_progress,
                      options or BackfillOptions.from_env(), on_published).execute()


@dataclass
class _Overflow:
    seen: int
    oldest: int


class _Run:
    def __init__(self, job: BackfillJob, settings: Settings, sink: EventSink,
                 redis: aioredis.Redis, on_progress: ProgressCallback | None,
                 options: BackfillOptions,
                 on_published: PublishedCallback | None = None) -> None:
        self.job, self.settings, self.sink, self.redis = job, settings, sink, redis
        self.on_progress, self.opts = on_progress, options
        self.on_published = on_published
        self.key = progress_key(settings, job.connection_id)
        self.lock_key = f"{self.key}:lock"
        self.types = frozenset(NEEDED_EVENT_TYPES)
        self._progress: BackfillProgress | None = None
        self.started = time.monotonic()
        self.run_events = 0
        self.pages_base = 0
        self.requests_base = 0
        self.last_log = 0.0
        self.api: AsyncStripe | None = None

    @property
    def progress(self) -> BackfillProgress:
        """The run's progress; loaded (or created) before any step reads it."""
        assert self._progress is not None
        return self._progress

    @progress.setter
    def progress(self, value: BackfillProgress) -> None:
        self._progress = value

    async def execute(self) -> BackfillProgress:
        token = secrets.token_hex(8)
        if not await self.redis.set(self.lock_key, token, nx=True, ex=self.opts.lock_ttl_s):
            raise BackfillBusy(f"a backfill of {self.job.connection_id} is already running")
        keeper = asyncio.create_task(self._keep_lock())
        try:
            return await self._execute()
        finally:
            keeper.cancel()
            try:
                await self.redis.eval(_RELEASE, 1, self.lock_key, token)
            except aioredis.RedisError as exc:  # it expires after lock_ttl_s anyway
                log.warning("backfill %s: lock not released: %s", self.job.connection_id, exc)

    async def _keep_lock(self) -> None:
        while True:
            await asyncio.sleep(self.opts.lock_ttl_s / 3)
            try:
                await self.redis.expire(self.lock_key, self.opts.lock_ttl_s)
            except aioredis.RedisError as exc:  # the next save will fail loudly anyway
                log.warning("backfill %s: lock not refreshed: %s", self.job.connection_id, exc)

    async def _execute(self) -> BackfillProgress:
        job, now = self.job, time.time()
        found = await read_progress(self.redis, self.settings, job.connection_id)
        if found is not None and found.since != job.since:
            log.info("backfill %s: window moved (since %d, was %d): starting over",
                     job.connection_id, job.since, found.since)
            found = None
        if found is not None and found.done:
            return found
        if found is None:
            target = (int(now) if job.until is None else job.until) + self.opts.overlap_s
            until = max(job.since - 1, readable_until(target, now, self.opts.settle_s))
            found = BackfillProgress(job.connection_id, job.account_id, since=job.since,
                                     until=until, target=target, started_at=now,
                                     cursor=first_slice(job.since, until))
        elif found.target == 0:  # written before the tail was read: read it now
            target = found.until if job.until is None else job.until + self.opts.overlap_s
            found = found.with_(target=max(found.until, target))
        self.pages_base = found.pages
        self.progress = found.with_(state="running", runs=found.runs + 1, error=None)
        await self._save(force_log=True)
        try:
            pacer = RequestPacer(self.opts.rate_per_s, burst=1)
            async with AsyncStripe(job.api_key, api_base=self.settings.stripe_api_base,
                                   pacer=pacer, timeout=self.opts.request_timeout_s) as api:
                self.api = api
                if self.opts.warm_customers and self.progress.customers is None:
                    await self._warm(api)
                await self._events(api)
                await self._tail(api)
            self.progress = self.progress.with_(state="done", phase="done", cursor=None,
                                         settle_until=None)
            await self._save(force_log=True)
            return self.progress
        except BaseException as exc:
            self.progress = self.progress.with_(state="failed", error=self._describe(exc))
            try:
                await self._save(force_log=True)
            except Exception as save_error:  # Redis gone too: the first error matters more
                log.error("backfill %s: progress not saved: %s", job.connection_id,
                          type(save_error).__name__)
            raise

    async def _warm(self, api: AsyncStripe) -> None:
        resolver = EmailResolver(self.redis, self.settings, _no_key)
        count = await resolver.warm(self.job.connection_id, self.job.api_key, client=api.client)
        self.requests_base = api.requests
        self.progress = self.progress.with_(customers=count)
        await self._save()

    async def _events(self, api: AsyncStripe) -> None:
        target = max(1, self.opts.slice_cap // 2)
        cursor = self.progress.cursor
        while cursor is not None:
            cap = None if cursor.started or cursor.lo == cursor.hi else self.opts.slice_cap
            listed = await self._list_slice(api, cursor, cap)
            if isinstance(listed, _Overflow):
                cursor = shrink_slice(cursor, listed.seen, listed.oldest, target)
                await self._save(cursor=cursor)
                continue
            ordered = oldest_first(listed)
            todo, cursor, exact = pending(ordered, cursor)
            if not exact:
                note = (f"slice {cursor.lo}-{cursor.hi}: last acknowledged event no longer "
                        "listed; resumed from its second (may repeat a few)")
                log.warning("backfill %s: %s", self.job.connection_id, note)
                self.progress = self.progress.with_(notes=(*self.progress.notes, note)[-5:])
            for start in range(0, len(todo), self.opts.page_size):
                page = todo[start:start + self.opts.page_size]
                acked, error = await self._publish(page)
                if self.on_published is not None and acked:
                    done = set(acked)
                    await self.on_published([e for e in page if e.get("id") in done])
                cursor = advance(cursor, ordered, acked)
                await self._save(cursor=cursor, published=len(acked))
                if error is not None:
                    raise error
            cursor = next_slice(cursor, self.progress.until, len(ordered), target)
            await self._save(cursor=cursor)

    async def _tail(self, api: AsyncStripe) -> None:
        """After the history: wait until the rest of the window is `settle_s` old, then
        read it, until the slices reach the window's end."""
        while self.progress.until < self.progress.end:
            ready_at = self.progress.end + self.opts.settle_s
            wait = ready_at - time.time()
            if wait > 0:
                self.progress = self.progress.with_(phase="settling", settle_until=ready_at)
                await self._save(force_log=True)
                await asyncio.sleep(wait)
                continue
            cursor = tail_slice(self.progress, time.time(), self.opts.settle_s)
            assert cursor is not None  # the whole rest is settle_s old by now
            self.progress = self.progress.with_(phase="tail", until=cursor.hi, settle_until=None)
            await self._save(cursor=cursor, force_log=True)
            await self._events(api)

    async def _list_slice(self, api: AsyncStripe, cursor: Cursor,
                          cap: int | None) -> list[list[dict[str, Any]]] | _Overflow:
        """Every needed event created in the slice, one list per listing made."""
        filtered = self.progress.filter == "types"
        groups: list[list[str] | None] = list(type_groups(self.types)) if filtered else [None]
        listings: list[list[dict[str, Any]]] = []
        kept, oldest = 0, cursor.hi
        for group in groups:
            params: EventListParams = {"limit": self.opts.page_size,
                                       "created": {"gte": cursor.lo, "lte": cursor.hi}}
            if group is not None:
                params["types"] = group
            try:
                listing = await api.client.v1.events.list_async(params=params)
            except stripe.InvalidRequestError as exc:
                if group is None or not rejects_types(exc):
                    raise
                log.info("backfill %s: the Stripe API refuses types[] (%s); listing all "
                         "events and keeping the needed types here",
                         self.job.connection_id, exc.user_message)
                self.progress = self.progress.with_(filter="unfiltered")
                await self._save()
                return await self._list_slice(api, cursor, cap)
            events: list[dict[str, Any]] = []
            async for item in listing.auto_paging_iter():
                event = item.to_dict(for_json=True)
                if group is None and event.get("type") not in self.types:
                    continue
                events.append(event)
                kept += 1
                created = event.get("created")
                if isinstance(created, int):
                    oldest = min(oldest, created)
                if cap is not None and kept > cap:
                    return _Overflow(kept, oldest)
            listings.append(events)
        return listings

    async def _publish(self, page: list[dict[str, Any]]) -> tuple[list[str], BaseException | None]:
        """Publish a page; returns the ids Kafka acknowledged and the first error, if any."""
        received = int(time.time() * 1000)
        raws = [RawEvent(self.job.connection_id, self.job.account_id, "backfill", received, e)
                for e in page]
        if self.opts.max_in_flight <= 1:
            acked: list[str] = []
            for raw in raws:
                try:
                    await self.sink.publish(raw)
                except BaseException as exc:  # cancellation too: save what was acked
                    return acked, exc
                acked.append(raw.event_id)
            return acked, None
        slots = asyncio.Semaphore(self.opts.max_in_flight)
        #: Per event (by index): its publish, once handed to the producer.
        sent: dict[int, asyncio.Future[None]] = {}

        async def one(i: int, before: asyncio.Task[None] | None) -> None:
            if before is not None:
                await before  # same key: only after the previous one's ack (or its error)
            async with slots:
                sent[i] = asyncio.ensure_future(self.sink.publish(raws[i]))
                await asyncio.shield(sent[i])

        tails: dict[bytes, asyncio.Task[None]] = {}
        tasks = []
        for i, raw in enumerate(raws):
            key = raw.key()
            task = asyncio.create_task(one(i, tails.get(key)))
            tails[key] = task
            tasks.append(task)
        stopped: BaseException | None = None
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError as exc:
            # gather cancels what was not sent yet. A publish already handed to Kafka
            # cannot be taken back: it gets `STOP_GRACE_S` to be acknowledged, so that
            # the cursor counts it and a graceful stop repeats nothing. One still not
            # acknowledged then is published again on resume (and collapses downstream
            # by event id).
            stopped = exc
            await asyncio.wait(tasks)
            if sent:
                await asyncio.wait(sent.values(), timeout=STOP_GRACE_S)
            for publish in sent.values():
                publish.cancel()
        acked = [raws[i].event_id for i, publish in sorted(sent.items())
                 if publish.done() and not publish.cancelled() and publish.exception() is None]
        if stopped is None:
            stopped = next((t.exception() for t in tasks
                            if not t.cancelled() and t.exception() is not None), None)
        return acked, stopped

    async def _save(self, *, published: int = 0, force_log: bool = False,
                    **changes: Any) -> None:
        """Persist the progress (with `changes`, e.g. `cursor=`), report and maybe log."""
        self.run_events += published
        changes.update(
            events=self.progress.events + published,
            updated_at=round(time.time(), 3),
            rate_per_s=rate(self.run_events, time.monotonic() - self.started),
        )
        if self.api is not None:
            changes["pages"] = self.pages_base + self.api.requests - self.requests_base
        self.progress = self.progress.with_(**changes)
        await self.redis.set(self.key, orjson.dumps(self.progress.to_json()))
        if self.on_progress is not None:
            self.on_progress(self.progress)
        if force_log or time.monotonic() - self.last_log >= self.opts.log_every_s:
            self.last_log = time.monotonic()
            progress = self.progress
            log.info("backfill %s: %s (%s), %d events, %d pages, %.1f events/s%s",
                     progress.connection_id, progress.state, progress.phase_text,
                     progress.events, progress.pages, progress.rate_per_s,
                     f", at {progress.cursor.lo}" if progress.cursor is not None else "")

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"[:300]
        return text.replace(self.job.api_key, "***") if self.job.api_key else text


def rejects_types(exc: stripe.InvalidRequestError) -> bool:
    return exc.param in ("types", "types[]") or "types" in (exc.user_message or "")


async def _no_key(_connection_id: str) -> str | None:
    """The backfill's resolver only warms (with the job's key); it never looks up."""
    return None
