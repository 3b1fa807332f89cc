"""The time spans several processes must agree on.

The connector's backfill reads `BACKFILL_DAYS` back (what Stripe's Events API keeps);
the worker remembers fact ids and keeps history at least `HISTORY_FLOOR_SECONDS`, the
backfill window plus Stripe's webhook retry period, so a late retry or the backfill's
overlap with live webhooks still lands in what is kept. `SEGMENTS_HISTORY_DAYS` raises
(or lowers) the worker's history floor; see `stream.membership` for what is kept past it.
"""

from __future__ import annotations

from collections.abc import Mapping

DAY_SECONDS = 24 * 3600
#: Stripe's Events API keeps 30 days; the backfill at connect time reads all of them.
BACKFILL_DAYS = 30
#: Stripe retries a failed webhook for up to 3 days in live mode.
STRIPE_RETRY_DAYS = 3
#: Fact ids are remembered, and history kept, at least this long.
HISTORY_FLOOR_SECONDS = (BACKFILL_DAYS + STRIPE_RETRY_DAYS) * DAY_SECONDS


def history_floor_seconds(env: Mapping[str, str]) -> int:
    """The worker's history floor: `SEGMENTS_HISTORY_DAYS` (whole days, at least 1),
    `HISTORY_FLOOR_SECONDS` when unset. Under 33 days, the oldest days of a backfill
    arrive beyond the horizon and are counted, not held."""
    raw = env.get("SEGMENTS_HISTORY_DAYS", "").strip()
    if not raw:
        return HISTORY_FLOOR_SECONDS
    try:
        days = int(raw)
    except ValueError:
        raise ValueError(f"SEGMENTS_HISTORY_DAYS must be a whole number of days, "
                         f"got {raw!r}") from None
    if days < 1:
        raise ValueError(f"SEGMENTS_HISTORY_DAYS must be at least 1, got {days}")
    return days * DAY_SECONDS
