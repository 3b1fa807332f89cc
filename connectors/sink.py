"""Publishing raw events to Kafka, durably, before anyone is told "accepted".

The producer is idempotent with `acks=all`: `publish` returns only once every in-sync
replica has the event, so a webhook answered 2xx or a backfill cursor advanced is never
ahead of what Kafka holds. When Kafka cannot take the event, `SinkUnavailable` tells the
caller to answer 5xx (webhooks) or stop and resume later (backfill).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import orjson

from common import kafka
from common.settings import Settings
from common.topics import EVENTS_TOPIC
from connectors.contract import RawEvent
from connectors.errors import ConnectorError

#: The largest encoded envelope published: under the producer's `max_request_size` and
#: the broker's `message.max.bytes` (both about 1 MiB), with room for the key and the
#: record overhead. A bigger one would be refused by Kafka on every attempt.
MAX_RECORD_BYTES = 1_000_000
#: The producer's batch per partition (see `KafkaEventSink.start`).
BATCH_BYTES = 512 * 1024


class RecordTooLarge(ConnectorError, ValueError):
    """The event's envelope is bigger than a Kafka record may be: it never will fit."""


class UnencodableEvent(ConnectorError, ValueError):
    """The event cannot be written as JSON (orjson writes at most 255 levels of nesting,
    though it reads 1024): it never will be."""


def encode(event: RawEvent) -> bytes:
    """The record value of `event`, encoded once: the size check and the send use it."""
    try:
        value = event.to_bytes()
    except orjson.JSONEncodeError:
        raise UnencodableEvent("the event cannot be encoded as JSON") from None
    if len(value) > MAX_RECORD_BYTES:
        raise RecordTooLarge(f"envelope of {len(value)} bytes exceeds {MAX_RECORD_BYTES}")
    return value


class SinkUnavailable(ConnectorError, RuntimeError):
    """Kafka did not acknowledge the event in time; nothing may be acknowledged upstream."""

    retriable = True


class EventSink(Protocol):
    async def publish(self, event: RawEvent) -> None: ...


class KafkaEventSink:
    """The raw-event topic, through one idempotent `acks=all` producer."""

    def __init__(self, settings: Settings, *, timeout: float = 10.0) -> None:
        self.topic = settings.topic(EVENTS_TOPIC)
        self.settings = settings
        self.timeout = timeout
        self._producer: object | None = None

    async def start(self) -> None:
        producer = kafka.producer(
            self.settings,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            # aiokafka keeps one open batch per partition and makes a `send` that does
            # not fit wait until that batch is sent: at the default 16 KiB (5-10 Stripe
            # events) a burst of webhooks queued behind one broker round trip after
            # another. 512 KiB holds a few hundred, and stays under `max_request_size`.
            max_batch_size=BATCH_BYTES,
            request_timeout_ms=int(self.timeout * 1000),
            compression_type=None,
        )
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # type: ignore[attr-defined]

    async def publish(self, event: RawEvent) -> None:
        from aiokafka.errors import KafkaError

        producer = self._producer
        if producer is None:
            raise SinkUnavailable("the Kafka producer is not started")
        value = encode(event)
        try:
            future = await producer.send(  # type: ignore[attr-defined]
                self.topic, value, key=event.key()
            )
            await asyncio.wait_for(future, self.timeout)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise SinkUnavailable(f"Kafka did not acknowledge: {type(exc).__name__}") from exc

    async def __aenter__(self) -> KafkaEventSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
