"""`segments backfill`'s pure parts: the --since parser and the progress display."""

from __future__ import annotations

import io

import pytest

from connectors.backfill_state import BackfillProgress, Cursor
from segments.cli import build_parser
from segments.commands.backfill import ProgressView, parse_since

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "epoch"), [
    ("2026-11-01", 1793491200), ("2026-11-01T12:00:00Z", 1793534400),
    ("2026-11-01T13:00:00+01:00", 1793534400),
])
def test_since_accepts_iso_dates_in_utc_by_default(text: str, epoch: int) -> None:
    assert parse_since(text) == epoch


def test_the_command_is_registered_and_never_takes_a_key_argument() -> None:
    args = build_parser().parse_args(["backfill", "conn_x", "--restart"])
    assert args.connection_id == "conn_x"
    assert args.restart
    assert not hasattr(args, "api_key")


def _progress(**kw: object) -> BackfillProgress:
    base = BackfillProgress("conn_x", "acme", since=0, until=1000, events=1234, pages=13,
                            rate_per_s=456.7, cursor=Cursor(250, 1000))
    return base.with_(**kw)


def test_terminal_bar_redraws_one_line() -> None:
    out = io.StringIO()
    view = ProgressView(out, tty=True)
    view(_progress())
    view(_progress(state="done", cursor=None, events=2000))
    view.close()
    text = out.getvalue()
    assert text.count("\r") == 2
    assert text.endswith("\n")
    assert "1,234 events  13 pages  456.7 events/s  at 1970-01-01 00:04 (25% of window)" in text
    assert "done  2,000 events" in text


def test_plain_lines_when_not_a_terminal_at_most_every_few_seconds() -> None:
    out = io.StringIO()
    view = ProgressView(out, tty=False, every_s=3600)
    for _ in range(50):
        view(_progress())
    view(_progress(state="done"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "\r" not in out.getvalue()
