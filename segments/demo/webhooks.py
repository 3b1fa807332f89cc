"""Deliver the demo's events to the connector the way Stripe does: signed HTTP POSTs.

Each event is posted to `POST /webhooks/stripe/{connection_id}` with a
`Stripe-Signature` made from the connection's signing secret (`connectors.signing`).
Like Stripe, the sender retries a delivery answered 5xx or lost on the way, with
backoff, and now and then delivers an event a second time although it was accepted
(Stripe's at-least-once delivery): the engine must count that occurrence once.
One customer's events go one after the other; different customers' overlap.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from connectors.signing import sign

__all__ = ["DeliveryStats", "WebhookSender"]


@dataclass
class DeliveryStats:
    events: int = 0
    #: Answered 2xx (the connector has Kafka's acknowledgement).
    accepted: int = 0
    #: Answered 4xx: refused (bad signature, unknown connection, malformed).
    refused: int = 0
    #: Attempts answered 5xx or lost, retried later.
    retried: int = 0
    #: Given up after every retry.
    failed: int = 0
    #: Accepted events delivered once more, as Stripe sometimes does.
    redelivered: int = 0


class WebhookSender:
    def __init__(self, session: aiohttp.ClientSession, url: str, secret: str, *,
                 concurrency: int = 16, redeliver: float = 0.05, seed: int = 0,
                 max_attempts: int = 5) -> None:
        self.session = session
        self.url = url
        self.secret = secret
        self.redeliver = redeliver
        self.max_attempts = max_attempts
        self.stats = DeliveryStats()
        self._slots = asyncio.Semaphore(concurrency)
        self._rand = random.Random(seed)

    async def _post(self, body: bytes) -> int | None:
        headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body, self.secret),
                   "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"}
        try:
            async with self._slots, self.session.post(
                self.url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=15)
            ) as resp:
                await resp.read()
                return resp.status
        except (TimeoutError, aiohttp.ClientError):
            return None

    async def deliver(self, event: dict[str, Any]) -> bool:
        """Deliver one event until it is accepted or refused; True if accepted."""
        body = orjson.dumps(event)
        self.stats.events += 1
        for attempt in range(self.max_attempts):
            status = await self._post(body)
            if status is not None and 200 <= status < 300:
                self.stats.accepted += 1
                if self._rand.random() < self.redeliver:
                    self.stats.redelivered += 1
                    await self._post(body)
                return True
            if status is not None and 400 <= status < 500:
                self.stats.refused += 1
                return False
            self.stats.retried += 1
            await asyncio.sleep(min(5.0, 0.2 * 2 ** attempt))
        self.stats.failed += 1
        return False

    async def deliver_in_order(self, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            await self.deliver(event)

    async def deliver_stories(self, stories: Iterable[list[dict[str, Any]]]) -> None:
        """Each story in order; stories concurrently (bounded by `concurrency`)."""
        await asyncio.gather(*(self.deliver_in_order(story) for story in stories))
