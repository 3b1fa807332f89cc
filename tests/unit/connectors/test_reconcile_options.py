"""`connectors.reconcile.ReconcileOptions.from_env`."""

from __future__ import annotations

import pytest

from connectors.reconcile import ReconcileOptions


def test_defaults_and_the_backfills_settle_delay_and_rate() -> None:
    assert ReconcileOptions.from_env({}) == ReconcileOptions(
        interval_s=300.0, settle_s=60, rate_per_s=20.0)
    opts = ReconcileOptions.from_env({"SEGMENTS_RECONCILE_INTERVAL_S": "30",
                                      "SEGMENTS_BACKFILL_SETTLE_S": "5",
                                      "SEGMENTS_BACKFILL_RATE": "50"})
    assert (opts.interval_s, opts.settle_s, opts.rate_per_s) == (30.0, 5, 50.0)


def test_a_non_positive_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="SEGMENTS_RECONCILE_INTERVAL_S"):
        ReconcileOptions.from_env({"SEGMENTS_RECONCILE_INTERVAL_S": "0"})
