"""The raw-event topic contract: what `connectors/` writes and `stream/` reads.

One Kafka message per Stripe event, the untouched event wrapped in a small envelope
that says where it came from. Webhook and backfill produce exactly the same shape, so
the stream cannot tell (and need not care) how an event arrived.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from connectors.errors import ConnectorError

ENVELOPE_VERSION = 1

Source = Literal["webhook", "backfill"]


class ContractError(ConnectorError, ValueError):
    """A message on the raw-event topic does not follow this contract."""


@dataclass(frozen=True, slots=True)
class RawEvent:
    connection_id: str
    account_id: str
    source: Source
    #: When the connector received (webhook) or fetched (backfill) it, epoch ms.
    received_at_ms: int
    #: The Stripe Event object exactly as Stripe sent it.
    event: dict[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.event.get("id", ""))

    @property
    def event_type(self) -> str:
        return str(self.event.get("type", ""))

    def key(self) -> bytes:
        """Kafka key: all events of one Stripe customer share a partition, in order."""
        return message_key(self.connection_id, self.event)

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "v": ENVELOPE_VERSION,
                "connection_id": self.connection_id,
                "account_id": self.account_id,
                "source": self.source,
                "received_at_ms": self.received_at_ms,
                "event": self.event,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> RawEvent:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ContractError(f"not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ContractError("envelope is not a JSON object")
        if doc.get("v") != ENVELOPE_VERSION:
            raise ContractError(f"unsupported envelope version {doc.get('v')!r}")
        event = doc.get("event")
        if not isinstance(event, dict):
            raise ContractError("envelope has no event object")
        source = doc.get("source")
        if source not in ("webhook", "backfill"):
            raise ContractError(f"unknown source {source!r}")
        connection_id, account_id = doc.get("connection_id"), doc.get("account_id")
        if not isinstance(connection_id, str) or not isinstance(account_id, str):
            raise ContractError("envelope lacks connection_id or account_id")
        received = doc.get("received_at_ms")
        if not isinstance(received, int):
            raise ContractError("envelope lacks received_at_ms")
        return cls(connection_id, account_id, source, received, event)


def customer_of(event: dict[str, Any]) -> str | None:
    """The Stripe customer id an event concerns, whether `customer` is expanded or not."""
    obj = event.get("data", {}).get("object", {}) if isinstance(event.get("data"), dict) else {}
    if not isinstance(obj, dict):
        return None
    if obj.get("object") == "customer":
        cid = obj.get("id")
        return cid if isinstance(cid, str) else None
    customer = obj.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    return customer if isinstance(customer, str) else None


def message_key(connection_id: str, event: dict[str, Any]) -> bytes:
    """Key by customer so one customer's events stay ordered.

    Guest payments have no customer; their charge, payment intent and invoice events
    all name the payment intent, so keying by it keeps siblings on one partition, where
    the stream can collapse them into one fact.
    """
    subject = customer_of(event)
    if subject is None:
        data = event.get("data")
        obj = data.get("object", {}) if isinstance(data, dict) else {}
        if not isinstance(obj, dict):
            obj = {}
        intent = obj.get("payment_intent")
        if isinstance(intent, dict):
            intent = intent.get("id")
        if obj.get("object") == "payment_intent":
            intent = obj.get("id")
        subject = intent if isinstance(intent, str) else str(obj.get("id", event.get("id", "")))
    return f"{connection_id}:{subject}".encode()
