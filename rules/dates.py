"""Calendar dates and relative windows, turned into integer instants.

Rules speak in calendar days of the account's time zone; facts carry epoch seconds.
Calendar conditions are converted once, at parse time, into half-open instant ranges
`[lo, hi)`, using zoneinfo so that a DST day is 23 or 25 hours long. Relative windows
are evaluated per fact through `window_end`, the instant a fact's window closes:

* `within_last N unit` holds at `now` iff `t <= now < window_end(t)`;
* `more_than_ago N unit` holds at `now` iff `window_end(t) <= now`.

So a fact leaves a "within_last 7 days" segment exactly 7 x 86400 s after `t`, and joins
a "more_than_ago 30 days" segment exactly 30 x 86400 s after `t`; the boundary second
belongs to `more_than_ago`, and for past facts the two are complements. A fact in the
future (a scheduled end date) satisfies neither until its instant arrives.

Hours, days and weeks are exact durations (3600, 86400, 604800 s). Months are calendar
months in the rule's zone: the same wall-clock time N months later, the day clamped to
the month's end (Jan 31 + 1 month = Feb 28 or 29).
"""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rules.vocabulary import UNIT_SECONDS

_DATE_TEXT: Final = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_ZONE_TEXT: Final = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")
EARLIEST_DATE: Final = date(1970, 1, 1)


def parse_date(value: object) -> date:
    """A calendar date written "YYYY-MM-DD"; raises ValueError with the reason."""
    if not isinstance(value, str):
        raise ValueError('must be a date such as "2026-03-29"')
    match = _DATE_TEXT.fullmatch(value)
    if match is None:
        raise ValueError(f'"{value}" is not a date in YYYY-MM-DD form')
    try:
        day = date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise ValueError(f"{value} is not a date") from None
    if day < EARLIEST_DATE:
        raise ValueError(f"{value} is before {EARLIEST_DATE.isoformat()}")
    return day


def load_zone(name: object) -> ZoneInfo:
    """An IANA zone by name ("Europe/Berlin"); raises ValueError for anything else."""
    if not isinstance(name, str):
        raise ValueError('must be an IANA time zone name such as "Europe/Berlin"')
    if not _ZONE_TEXT.fullmatch(name):
        raise ValueError(f'unknown time zone "{name}"')
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f'unknown time zone "{name}"') from None


def day_start(day: date, zone: ZoneInfo) -> int:
    """The first instant of a local calendar day.

    Usually local midnight. When midnight is skipped by a DST jump (America/Santiago,
    Asia/Beirut) the day starts at the jump; when midnight occurs twice, at the first.
    """
    naive = datetime.combine(day, time())
    first = int(naive.replace(tzinfo=zone, fold=0).timestamp())
    second = int(naive.replace(tzinfo=zone, fold=1).timestamp())
    if first <= second:
        return first
    # Midnight is in a gap: the previous day ends, and this one starts, at the jump,
    # somewhere in (second, first]. Parse-time only, so a bisection is fine.
    low, high = second, first
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).date() >= day:
            high = middle
        else:
            low = middle
    return high


def _next_day_start(day: date, zone: ZoneInfo) -> int | None:
    if day == date.max:
        return None
    return day_start(day + timedelta(days=1), zone)


def calendar_bounds(
    op: str, days: tuple[date, ...], zone: ZoneInfo
) -> tuple[int | None, int | None]:
    """The half-open instant range `[lo, hi)` a calendar date condition accepts.

    Days are inclusive: "between 2026-03-01 and 2026-03-31" takes every instant of both
    end days. None means unbounded.
    """
    if op == "on":
        return day_start(days[0], zone), _next_day_start(days[0], zone)
    if op == "before":
        return None, day_start(days[0], zone)
    if op == "after":
        return _next_day_start(days[0], zone), None
    if op == "between":
        return day_start(days[0], zone), _next_day_start(days[-1], zone)
    raise ValueError(f"not a calendar operator: {op}")


def window_end(instant: int, count: int, unit: str, zone: ZoneInfo) -> int:
    """The instant a relative window of `count` `unit`s opened at `instant` closes."""
    seconds = UNIT_SECONDS.get(unit)
    if seconds is not None:
        return instant + count * seconds
    return add_months(instant, count, zone)


@lru_cache(maxsize=65_536)
def add_months(instant: int, months: int, zone: ZoneInfo) -> int:
    """The same local wall-clock time `months` calendar months later, in `zone`.

    The day is clamped to the target month's length. A wall time that falls in a DST gap
    is read with the offset before the jump (so it lands just after the gap); a repeated
    one takes its first occurrence. Cached: months windows are re-evaluated per fact and
    facts are re-evaluated as the clock moves.
    """
    try:
        local = datetime.fromtimestamp(instant, zone)
        years, month_index = divmod(local.month - 1 + months, 12)
        year, month = local.year + years, month_index + 1
        day = min(local.day, calendar.monthrange(year, month)[1])
        shifted = local.replace(year=year, month=month, day=day, fold=0)
        return int(shifted.timestamp())
    except (ValueError, OverflowError, OSError):
        # Beyond the calendar (year 9999): later than any clock the engine will see.
        return instant + months * 31 * 86_400
