"""`POST /webhooks/stripe/{connection_id}`: the door Stripe knocks on.

Strict in this order, cheapest first, producing nothing on any refusal:
413 when the body is over 1 MiB (checked on Content-Length and while reading, so a
huge body is never buffered; a body must arrive within 10 s, `common.http`), 404 for an
unknown connection (the same answer as any unknown path, so ids of other accounts cannot
be probed), 400 for a missing or wrong signature, or a timestamp more than five minutes
old or ahead (verified over the raw bytes with the official library, against each of
the connection's secrets during a rotation), 400
for a body that is not a JSON object with an id and a type (or nested deeper than the
envelope can be written), 413 for an event whose envelope exceeds Kafka's record limit.
Event types the engine does not use get a 2xx and are dropped. Everything else is
published and answered 200 only after Kafka acknowledged it with acks=all; when Kafka
cannot take it the answer is 503 and Stripe delivers it again later.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson
import stripe
from aiohttp import web
from redis.exceptions import RedisError

from common.stripe_event_types import NEEDED_EVENT_TYPES
from connectors.contract import RawEvent
from connectors.metrics import ConnectorMetrics
from connectors.reconcile import SeenEvents
from connectors.sink import (
    EventSink,
    RecordTooLarge,
    SinkUnavailable,
    UnencodableEvent,
)
from connectors.store import ConnectionStore, ConnectionStoreUnavailable

MAX_BODY_BYTES = 1 << 20
#: Stripe's default: a signature older than this is a replay, not a retry.
TOLERANCE_SECONDS = 300
#: Where handlers leave the fields of the per-request summary log line.
LOG_FIELDS: web.RequestKey[dict[str, Any]] = web.RequestKey("log_fields", dict)


def _answer(status: int, **body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


NOT_FOUND = {"error": "not found"}


async def read_capped(request: web.Request, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The whole body, or None as soon as it is known to exceed `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    buf = bytearray()
    async for chunk in request.content.iter_any():
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)


def signed_at(header: str) -> int | None:
    """The `t=` of a `Stripe-Signature` header exactly as the library reads it (its
    first `t`, unstripped), or None: a different reading could check another time than
    the one the signature was verified with."""
    try:
        at, _ = stripe.WebhookSignature._get_timestamp_and_signatures(header, "v1")
    except (IndexError, ValueError):
        return None
    return int(at)


def check_signature(body: bytes, header: str | None, secrets: tuple[str, ...],
                    now: float | None = None) -> str | None:
    """None if `header` signs `body` recently with one of `secrets`, else the reason.

    The library checks the signature before the age; asking it twice (without, then
    with the tolerance) tells a forged request from a stale replay, for the metrics,
    without parsing its error messages. The library tolerates any timestamp in the
    future; one more than `TOLERANCE_SECONDS` ahead of `now` is refused here
    ("future_timestamp"): a signature made for later replays is no retry either.
    """
    if not header:
        return "missing_signature"
    matched = None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(body, header, secret, tolerance=None)
        except stripe.SignatureVerificationError:
            continue
        matched = secret
        break
    if matched is None:
        return "bad_signature"
    try:
        stripe.WebhookSignature.verify_header(body, header, matched, tolerance=TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError:
        return "stale_timestamp"
    at = signed_at(header)
    if at is None or at > (time.time() if now is None else now) + TOLERANCE_SECONDS:
        return "future_timestamp"
    return None


def parse_event(body: bytes) -> dict[str, Any] | None:
    """The Stripe event as sent, or None if it is not an event-shaped JSON object."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    if not isinstance(doc.get("id"), str) or not isinstance(doc.get("type"), str):
        return None
    return doc


class WebhookReceiver:
    """The request handler; `sink` decides whether an event is durably accepted."""

    def __init__(
        self,
        store: ConnectionStore,
        sink: EventSink,
        metrics: ConnectorMetrics,
        *,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        max_in_flight: int = 512,
        seen: SeenEvents | None = None,
    ) -> None:
        self.store = store
        #: Where published events are recorded for the gap repair (`connectors.reconcile`).
        self.seen = seen
        self.sink = sink
        self.metrics = metrics
        self.clock_ms = clock_ms
        #: Beyond this many requests in progress, answer 503 at once: Stripe retries,
        #: and the process keeps its throughput instead of every request timing out.
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    def _reject(self, request: web.Request, status: int, reason: str) -> web.Response:
        self.metrics.rejected(reason)
        request[LOG_FIELDS] = {"rejected": reason}
        if status == 404:
            return _answer(404, **NOT_FOUND)
        messages = {
            "too_large": "request body exceeds 1 MiB",
            "record_too_large": "event exceeds the event store's record limit (1,000,000 bytes)",
            "missing_signature": "missing Stripe-Signature header",
            "bad_signature": "signature verification failed",
            "stale_timestamp": "signature timestamp outside the tolerance",
            "future_timestamp": "signature timestamp outside the tolerance",
            "malformed_json": "body is not a Stripe event JSON object",
        }
        return _answer(status, error=messages.get(reason, reason))

    async def handle(self, request: web.Request) -> web.Response:
        if self.in_flight >= self.max_in_flight:
            self.metrics.webhooks_shed.inc()
            request[LOG_FIELDS] = {"shed": True}
            return _answer(503, error="overloaded; retry later")
        self.in_flight += 1
        try:
            return await self._handle(request)
        finally:
            self.in_flight -= 1

    async def _handle(self, request: web.Request) -> web.Response:
        received_ms = self.clock_ms()
        connection_id = request.match_info["connection_id"]
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return self._reject(request, 413, "too_large")
        try:
            found = await self.store.webhook_secrets(connection_id)
        except ConnectionStoreUnavailable:
            request[LOG_FIELDS] = {"connections": "loading"}
            return _answer(503, error="connections are loading; retry later")
        if found is None:
            return self._reject(request, 404, "unknown_connection")
        conn, secrets = found
        body = await read_capped(request)
        if body is None:
            return self._reject(request, 413, "too_large")
        try:
            reason = check_signature(body, request.headers.get("Stripe-Signature"), secrets)
        except UnicodeDecodeError:
            # The library verifies over the UTF-8 text; Stripe never sends anything else.
            return self._reject(request, 400, "malformed_json")
        if reason is not None:
            return self._reject(request, 400, reason)
        event = parse_event(body)
        if event is None:
            return self._reject(request, 400, "malformed_json")
        event_type, event_id = event["type"], event["id"]
        request[LOG_FIELDS] = {"event_type": event_type, "event_id": event_id}
        if event_type not in NEEDED_EVENT_TYPES:
            self.metrics.received(event_type, "ignored")
            return _answer(200, received=True, ignored=True)
        raw = RawEvent(conn.id, conn.account_id, "webhook", received_ms, event)
        started = time.perf_counter()
        try:
            await self.sink.publish(raw)
        # A signed body nested too deep, or just under the body cap, can never be
        # published: a 4xx, or Stripe would retry it for days (the sink encodes once).
        except UnencodableEvent:
            return self._reject(request, 400, "malformed_json")
        except RecordTooLarge:
            return self._reject(request, 413, "record_too_large")
        except SinkUnavailable:
            self.metrics.received(event_type, "unavailable")
            request[LOG_FIELDS]["kafka"] = "unavailable"
            return _answer(503, error="event store unavailable; retry later")
        self.metrics.publish_duration.observe(time.perf_counter() - started)
        self.metrics.received(event_type, "published")
        if self.seen is not None:
            # Not recorded: the reconciler publishes it once more; duplicates collapse
            # downstream by event and fact id.
            with contextlib.suppress(RedisError):
                await self.seen.add(conn.id, [event])
        return _answer(200, received=True)
