"""Prometheus metrics of a worker, in their own registry (one per app, so tests can
run several apps in one process). Names follow Prometheus conventions: `segments_`
prefix, base units, `_total` on counters."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from stream.attribution import JoinOutcome
from stream.contacts import Outcome


class StreamMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("segments_events_total", "Raw Stripe events classified",
                              ["type"], registry=r)
        self.facts = Counter("segments_facts_total", "Facts published", ["filter"], registry=r)
        self.duplicates = Counter("segments_duplicate_facts_total",
                                  "Announcements of an already published fact", registry=r)
        self.parked = Counter("segments_parked_facts_total",
                              "Facts waiting for their customer's email", registry=r)
        self.released = Counter("segments_released_facts_total",
                                "Parked facts released when the email became known", registry=r)
        self.no_email = Counter("segments_dropped_no_email_total",
                                "Occurrences dropped: no email can ever name the contact",
                                registry=r)
        self.email_lookup_failures = Counter(
            "segments_email_lookup_failures_total",
            "Customer email look-ups that failed (the facts stay parked)", registry=r)
        self.dead_letters = Counter("segments_dead_letters_total",
                                    "Records sent to the dead-letter topic", registry=r)
        self.invalid_rules = Counter(
            "segments_invalid_rules_total",
            "Rules on segments.rules that failed validation (dead-lettered; the version "
            "in force stays)", registry=r)
        self.contacts_deleted = Counter(
            "segments_contacts_deleted_total",
            "Contacts deleted because nothing is left of them (changelog tombstone)",
            registry=r)
        self.changes = Counter("segments_membership_changes_total", "Membership changes",
                               ["cause", "change"], registry=r)
        self.history_dropped = Counter(
            "segments_history_facts_dropped_total",
            "Facts dropped by the per-contact cap (a guard against abuse)", registry=r)
        self.history_forgotten = Counter(
            "segments_history_facts_forgotten_total",
            "Facts past the history horizon forgotten because no rule needs them", registry=r)
        self.facts_beyond_horizon = Counter(
            "segments_facts_beyond_horizon_total",
            "Facts that arrived already older than the history horizon (not held)",
            ["filter"], registry=r)
        self.refunds_waiting = Counter(
            "segments_refunds_waiting_total",
            "Refunds that arrived before their charge's payer and wait for it", registry=r)
        self.timer_lag = Histogram("segments_timer_lag_seconds",
                                   "How late a time-driven change was evaluated",
                                   buckets=(0.5, 1, 2, 5, 10, 30, 60, 300), registry=r)

        # Labelled children, looked up once: `labels()` costs more than `inc()`.
        self._children: dict[tuple[str, str], Any] = {}

    def _child(self, metric: Any, name: str, value: str) -> Any:
        child = self._children.get((name, value))
        if child is None:
            child = self._children[(name, value)] = metric.labels(value)
        return child

    def beyond_horizon(self, filter_id: str) -> None:
        self._child(self.facts_beyond_horizon, "beyond_horizon", filter_id).inc()

    def record_outcome(self, event_type: str, outcome: Outcome) -> None:
        self._child(self.events, "events", event_type).inc()
        for fact in outcome.facts:
            self._child(self.facts, "facts", fact.filter).inc()
        if outcome.duplicates:
            self.duplicates.inc(outcome.duplicates)
        if outcome.parked:
            self.parked.inc(outcome.parked)
        if outcome.released:
            self.released.inc(outcome.released)
        if outcome.dropped_no_email:
            self.no_email.inc(outcome.dropped_no_email)

    def record_join(self, outcome: JoinOutcome) -> None:
        for fact in outcome.facts:
            self._child(self.facts, "facts", fact.filter).inc()
        if outcome.duplicates:
            self.duplicates.inc(outcome.duplicates)
        if outcome.waiting:
            self.refunds_waiting.inc(outcome.waiting)
        if outcome.released:
            self.released.inc(outcome.released)
        if outcome.dropped_no_email:
            self.no_email.inc(outcome.dropped_no_email)
