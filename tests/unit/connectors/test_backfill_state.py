"""The backfill's cursor logic and request pacing: pure parts, no network, no broker."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.backfill import BackfillOptions
from connectors.backfill_state import (
    BackfillProgress,
    Cursor,
    advance,
    first_slice,
    next_slice,
    oldest_first,
    pending,
    readable_until,
    shrink_slice,
    tail_slice,
    type_groups,
)
from connectors.metrics import window_ratio
from connectors.stripe_client import RequestPacer, retry_after_seconds

pytestmark = pytest.mark.unit


def ev(i: int, created: int) -> dict[str, object]:
    return {"id": f"evt_{i}", "created": created}


def ids(events: list[dict[str, object]]) -> list[object]:
    return [e["id"] for e in events]


# -- order ------------------------------------------------------------------------------

def test_newest_first_listing_is_reversed() -> None:
    stripe_order = [ev(3, 30), ev(2, 20), ev(1, 20), ev(0, 10)]
    assert ids(oldest_first([stripe_order])) == ["evt_0", "evt_1", "evt_2", "evt_3"]


def test_oldest_first_listing_is_kept() -> None:
    emulator_order = [ev(0, 10), ev(1, 20), ev(2, 20), ev(3, 30)]
    assert ids(oldest_first([emulator_order])) == ["evt_0", "evt_1", "evt_2", "evt_3"]


def test_listings_of_type_groups_merge_by_time_deterministically() -> None:
    a = [ev(5, 50), ev(1, 10)]
    b = [ev(4, 40), ev(3, 10), ev(2, 5)]
    merged = ids(oldest_first([a, b]))
    assert merged == ["evt_2", "evt_1", "evt_3", "evt_4", "evt_5"]
    assert ids(oldest_first([a, b])) == merged


def test_type_groups_respect_stripes_limit_of_twenty() -> None:
    names = [f"t{i:02d}" for i in range(45)]
    groups = type_groups(reversed(names))
    assert [len(g) for g in groups] == [20, 20, 5]
    assert [n for g in groups for n in g] == names


# -- slices -----------------------------------------------------------------------------

def test_first_slice_is_the_whole_window_and_empty_windows_have_none() -> None:
    assert first_slice(100, 200) == Cursor(100, 200)
    assert first_slice(201, 200) is None


def test_next_slice_grows_when_sparse_shrinks_when_dense_and_stops_at_until() -> None:
    cur = Cursor(0, 99)
    assert next_slice(cur, 10_000, found=0, target=100) == Cursor(100, 499)  # x4 at most
    assert next_slice(cur, 10_000, found=400, target=100) == Cursor(100, 124)
    assert next_slice(cur, 150, found=10, target=100) == Cursor(100, 150)
    assert next_slice(Cursor(0, 150), 150, found=10, target=100) is None


def test_shrink_slice_uses_the_density_seen_and_at_least_halves() -> None:
    cur = Cursor(0, 999)
    # 200 events seen in the newest 100 s: 2/s -> 50 s holds a target of 100.
    assert shrink_slice(cur, seen=200, oldest_seen=900, target=100) == Cursor(0, 49)
    # Sparse overall but over the cap: still at most half.
    assert shrink_slice(cur, seen=101, oldest_seen=0, target=100) == Cursor(0, 499)
    assert shrink_slice(Cursor(5, 6), seen=500, oldest_seen=6, target=100) == Cursor(5, 5)


# -- resume -----------------------------------------------------------------------------

SLICE = [ev(i, 100 + i // 3) for i in range(10)]


def test_pending_skips_through_last_id_and_over_acked_after() -> None:
    cur = Cursor(100, 200, last_id="evt_3", last_created=101, acked_after=("evt_5", "evt_6"))
    todo, same, exact = pending(SLICE, cur)
    assert ids(todo) == ["evt_4", "evt_7", "evt_8", "evt_9"]
    assert (same, exact) == (cur, True)


def test_pending_without_the_last_event_falls_back_to_its_second() -> None:
    cur = Cursor(100, 200, last_id="evt_gone", last_created=102)
    todo, anchored, exact = pending(SLICE, cur)
    assert not exact
    assert ids(todo) == ["evt_6", "evt_7", "evt_8", "evt_9"]
    assert anchored.last_id == "evt_5"


def test_advance_moves_over_the_acked_run_and_keeps_acks_past_a_gap() -> None:
    cur = Cursor(100, 200, last_id="evt_1", last_created=100)
    after = advance(cur, SLICE, ["evt_2", "evt_3", "evt_5", "evt_6"])
    assert (after.last_id, after.last_created, after.acked_after) == ("evt_3", 101,
                                                                       ("evt_5", "evt_6"))
    filled = advance(after, SLICE, ["evt_4"])
    assert (filled.last_id, filled.acked_after) == ("evt_6", ())


def test_advance_with_nothing_acked_changes_nothing() -> None:
    cur = Cursor(100, 200, last_id="evt_1", last_created=100, acked_after=("evt_4",))
    assert advance(cur, SLICE, []) == cur


def test_progress_round_trips_through_json() -> None:
    progress = BackfillProgress(
        "conn_x", "acme", since=1, until=2, events=5, pages=2, customers=3,
        cursor=Cursor(1, 2, "evt_1", 1, ("evt_3",)), runs=2, error="SinkUnavailable: x")
    assert BackfillProgress.from_json(progress.to_json()) == progress
    assert "error" not in progress.with_(error=None).to_json()
    settling = progress.with_(target=9, phase="settling", settle_until=11, cursor=None)
    assert BackfillProgress.from_json(settling.to_json()) == settling
    assert settling.to_json()["phase_text"] == "waiting for Stripe's Events API to settle"


def test_progress_written_before_the_tail_existed_reads_as_ending_at_until() -> None:
    doc = BackfillProgress("conn_x", "acme", since=1, until=50, state="done").to_json()
    for name in ("target", "phase", "settle_until", "phase_text"):
        del doc[name]
    old = BackfillProgress.from_json(doc)
    assert (old.target, old.end, old.phase) == (0, 50, "done")


# -- the window's end: the settle delay, then the tail ------------------------------------

def test_only_settled_seconds_up_to_the_target_are_readable() -> None:
    assert readable_until(1000, now=1030.9, settle_s=60) == 970
    assert readable_until(1000, now=1100, settle_s=60) == 1000  # never past the target
    assert readable_until(1000, now=1000, settle_s=0) == 1000


def test_the_tail_is_read_from_after_until_once_settled() -> None:
    progress = BackfillProgress("conn_x", "acme", since=0, until=939, target=1000)
    assert tail_slice(progress, now=999, settle_s=60) is None  # 939 is all that settled
    assert tail_slice(progress, now=1030, settle_s=60) == Cursor(940, 970)
    assert tail_slice(progress, now=1060, settle_s=60) == Cursor(940, 1000)
    assert tail_slice(progress.with_(until=1000), now=5000, settle_s=60) is None


def test_window_progress_counts_the_tail_and_what_was_read_while_settling() -> None:
    running = BackfillProgress("conn_x", "acme", since=0, until=900, target=1000,
                               cursor=Cursor(450, 900))
    assert window_ratio(running) == 0.45
    assert window_ratio(running.with_(cursor=None, phase="settling")) == 0.901
    assert window_ratio(running.with_(state="done", cursor=None)) == 1.0


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 60), page=st.integers(1, 12), seed=st.integers(0, 2**32))
def test_any_sequence_of_partial_failures_publishes_each_event_once(
        n: int, page: int, seed: int) -> None:
    """Runs that each ack an arbitrary part of a page and then stop, resumed from the
    saved cursor, end with every event acknowledged exactly once."""
    rng = random.Random(seed)
    ordered = [ev(i, 1000 + i // 4) for i in range(n)]
    cursor = Cursor(1000, 2000)
    acked_total: list[str] = []
    for _run in range(10 * n + 10):
        todo, cursor, exact = pending(ordered, cursor)
        assert exact
        if not todo:
            break
        for start in range(0, len(todo), page):
            chunk = todo[start:start + page]
            acked = [str(e["id"]) for e in chunk if rng.random() < 0.7]
            acked_total += acked
            cursor = advance(cursor, ordered, acked)
            if len(acked) < len(chunk):
                break  # the run stops at a failed page; the next one resumes
    assert sorted(acked_total) == sorted(str(e["id"]) for e in ordered)
    assert len(acked_total) == len(set(acked_total))


# -- pacing -----------------------------------------------------------------------------

def test_pacer_spaces_requests_at_its_rate_after_the_burst() -> None:
    pacer = RequestPacer(20, burst=2, clock=lambda: 0.0)
    waits = [pacer.reserve(0.0) for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 0.05, 0.10, 0.15])


def test_pacer_refills_with_time_up_to_the_burst() -> None:
    pacer = RequestPacer(10, burst=3, clock=lambda: 0.0)
    for _ in range(3):
        pacer.reserve(0.0)
    assert pacer.reserve(100.0) == 0.0  # long idle: full again, but only 3 deep
    assert pacer.reserve(100.0) == 0.0
    assert pacer.reserve(100.0) == 0.0
    assert pacer.reserve(100.0) == pytest.approx(0.1)


def test_pacer_never_exceeds_its_rate_over_any_second() -> None:
    pacer = RequestPacer(20, burst=1, clock=lambda: 0.0)
    now, sent = 0.0, []
    for _ in range(200):
        now += pacer.reserve(now)
        sent.append(now)
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(sent, sent[20:], strict=False))


def test_hold_after_a_429_delays_everyone_then_paces_again() -> None:
    clock = [0.0]
    pacer = RequestPacer(10, burst=1, clock=lambda: clock[0])
    assert pacer.reserve(0.0) == 0.0
    pacer.hold(2.0)
    assert pacer.reserve(0.0) == pytest.approx(2.0)
    assert pacer.reserve(2.0) == pytest.approx(0.1)


@pytest.mark.parametrize(("header", "seconds"), [
    ({"Retry-After": "3"}, 3.0), ({"retry-after": "0.5"}, 0.5), ({}, 1.0),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 1.0), ({"Retry-After": "9999"}, 60.0),
])
def test_retry_after_parsing(header: dict[str, str], seconds: float) -> None:
    assert retry_after_seconds(header) == seconds


def test_options_rate_from_environment() -> None:
    assert BackfillOptions.from_env({"SEGMENTS_BACKFILL_RATE": "80"}).rate_per_s == 80
    assert BackfillOptions.from_env({}).rate_per_s == 20


def test_options_settle_and_overlap_from_environment() -> None:
    env = {"SEGMENTS_BACKFILL_SETTLE_S": "5", "SEGMENTS_BACKFILL_OVERLAP_S": "7"}
    assert (BackfillOptions.from_env(env).settle_s, BackfillOptions.from_env(env).overlap_s) \
        == (5, 7)
    assert (BackfillOptions.from_env({}).settle_s, BackfillOptions.from_env({}).overlap_s) \
        == (60, 60)
    with pytest.raises(ValueError, match="negative"):
        BackfillOptions(overlap_s=-1)
