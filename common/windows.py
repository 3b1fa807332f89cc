"""The time spans several processes must agree on.

The connector's backfill reads `BACKFILL_DAYS` back (what Stripe's Events API keeps);
the worker remembers fact ids and keeps history at least `HISTORY_FLOOR_SECONDS`, the
backfill window plus Stripe's webhook retry period, so a late retry or the backfill's
overlap with live webhooks still lands in what is kept.
"""

from __future__ import annotations

DAY_SECONDS = 24 * 3600
#: Stripe's Events API keeps 30 days; the backfill at connect time reads all of them.
BACKFILL_DAYS = 30
#: Stripe retries a failed webhook for up to 3 days in live mode.
STRIPE_RETRY_DAYS = 3
#: Fact ids are remembered, and history kept, at least this long.
HISTORY_FLOOR_SECONDS = (BACKFILL_DAYS + STRIPE_RETRY_DAYS) * DAY_SECONDS
