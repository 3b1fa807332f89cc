"""The chaos run's events, delivered the way Stripe delivers them: signed webhooks to the
connector's public endpoint, each retried with the same body until acknowledged.

Stripe retries any answer that is not 2xx (and a connection that fails or times out)
after a backoff, with the same payload signed afresh; the connector answers 503 while
Kafka cannot take an event (a broker bounce) and 200 only once Kafka holds it with
acks=all. Deliveries run with bounded concurrency (`IN_FLIGHT`) so the connector is
under load, not fed one request at a time.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson

from tests import stripe_events as se
from tests.chaos import oracle
from tests.connector_harness import Connector
from tests.stripe_signing import sign

#: Webhooks in flight at once (Stripe sends many concurrently to one endpoint).
IN_FLIGHT = 64
#: Backoff before a redelivery: short (Stripe's first retries come within minutes; the
#: test cannot wait that long), growing with each attempt of the same event.
BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
#: One delivery's client timeout; Stripe counts a timeout as a failed delivery.
REQUEST_TIMEOUT_S = 30.0
#: A bound on the redeliveries of one event (about ten minutes of 2 s backoffs).
MAX_ATTEMPTS = 300


@dataclass
class Deliveries:
    """What the connector answered, over every delivery attempt of the run."""

    #: Answers by HTTP status; "error" for a connection that failed or timed out.
    answers: Counter[str] = field(default_factory=Counter)
    #: Redeliveries (attempts after a non-2xx answer or an error).
    retries: int = 0
    #: Events acknowledged (2xx).
    acknowledged: int = 0
    #: The most attempts one event needed.
    most_attempts: int = 0

    def line(self) -> str:
        statuses = ", ".join(f"{n} x {k}" for k, n in sorted(self.answers.items()))
        return (f"{self.acknowledged} webhooks acknowledged; answers {statuses}; "
                f"{self.retries} redeliveries (at most {self.most_attempts} attempts "
                f"for one event)")


def body_of(charge: oracle.Charge) -> bytes:
    obj = se.charge(amount=charge.amount, billing_email=charge.email,
                    created=charge.created, failed=charge.failed)
    event = se.event("charge.failed" if charge.failed else "charge.succeeded", obj,
                     created=charge.created)
    return orjson.dumps(event)


class StripeSender:
    """Delivers events to one connection of a running connector, as Stripe would."""

    def __init__(self, connector: Connector, connection_id: str, secret: str) -> None:
        self.connector = connector
        self.url = f"{connector.url}/webhooks/stripe/{connection_id}"
        self.secret = secret
        self.stats = Deliveries()
        self.gate = asyncio.Semaphore(IN_FLIGHT)
        self.timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)

    async def _attempt(self, body: bytes) -> str:
        headers = {"Stripe-Signature": sign(body, self.secret),
                   "Content-Type": "application/json"}
        try:
            async with self.connector.http.post(self.url, data=body, headers=headers,
                                                timeout=self.timeout) as resp:
                await resp.read()
                return str(resp.status)
        except (aiohttp.ClientError, TimeoutError):
            return "error"

    async def deliver(self, body: bytes) -> None:
        """Until the connector acknowledges `body` with a 2xx."""
        async with self.gate:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                status = await self._attempt(body)
                self.stats.answers[status] += 1
                if status.startswith("2"):
                    self.stats.acknowledged += 1
                    self.stats.most_attempts = max(self.stats.most_attempts, attempt)
                    return
                if status.startswith("4"):  # a refusal is final: the test sent it wrong
                    raise AssertionError(f"webhook refused with {status}: {body[:200]!r}")
                self.stats.retries += 1
                await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S)) - 1])
        raise AssertionError(f"webhook not acknowledged after {MAX_ATTEMPTS} attempts")

    async def send(self, charges: list[oracle.Charge]) -> None:
        """Every charge of `charges` delivered and acknowledged."""
        await asyncio.gather(*(self.deliver(body_of(ch)) for ch in charges))
