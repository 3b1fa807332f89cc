"""The backfill's cursor and progress document: pure logic, no I/O.

How the backfill walks 30 days of events oldest first, resumably
------------------------------------------------------------------
Stripe lists events newest first, and `ending_before` paging needs an event id to
start from, which a 30-day window does not have. So the window `[since, until]` is cut
into **slices** of whole seconds. One slice is listed completely
(the library's auto-pagination; newest first), put oldest first, and published page by
page. Slices go oldest to newest; their width adapts so a slice holds about
`target` events (a bound on memory), starting with the whole window, which is all a
small account needs.

The **cursor** names the current slice `[lo, hi]` and the last event of it that Kafka
acknowledged (`last_id`, in the slice's publish order), plus `acked_after`: events past
`last_id` already acknowledged when a page published concurrently failed part-way. It is
saved after every acknowledged page. Listing a slice again gives the same events in the
same order (the slice is older than the settle delay, events never change), so a resumed
run skips up to `last_id` and over `acked_after` and produces nothing twice that was
acknowledged. Only if `last_id` itself is gone (Stripe dropped it after 30 days) does it
fall back to the events created in or after `last_created`'s second: at-least-once,
and the stream deduplicates by event and fact id.

The window's end, and the settle delay
--------------------------------------
The window must reach `target`: the instant the webhook endpoint exists (the
connection's creation) plus an overlap, since webhooks only bring what happens after
that. The Events API is eventually consistent, so an event is listed only once it is
`settle_s` old. The first phase ("history") reads `[since, until]` with `until =
min(target, start - settle_s)`; if that falls short of `target`, the backfill waits
("settling") until `target + settle_s`, then reads the tail `[until + 1, target]`
("tail") and only then reports done. `until` always names the end of what the slices
cover so far, so a run resumed in any phase knows what is left.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

State = Literal["running", "done", "failed"]
Phase = Literal["history", "settling", "tail", "done"]
#: What each phase means, for `GET /connections/{id}` and the CLI.
PHASE_TEXT: dict[str, str] = {
    "history": "reading the events of the last 30 days",
    "settling": "waiting for Stripe's Events API to settle",
    "tail": "reading the events up to the moment the webhook endpoint exists",
    "done": "done",
}
FilterMode = Literal["types", "unfiltered"]

#: Stripe's limit on the Events API's `types[]`.
TYPES_LIMIT = 20


@dataclass(frozen=True)
class Cursor:
    """Where the backfill stands: a slice of seconds and what of it Kafka acknowledged."""

    lo: int
    hi: int
    last_id: str | None = None
    last_created: int | None = None
    acked_after: tuple[str, ...] = ()

    @property
    def started(self) -> bool:
        """Some of this slice was acknowledged: its bounds must not change any more."""
        return self.last_id is not None or bool(self.acked_after)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["acked_after"] = list(self.acked_after)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Cursor:
        return cls(
            lo=int(doc["lo"]), hi=int(doc["hi"]),
            last_id=doc.get("last_id"),
            last_created=None if doc.get("last_created") is None else int(doc["last_created"]),
            acked_after=tuple(str(x) for x in doc.get("acked_after") or ()),
        )


@dataclass(frozen=True)
class BackfillProgress:
    """The JSON document at `{prefix}backfill:{connection_id}` (no secrets in it)."""

    connection_id: str
    account_id: str
    since: int
    #: The end of what the slices cover so far (see "The window's end" above).
    until: int
    #: Where the window ends: the endpoint's creation plus the overlap (0: `until`, as
    #: documents written before the tail was read have it).
    target: int = 0
    state: State = "running"
    phase: Phase = "history"
    #: While settling: the epoch second the tail becomes readable.
    settle_until: int | None = None
    events: int = 0
    pages: int = 0
    customers: int | None = None
    started_at: float = 0.0
    updated_at: float = 0.0
    rate_per_s: float = 0.0
    filter: FilterMode = "types"
    cursor: Cursor | None = None
    runs: int = 0
    error: str | None = None
    #: Events skipped on resume because they could not be matched to the cursor exactly.
    notes: tuple[str, ...] = field(default=())

    @property
    def done(self) -> bool:
        return self.state == "done"

    @property
    def end(self) -> int:
        """The last second the window covers once done."""
        return max(self.target, self.until)

    @property
    def phase_text(self) -> str:
        return PHASE_TEXT[self.phase]

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["phase_text"] = self.phase_text
        doc["cursor"] = None if self.cursor is None else self.cursor.to_json()
        doc["notes"] = list(self.notes)
        if self.error is None:
            del doc["error"]
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> BackfillProgress:
        cursor = doc.get("cursor")
        return cls(
            connection_id=str(doc["connection_id"]), account_id=str(doc["account_id"]),
            since=int(doc["since"]), until=int(doc["until"]),
            target=int(doc.get("target", 0)),
            state=doc.get("state", "running"),
            phase=doc.get("phase", "done" if doc.get("state") == "done" else "history"),
            settle_until=(None if doc.get("settle_until") is None
                          else int(doc["settle_until"])),
            events=int(doc.get("events", 0)), pages=int(doc.get("pages", 0)),
            customers=doc.get("customers"),
            started_at=float(doc.get("started_at", 0)),
            updated_at=float(doc.get("updated_at", 0)),
            rate_per_s=float(doc.get("rate_per_s", 0)),
            filter=doc.get("filter", "types"),
            cursor=None if cursor is None else Cursor.from_json(cursor),
            runs=int(doc.get("runs", 0)), error=doc.get("error"),
            notes=tuple(doc.get("notes") or ()),
        )

    def with_(self, **changes: Any) -> BackfillProgress:
        return replace(self, **changes)


def type_groups(types: Iterable[str], limit: int = TYPES_LIMIT) -> list[list[str]]:
    """The needed types in groups Stripe accepts in one `types[]` (sorted: stable runs)."""
    names = sorted(set(types))
    return [names[i:i + limit] for i in range(0, len(names), limit)]


def first_slice(since: int, until: int) -> Cursor | None:
    """The whole window: a small account is listed in one go."""
    return Cursor(lo=since, hi=until) if since <= until else None


def readable_until(target: int, now: float, settle_s: int) -> int:
    """The newest second that may be listed now: not past `target`, and `settle_s` old."""
    return min(target, int(now) - settle_s)


def tail_slice(progress: BackfillProgress, now: float, settle_s: int) -> Cursor | None:
    """The slice after `progress.until` that may be read at `now` (None: nothing yet)."""
    hi = readable_until(progress.end, now, settle_s)
    return Cursor(lo=progress.until + 1, hi=hi) if hi > progress.until else None


def next_slice(cursor: Cursor, until: int, found: int, target: int) -> Cursor | None:
    """The slice after `cursor`, sized from how many events `cursor`'s slice held."""
    lo = cursor.hi + 1
    if lo > until:
        return None
    width = cursor.hi - cursor.lo + 1
    grown = width * target // max(found, 1)
    width = max(1, min(grown, width * 4))
    return Cursor(lo=lo, hi=min(until, lo + width - 1))


def shrink_slice(cursor: Cursor, seen: int, oldest_seen: int, target: int) -> Cursor:
    """A narrower slice at the same start, after listing `cursor` found over `target`.

    The density of what was seen (the newest end of the slice) sizes the new slice;
    it is at most half the old one, so repeated overflows converge to one second.
    """
    width = cursor.hi - cursor.lo + 1
    span = max(1, cursor.hi - max(oldest_seen, cursor.lo) + 1)
    fit = math.floor(target * span / max(seen, 1))
    new_width = max(1, min(width // 2, fit))
    return Cursor(lo=cursor.lo, hi=cursor.lo + new_width - 1)


def _created(event: dict[str, Any]) -> int:
    value = event.get("created")
    return value if isinstance(value, int) else 0


def oldest_first(listings: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Merge listings (one per `types[]` group) into one list, oldest first.

    Stripe lists newest first; an emulator may list oldest first, which shows as a
    listing whose first event is older than its last, and is kept as it is. Ties in
    `created` keep each listing's own order, listings in the order given, so the
    result is the same every time the same slice is listed.
    """
    merged: list[dict[str, Any]] = []
    for listing in listings:
        ascending = len(listing) > 1 and _created(listing[0]) < _created(listing[-1])
        merged.extend(listing if ascending else reversed(listing))
    merged.sort(key=_created)  # stable
    return merged


def pending(ordered: Sequence[dict[str, Any]],
            cursor: Cursor) -> tuple[list[dict[str, Any]], Cursor, bool]:
    """What of a slice is still to publish, the cursor to advance from, and whether
    `last_id` was found exactly (if not, the cursor is re-anchored where publishing
    starts again: the first event created in or after `last_created`'s second)."""
    skip = set(cursor.acked_after)
    start, exact = 0, True
    if cursor.last_id is not None:
        ids = [e.get("id") for e in ordered]
        if cursor.last_id in ids:
            start = ids.index(cursor.last_id) + 1
        else:
            exact = False
            floor = cursor.last_created or 0
            start = next((i for i, e in enumerate(ordered) if _created(e) >= floor), len(ordered))
            anchor = ordered[start - 1] if start > 0 else None
            cursor = replace(
                cursor,
                last_id=None if anchor is None else str(anchor.get("id")),
                last_created=None if anchor is None else _created(anchor),
            )
    return [e for e in ordered[start:] if e.get("id") not in skip], cursor, exact


def advance(cursor: Cursor, ordered: Sequence[dict[str, Any]], acked: Iterable[str]) -> Cursor:
    """The cursor after Kafka acknowledged `acked` (ids of events of `ordered`).

    `last_id` moves over the longest run of acknowledged events; acknowledged ones past
    a gap (an event whose publish failed) are kept in `acked_after` until the gap fills.
    """
    done = set(cursor.acked_after) | set(acked)
    ids = [str(e.get("id")) for e in ordered]
    start = ids.index(cursor.last_id) + 1 if cursor.last_id in ids else 0
    end = start
    while end < len(ids) and ids[end] in done:
        end += 1
    last_id, last_created = cursor.last_id, cursor.last_created
    if end > start:
        last_id, last_created = ids[end - 1], _created(ordered[end - 1])
    after = tuple(i for i in ids[end:] if i in done)
    return replace(cursor, last_id=last_id, last_created=last_created, acked_after=after)


def rate(events: int, elapsed_s: float) -> float:
    return round(events / elapsed_s, 1) if elapsed_s > 0 else 0.0
