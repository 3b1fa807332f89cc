"""Metric names follow Prometheus conventions and label values stay bounded."""

from __future__ import annotations

import pytest

from connectors.metrics import REJECT_REASONS, ConnectorMetrics

pytestmark = pytest.mark.unit


def test_names_units_and_suffixes() -> None:
    metrics = ConnectorMetrics()
    families = list(metrics.registry.collect())
    assert families
    for family in families:
        assert family.name.startswith("segments_")
        if family.type == "counter":
            # prometheus_client strips `_total` from the family name; the sample has it.
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.type == "histogram":
            assert family.name.endswith("_seconds")


def test_event_type_labels_are_bounded() -> None:
    metrics = ConnectorMetrics()
    metrics.received("charge.refunded", "published")
    metrics.received("totally.made.up", "ignored")
    text = metrics.render().decode()
    assert 'event_type="charge.refunded"' in text
    assert 'event_type="other"' in text
    assert "totally.made.up" not in text


def test_every_reject_reason_is_exported_from_the_start() -> None:
    text = ConnectorMetrics().render().decode()
    for reason in REJECT_REASONS:
        assert f'segments_webhooks_rejected_total{{reason="{reason}"}} 0.0' in text


def test_two_apps_in_one_process_do_not_collide() -> None:
    ConnectorMetrics()
    ConnectorMetrics()


def test_backfill_progress_gauges_follow_the_cursor_and_go_with_the_connection() -> None:
    from connectors.backfill_state import BackfillProgress, Cursor

    metrics = ConnectorMetrics()
    running = BackfillProgress("conn_a", "acme", since=1000, until=2000, events=40,
                               rate_per_s=12.5, cursor=Cursor(lo=1250, hi=2000))
    metrics.backfill_progress(running)
    labels = {"connection_id": "conn_a"}
    value = metrics.registry.get_sample_value
    assert value("segments_backfill_events", labels) == 40
    assert value("segments_backfill_window_progress_ratio", labels) == 0.25
    assert value("segments_backfill_running", labels) == 1
    assert value("segments_backfill_rate_events_per_second", labels) == 12.5

    metrics.backfill_progress(running.with_(state="done", cursor=None, events=90))
    assert value("segments_backfill_window_progress_ratio", labels) == 1.0
    assert value("segments_backfill_running", labels) == 0
    assert value("segments_backfill_events", labels) == 90

    metrics.forget_connection("conn_a")
    assert "conn_a" not in metrics.render().decode()
