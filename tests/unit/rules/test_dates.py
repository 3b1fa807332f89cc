"""Calendar days and relative windows as instants, in zones with DST."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.dates import add_months, calendar_bounds, day_start, load_zone, parse_date, window_end

pytestmark = pytest.mark.unit

HOUR, DAY = 3600, 86_400
BERLIN, NEW_YORK, SANTIAGO = (
    ZoneInfo("Europe/Berlin"),
    ZoneInfo("America/New_York"),
    ZoneInfo("America/Santiago"),
)


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text + "+00:00").timestamp())


@pytest.mark.parametrize(
    ("zone", "day", "start", "hours"),
    [
        (BERLIN, date(2026, 3, 29), "2026-03-28T23:00", 23),  # spring forward
        (BERLIN, date(2026, 10, 25), "2026-10-24T22:00", 25),  # fall back
        (NEW_YORK, date(2026, 3, 8), "2026-03-08T05:00", 23),
        (NEW_YORK, date(2026, 11, 1), "2026-11-01T04:00", 25),
        (ZoneInfo("UTC"), date(2026, 6, 1), "2026-06-01T00:00", 24),
        # Chile skips midnight: 2026-09-06 starts at 01:00 -03, the instant of the jump.
        (SANTIAGO, date(2026, 9, 6), "2026-09-06T04:00", 23),
    ],
)
def test_day_start_and_length(zone: ZoneInfo, day: date, start: str, hours: int) -> None:
    assert day_start(day, zone) == utc(start)
    assert day_start(day + timedelta(days=1), zone) - day_start(day, zone) == hours * HOUR


def test_a_day_starting_in_a_gap_starts_at_the_jump() -> None:
    start = day_start(date(2026, 9, 6), SANTIAGO)
    assert datetime.fromtimestamp(start, SANTIAGO).date() == date(2026, 9, 6)
    assert datetime.fromtimestamp(start - 1, SANTIAGO).date() == date(2026, 9, 5)


@given(st.dates(min_value=date(1971, 1, 1), max_value=date(2100, 12, 31)))
def test_day_start_is_the_first_instant_of_the_local_day(day: date) -> None:
    for zone in (BERLIN, NEW_YORK, SANTIAGO, ZoneInfo("Asia/Kolkata")):
        start = day_start(day, zone)
        assert datetime.fromtimestamp(start, zone).date() == day
        assert datetime.fromtimestamp(start - 1, zone).date() < day


def test_calendar_bounds_per_op() -> None:
    day, after = date(2026, 3, 29), date(2026, 3, 30)
    first, second = day_start(day, BERLIN), day_start(after, BERLIN)
    assert calendar_bounds("on", (day,), BERLIN) == (first, second)
    assert calendar_bounds("before", (day,), BERLIN) == (None, first)
    assert calendar_bounds("after", (day,), BERLIN) == (second, None)
    assert calendar_bounds("between", (day, after), BERLIN) == (
        first,
        day_start(date(2026, 3, 31), BERLIN),
    )
    assert calendar_bounds("on", (date.max,), BERLIN)[1] is None
    with pytest.raises(ValueError, match="not a calendar operator"):
        calendar_bounds("within_last", (day,), BERLIN)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2026-02-30", "2026-02-30 is not a date"),
        ("2024-02-29", None),
        ("2025-02-29", "2025-02-29 is not a date"),
        ("2026-3-1", '"2026-3-1" is not a date in YYYY-MM-DD form'),
        ("2026-03-01T00:00", "is not a date in YYYY-MM-DD form"),
        (" 2026-03-01", "is not a date in YYYY-MM-DD form"),
        ("1969-12-31", "1969-12-31 is before 1970-01-01"),
        (20260301, "must be a date"),
    ],
)
def test_parse_date(text: object, reason: str | None) -> None:
    if reason is None:
        assert parse_date(text) == date.fromisoformat(str(text))
        return
    with pytest.raises(ValueError, match=reason):
        parse_date(text)


@pytest.mark.parametrize("name", ["Mars/Base", "../etc/passwd", "/etc/localtime", "", "Europe"])
def test_unknown_zones_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        load_zone(name)


def test_known_zone() -> None:
    assert load_zone("Europe/Berlin") is BERLIN


def test_fixed_units_are_exact_durations() -> None:
    t = utc("2026-03-28T12:00")  # a DST switch inside the window changes nothing
    assert window_end(t, 2, "days", BERLIN) == t + 2 * DAY
    assert window_end(t, 3, "hours", BERLIN) == t + 3 * HOUR
    assert window_end(t, 1, "weeks", BERLIN) == t + 7 * DAY


def berlin(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp())


@pytest.mark.parametrize(
    ("start", "months", "end"),
    [
        ("2026-01-31T12:00", 1, "2026-02-28T12:00"),  # clamped to the month's end
        ("2028-01-31T12:00", 1, "2028-02-29T12:00"),  # leap year
        ("2026-01-31T12:00", 2, "2026-03-31T12:00"),  # CET to CEST: 59 days minus an hour
        ("2026-11-15T08:30", 3, "2027-02-15T08:30"),  # across a year
        ("2026-03-10T01:30", 12, "2027-03-10T01:30"),
    ],
)
def test_months_keep_the_local_wall_time(start: str, months: int, end: str) -> None:
    assert add_months(berlin(start), months, BERLIN) == berlin(end)


def test_a_month_across_spring_forward_is_an_hour_short() -> None:
    assert (
        add_months(berlin("2026-01-31T12:00"), 2, BERLIN)
        == berlin("2026-01-31T12:00") + 59 * DAY - HOUR
    )


def test_months_landing_in_a_dst_gap_move_past_it() -> None:
    # 2026-02-08 02:30 New York + 1 month = 2026-03-08 02:30, which does not exist.
    start = int(datetime(2026, 2, 8, 2, 30, tzinfo=NEW_YORK).timestamp())
    end = add_months(start, 1, NEW_YORK)
    assert datetime.fromtimestamp(end, NEW_YORK).replace(tzinfo=None) == datetime(2026, 3, 8, 3, 30)
