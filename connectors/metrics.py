"""Prometheus metrics of the connector, in a registry owned by one app.

A per-app `CollectorRegistry` (not the global default) lets tests and the benchmark
run several apps in one process without "duplicated timeseries" errors. Names follow
Prometheus conventions: `segments_` prefix, base units (seconds), `_total` counters.
Label values are bounded: event types are either one of NEEDED_EVENT_TYPES or "other",
and rejection reasons come from a fixed list.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from connectors.event_types import NEEDED_EVENT_TYPES

__all__ = ["CONTENT_TYPE_LATEST", "ConnectorMetrics"]

REJECT_REASONS = (
    "too_large",
    "unknown_connection",
    "missing_signature",
    "bad_signature",
    "stale_timestamp",
    "malformed_json",
)


class ConnectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.webhooks_received = Counter(
            "segments_webhooks_received_total",
            "Webhooks with a valid signature, by Stripe event type and outcome",
            ["event_type", "outcome"],
            registry=self.registry,
        )
        self.webhooks_rejected = Counter(
            "segments_webhooks_rejected_total",
            "Webhooks refused with a 4xx, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.webhooks_shed = Counter(
            "segments_webhooks_shed_total",
            "Webhooks answered 503 at once because too many were in progress",
            registry=self.registry,
        )
        self.publish_duration = Histogram(
            "segments_webhook_publish_duration_seconds",
            "Time from handing an event to Kafka until acks=all acknowledged it",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.http_requests = Counter(
            "segments_connector_http_requests_total",
            "HTTP requests answered by the connector, by route and status code",
            ["route", "code"],
            registry=self.registry,
        )
        self.http_server_errors = Counter(
            "segments_connector_http_server_errors_total",
            "HTTP requests answered with a 5xx, by route",
            ["route"],
            registry=self.registry,
        )
        self.producer_up = Gauge(
            "segments_connector_kafka_producer_up",
            "1 while the Kafka producer is connected, else 0",
            registry=self.registry,
        )
        self.connections_created = Counter(
            "segments_connections_created_total",
            "Stripe accounts connected",
            registry=self.registry,
        )
        # Zero-valued series exist from the start, so rates and alerts work at once.
        for reason in REJECT_REASONS:
            self.webhooks_rejected.labels(reason)

    @staticmethod
    def type_label(event_type: str) -> str:
        return event_type if event_type in NEEDED_EVENT_TYPES else "other"

    def received(self, event_type: str, outcome: str) -> None:
        self.webhooks_received.labels(self.type_label(event_type), outcome).inc()

    def rejected(self, reason: str) -> None:
        self.webhooks_rejected.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
