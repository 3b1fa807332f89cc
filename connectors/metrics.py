"""Prometheus metrics of the connector, in a registry owned by one app.

A per-app `CollectorRegistry` (not the global default) lets tests and the benchmark
run several apps in one process without "duplicated timeseries" errors. Names follow
Prometheus conventions: `segments_` prefix, base units (seconds), `_total` counters.
Label values are bounded: event types are either one of NEEDED_EVENT_TYPES or "other",
rejection reasons come from a fixed list, and the backfill gauges carry the connection
id (one series per connected account, removed when it is disconnected).
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from common.stripe_event_types import NEEDED_EVENT_TYPES
from connectors.backfill_state import BackfillProgress

__all__ = ["CONNECTION_STATUSES", "CONTENT_TYPE_LATEST", "ConnectorMetrics", "window_ratio"]

#: What `GET /connections/{id}` may report as `status` (`connectors.health`).
CONNECTION_STATUSES = ("active", "key_revoked", "permission_missing", "webhook_disabled",
                       "backfill_failed")


def window_ratio(progress: BackfillProgress) -> float:
    """How much of the window `[since, end]` lies behind the cursor (1.0 once done);
    while settling, what the history phase read."""
    if progress.state == "done":
        return 1.0
    span = progress.end - progress.since
    if span <= 0:
        return 0.0
    if progress.cursor is None:
        read = progress.until + 1 if progress.phase == "settling" else progress.since
    else:
        read = progress.cursor.lo
    return min(1.0, max(0.0, (read - progress.since) / span))


REJECT_REASONS = (
    "too_large",
    "unknown_connection",
    "missing_signature",
    "bad_signature",
    "stale_timestamp",
    "future_timestamp",
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
        # Backfill progress, per connection (bounded by the number of connections; a
        # deleted connection's series are removed).
        self.backfill_events = Gauge(
            "segments_backfill_events",
            "Events the connection's backfill has published so far (all runs)",
            ["connection_id"],
            registry=self.registry,
        )
        self.backfill_window_ratio = Gauge(
            "segments_backfill_window_progress_ratio",
            "Share of the backfill's 30-day window already published, 0 to 1",
            ["connection_id"],
            registry=self.registry,
        )
        self.backfill_running = Gauge(
            "segments_backfill_running",
            "1 while the connection's backfill runs in this process, else 0",
            ["connection_id"],
            registry=self.registry,
        )
        self.backfill_rate = Gauge(
            "segments_backfill_rate_events_per_second",
            "Events per second of the current (or last) backfill run",
            ["connection_id"],
            registry=self.registry,
        )
        self.backfill_failed = Counter(
            "segments_backfill_failures_total",
            "Backfill runs that stopped on an error (they resume from the saved cursor)",
            registry=self.registry,
        )
        self.connections = Gauge(
            "segments_connections",
            "Connections of this deployment, by health status (connectors.health)",
            ["status"],
            registry=self.registry,
        )
        # Zero-valued series exist from the start, so rates and alerts work at once.
        for reason in REJECT_REASONS:
            self.webhooks_rejected.labels(reason)
        for status in CONNECTION_STATUSES:
            self.connections.labels(status)

    @staticmethod
    def type_label(event_type: str) -> str:
        return event_type if event_type in NEEDED_EVENT_TYPES else "other"

    def received(self, event_type: str, outcome: str) -> None:
        self.webhooks_received.labels(self.type_label(event_type), outcome).inc()

    def rejected(self, reason: str) -> None:
        self.webhooks_rejected.labels(reason).inc()

    def backfill_progress(self, progress: BackfillProgress) -> None:
        """Update the backfill gauges (called on every progress save of a backfill)."""
        cid = progress.connection_id
        self.backfill_events.labels(cid).set(progress.events)
        self.backfill_rate.labels(cid).set(progress.rate_per_s)
        self.backfill_running.labels(cid).set(1 if progress.state == "running" else 0)
        self.backfill_window_ratio.labels(cid).set(window_ratio(progress))

    def forget_connection(self, connection_id: str) -> None:
        for gauge in (self.backfill_events, self.backfill_window_ratio,
                      self.backfill_running, self.backfill_rate):
            with contextlib.suppress(KeyError):
                gauge.remove(connection_id)

    def render(self) -> bytes:
        return generate_latest(self.registry)
