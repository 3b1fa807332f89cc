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
