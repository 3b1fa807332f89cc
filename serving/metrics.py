"""Prometheus metrics of the serving process (read model + query API).

Own registry per process object (tests build several in one interpreter); names follow
Prometheus conventions: `segments_` prefix, base units, `_total` on counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ServingMetrics"]


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.changes_applied = Counter(
            "segments_read_model_changes_applied_total",
            "Membership changes applied to Redis, by cause and change",
            ["cause", "change"], registry=r,
        )
        self.rules_applied = Counter(
            "segments_read_model_rules_applied_total",
            "Rule documents applied to Redis (upsert or delete)",
            ["kind"], registry=r,
        )
        self.records_rejected = Counter(
            "segments_read_model_records_rejected_total",
            "Input records skipped because they break their topic's contract",
            ["topic"], registry=r,
        )
        self.fenced = Counter(
            "segments_read_model_fenced_batches_total",
            "Batches refused because a rebuild switched the served generation",
            registry=r,
        )
        self.lag = Gauge(
            "segments_read_model_lag_messages",
            "Messages on the input topic not yet applied to Redis (assigned partitions)",
            ["topic"], registry=r,
        )
        self.batch_seconds = Histogram(
            "segments_read_model_batch_duration_seconds",
            "Time to apply one batch to Redis and commit its offsets",
            registry=r,
        )
        self.requests = Counter(
            "segments_api_requests_total",
            "HTTP requests answered, by route and status",
            ["route", "status"], registry=r,
        )
        self.request_seconds = Histogram(
            "segments_api_request_duration_seconds",
            "HTTP request latency by route (server-sent event streams excluded)",
            ["route"], registry=r,
        )
        self.feed_subscribers = Gauge(
            "segments_api_feed_subscribers",
            "Open /events streams",
            registry=r,
        )
        self.feed_dropped = Counter(
            "segments_api_feed_dropped_subscribers_total",
            "/events streams closed because the client read too slowly",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
