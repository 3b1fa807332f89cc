"""`connectors.health`: the stored document and the interval setting."""

from __future__ import annotations

import pytest

from connectors.health import DEFAULT_INTERVAL_S, Health, interval_from_env


def test_health_round_trips_through_its_json() -> None:
    health = Health("webhook_disabled", "Stripe disabled it", 1700000000.5)
    assert Health.from_json(health.to_json()) == health
    assert health.to_json() == {"status": "webhook_disabled",
                                "status_reason": "Stripe disabled it",
                                "status_since": 1700000000.5}


def test_an_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="status"):
        Health.from_json({"status": "fine", "status_since": 1})


def test_interval_from_env() -> None:
    assert interval_from_env({}) == DEFAULT_INTERVAL_S == 300
    assert interval_from_env({"SEGMENTS_HEALTH_INTERVAL_S": "12.5"}) == 12.5
    with pytest.raises(ValueError, match="positive"):
        interval_from_env({"SEGMENTS_HEALTH_INTERVAL_S": "0"})
