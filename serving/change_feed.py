"""The live feed behind `GET /events`: applied changes, fanned out to open streams.

The read-model writer publishes each applied batch on one Redis channel after Redis has
the new state, so every API process (however the topic partitions are spread over
them) sees every change, with the segment's member count after it and the write's seq
(which orders events against a snapshot of `GET /segments`). A stream that reads
too slowly is closed rather than buffered without bound (its queue is capped, and a
write the client does not take within `write_timeout` seconds drops it); the browser
reconnects and the page reloads its counts. At most `max_subscribers` streams are open
per process (`SEGMENTS_FEED_MAX_SUBSCRIBERS`, default 200); one more is refused with 503
and `Retry-After`.

Each stream is limited to the accounts its caller may see, at the source: `dispatch`
hands a stream only its accounts' events, so another account's change is never queued
for it, not even to be dropped later.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson

from serving.errors import ServingError
from serving.metrics import ServingMetrics
from stream.changes import MembershipChange

log = logging.getLogger(__name__)

Event = dict[str, Any]

#: Open streams per API process, unless SEGMENTS_FEED_MAX_SUBSCRIBERS says otherwise.
MAX_SUBSCRIBERS = 200
#: Seconds a stream's client has to take one write before the stream is dropped.
WRITE_TIMEOUT_S = 10.0


class FeedFull(ServingError):
    """Every stream slot of this process is taken."""

    retriable = True


def change_event(change: MembershipChange, member_count: int, seq: int) -> Event:
    return {
        "type": "change",
        "account_id": change.account_id,
        "segment_id": change.segment_id,
        "email": change.email,
        "change": change.change,
        "cause": change.cause,
        "at": change.at,
        "fact_id": change.fact_id,
        "rule_version": change.rule_version,
        "member_count": member_count,
        "seq": seq,
    }


def rule_event(
    account_id: str, segment_id: str, doc: bytes | None, member_count: int, seq: int
) -> Event:
    return {
        "type": "rule",
        "account_id": account_id,
        "segment_id": segment_id,
        "rule": orjson.loads(doc) if doc is not None else None,
        "member_count": member_count,
        "seq": seq,
    }


async def publish(redis: Any, channel: str, events: Sequence[Event]) -> None:
    if events:
        await redis.publish(channel, orjson.dumps(list(events)))


class Subscription:
    """One open stream's queue: bounded; overflowing closes it. `accounts`: the only
    accounts whose events it takes (None: every account's, the admin's stream)."""

    def __init__(self, limit: int, accounts: frozenset[str] | None = None) -> None:
        self.limit = limit
        self.accounts = accounts
        self.overflowed = False
        self._items: deque[Event] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False

    def wants(self, event: Event) -> bool:
        return self.accounts is None or event.get("account_id") in self.accounts

    def push(self, event: Event) -> None:
        if self._closed:
            return
        if len(self._items) >= self.limit:
            self.overflowed = True
            self._items.clear()
            self.close()
            return
        self._items.append(event)
        self._wakeup.set()

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    async def next_events(self, timeout: float) -> list[Event] | None:
        """What arrived since the last call ([] after `timeout`); None once closed."""
        if not self._items and not self._closed:
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                return []
        self._wakeup.clear()
        if self._items:
            items = list(self._items)
            self._items.clear()
            return items
        return None if self._closed else []


class ChangeFeed:
    """Subscribes to the feed channel and hands each event to every open stream."""

    def __init__(
        self, redis: Any, channel: str, metrics: ServingMetrics, queue_limit: int = 2000,
        recent: int = 50, *, max_subscribers: int = MAX_SUBSCRIBERS,
        write_timeout: float = WRITE_TIMEOUT_S,
    ) -> None:
        self.redis = redis
        self.max_subscribers = max_subscribers
        self.write_timeout = write_timeout
        self.channel = channel
        self.metrics = metrics
        self.queue_limit = queue_limit
        self.ready = asyncio.Event()
        #: The latest changes, sent first to a new stream so a fresh page shows activity.
        self.recent: deque[Event] = deque(maxlen=recent)
        self._subscriptions: set[Subscription] = set()

    async def run(self) -> None:
        """Until cancelled; a lost Redis connection raises (the process must stop)."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
            self.ready.set()
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    self.dispatch(message["data"])
        finally:
            await pubsub.aclose()

    def dispatch(self, data: bytes) -> None:
        try:
            events = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("ignoring a malformed feed message on %s", self.channel)
            return
        self.recent.extend(e for e in events if e.get("type") == "change")
        for subscription in list(self._subscriptions):
            for event in events:
                if subscription.wants(event):
                    subscription.push(event)
            if subscription.overflowed:
                self.metrics.feed_dropped.inc()
                self._subscriptions.discard(subscription)

    @contextmanager
    def subscribe(self, *, history: bool = False,
                  accounts: frozenset[str] | None = None) -> Iterator[Subscription]:
        """A new stream's queue for `accounts` (None: all); with `history`, it starts
        with the recent changes of those accounts. FeedFull when `max_subscribers` streams
        are open already."""
        if len(self._subscriptions) >= self.max_subscribers:
            raise FeedFull(f"{len(self._subscriptions)} streams open")
        subscription = Subscription(self.queue_limit + len(self.recent), accounts)
        if history:
            for event in self.recent:
                if subscription.wants(event):
                    subscription.push(event)
        self._subscriptions.add(subscription)
        self.metrics.feed_subscribers.inc()
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            self.metrics.feed_subscribers.dec()

    def drop(self, subscription: Subscription) -> None:
        """Close a stream whose client stopped reading (a write timed out)."""
        subscription.close()
        if subscription in self._subscriptions:
            self.metrics.feed_dropped.inc()
            self._subscriptions.discard(subscription)

    def close(self) -> None:
        """End every open stream (server shutdown)."""
        for subscription in list(self._subscriptions):
            subscription.close()
