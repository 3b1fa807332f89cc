"""The demo's live terminal view, read from the running system, never from the feed.

`Monitor` asks the processes what an operator would ask them: member counts from the
query API (`GET /segments`, i.e. the Redis read model), recent joined/left events from
its live feed (`GET /events`, the web page's server-sent events), webhooks and backfill
progress from the connector's internal port (`GET /metrics`, `GET /connections/{id}`),
with the demo's bearer token (the session's header), what the worker
did from its Prometheus registry, and the worker group's consumer lag from Kafka
(`segments.lag`). `render_screen` / `render_line` turn one `Snapshot` into text.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from common.settings import Settings
from segments.lag import read_lag

__all__ = ["Monitor", "Snapshot", "render_line", "render_screen"]

BAR_WIDTH = 24


def metric_sum(families: Iterable[Any], sample: str, **labels: str) -> float:
    """Sum of the samples named `sample` whose labels include `labels`."""
    total = 0.0
    for family in families:
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def parse_metrics(text: str) -> list[Any]:
    return list(text_string_to_metric_families(text))


@dataclass
class Snapshot:
    elapsed: float = 0.0
    #: (segment id, rule name, member count, rule version) from GET /segments.
    segments: list[tuple[str, str, int, int]] = field(default_factory=list)
    recent: list[dict[str, Any]] = field(default_factory=list)
    webhooks: int = 0
    webhooks_rejected: int = 0
    redelivered: int = 0
    backfill: dict[str, Any] | None = None
    events: int = 0
    facts: int = 0
    duplicates: int = 0
    no_email: int = 0
    dead_letters: int = 0
    causes: dict[str, int] = field(default_factory=dict)
    joined: int = 0
    left: int = 0
    lag: int | None = None
    #: Per second over the last few seconds, and the highest seen so far.
    rates: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)

    @property
    def changes(self) -> int:
        return self.joined + self.left

    def filled(self) -> int:
        return sum(1 for _, _, count, _ in self.segments if count > 0)


class Monitor:
    def __init__(self, session: aiohttp.ClientSession, *, api_url: str, connector_url: str,
                 connection_id: str, account_id: str, worker_registry: Any,
                 kafka_settings: Settings, group: str, topics: list[str]) -> None:
        self.session = session
        self.api_url = api_url
        self.connector_url = connector_url
        self.connection_id = connection_id
        self.account_id = account_id
        self.worker_registry = worker_registry
        self.kafka_settings = kafka_settings
        self.group = group
        self.topics = topics
        self.started = time.monotonic()
        self.recent: deque[dict[str, Any]] = deque(maxlen=10)
        self.last_change = time.monotonic()
        self._history: deque[tuple[float, int, int, int]] = deque(maxlen=20)
        self._peaks: dict[str, float] = {}
        self._lag: int | None = None
        self._lag_at = 0.0
        self._follow: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._follow = asyncio.create_task(self._follow_feed(), name="demo-feed-view")

    async def stop(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow

    async def _follow_feed(self) -> None:
        """Recent changes from the API's server-sent events (what the web page shows)."""
        url = f"{self.api_url}/events?account_id={self.account_id}"  # session sends the token
        while True:
            try:
                async with self.session.get(url, timeout=aiohttp.ClientTimeout(
                        total=None, sock_read=60)) as resp:
                    async for raw in resp.content:
                        line = raw.decode(errors="replace").rstrip("\r\n")
                        if line.startswith("data: "):
                            self._on_event(orjson.loads(line[6:]))
            except (TimeoutError, ValueError, aiohttp.ClientError):  # JSON, line too long
                pass
            await asyncio.sleep(1.0)  # the stream closed: reconnect, as a browser does

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") in ("change", "rule"):
            self.recent.append(event)

    async def _json(self, url: str) -> Any:
        async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return await resp.json() if resp.status == 200 else None

    async def _text(self, url: str) -> str:
        async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return await resp.text() if resp.status == 200 else ""

    async def backfill(self) -> dict[str, Any] | None:
        """The connection's backfill progress, as `GET /connections/{id}` shows it."""
        doc = await self._json(f"{self.connector_url}/connections/{self.connection_id}")
        found = doc.get("backfill") if isinstance(doc, dict) else None
        return found if isinstance(found, dict) else None

    async def _read_lag(self) -> int | None:
        if time.monotonic() - self._lag_at >= 2.0:
            self._lag_at = time.monotonic()
            try:
                lags = await read_lag(self.kafka_settings, self.group, self.topics, 3.0)
                self._lag = sum(lag.lag for lag in lags)
            except Exception:  # the view shows "?" rather than stopping the demo
                self._lag = None
        return self._lag

    async def snapshot(self) -> Snapshot:
        snap = Snapshot(elapsed=time.monotonic() - self.started, recent=list(self.recent))
        results: tuple[Any, ...] = await asyncio.gather(
            self._json(f"{self.api_url}/accounts/{self.account_id}/segments"),
            self._text(f"{self.api_url}/metrics"),
            self._text(f"{self.connector_url}/metrics"),
            self._json(f"{self.connector_url}/connections/{self.connection_id}"),
            self._read_lag(),
            return_exceptions=True)
        segments, api_metrics, connector_metrics, connection, lag = results
        if isinstance(segments, dict):
            snap.segments = sorted(
                (s["segment_id"], (s.get("rule") or {}).get("name", ""), int(s["member_count"]),
                 int((s.get("rule") or {}).get("version", 0)))
                for s in segments.get("segments", []))
        if isinstance(api_metrics, str) and api_metrics:
            families = parse_metrics(api_metrics)
            applied = "segments_read_model_changes_applied_total"
            for cause in ("fact", "time", "rule"):
                snap.causes[cause] = int(metric_sum(families, applied, cause=cause))
            snap.joined = int(metric_sum(families, applied, change="joined"))
            snap.left = int(metric_sum(families, applied, change="left"))
        if isinstance(connector_metrics, str) and connector_metrics:
            families = parse_metrics(connector_metrics)
            snap.webhooks = int(metric_sum(families, "segments_webhooks_received_total",
                                           outcome="published"))
            snap.webhooks_rejected = int(metric_sum(families, "segments_webhooks_rejected_total"))
        if isinstance(connection, dict) and isinstance(connection.get("backfill"), dict):
            snap.backfill = connection["backfill"]
        worker = list(self.worker_registry.collect())
        snap.events = int(metric_sum(worker, "segments_events_total"))
        snap.facts = int(metric_sum(worker, "segments_facts_total"))
        snap.duplicates = int(metric_sum(worker, "segments_duplicate_facts_total"))
        snap.no_email = int(metric_sum(worker, "segments_dropped_no_email_total")
                            + metric_sum(worker, "segments_parked_facts_total")
                            - metric_sum(worker, "segments_released_facts_total"))
        snap.dead_letters = int(metric_sum(worker, "segments_dead_letters_total"))
        snap.lag = lag if isinstance(lag, int) else None
        self._rates(snap)
        return snap

    def _rates(self, snap: Snapshot) -> None:
        now = time.monotonic()
        if self._history and snap.changes != self._history[-1][3]:
            self.last_change = now
        self._history.append((now, snap.webhooks, snap.events, snap.changes))
        while len(self._history) > 2 and now - self._history[0][0] > 3.0:
            self._history.popleft()
        first = self._history[0]
        span = now - first[0]
        if span > 0.2:
            snap.rates = {"webhooks": (snap.webhooks - first[1]) / span,
                          "events": (snap.events - first[2]) / span,
                          "changes": (snap.changes - first[3]) / span}
            for key, value in snap.rates.items():
                self._peaks[key] = max(value, self._peaks.get(key, 0.0))
        snap.peaks = dict(self._peaks)

    def quiet_for(self) -> float:
        """Seconds since the read model last applied a change."""
        return time.monotonic() - self.last_change


def _n(value: int) -> str:
    return f"{value:,}"


def _rate(snap: Snapshot, key: str) -> str:
    value = snap.rates.get(key)
    return f"{value:6.0f}/s" if value is not None else "       "


def backfill_text(progress: dict[str, Any] | None) -> str:
    if progress is None:
        return "waiting to start"
    state = progress.get("state", "?")
    events = _n(int(progress.get("events", 0)))
    if state == "done":
        return f"done: {events} events of the last 30 days read back from localstripe"
    if state == "failed":
        return f"failed after {events} events: {progress.get('error', '?')}"
    return f"{state}: {events} events so far"


def _change_line(event: dict[str, Any], width: int) -> str:
    if event.get("type") == "rule":
        rule = event.get("rule") or {}
        return (f"  ~ rule     {event.get('segment_id', ''):17} now v{rule.get('version', '?')}: "
                f"{rule.get('name', 'deleted')} → recomputed")[:width]
    mark = "+" if event.get("change") == "joined" else "-"
    at = str(event.get("at", ""))[:16].replace("T", " ")
    return (f"  {mark} {event.get('change', ''):7} {event.get('segment_id', ''):17} "
            f"{event.get('email', ''):34} {event.get('cause', ''):5} at {at}")[:width]


def render_screen(snap: Snapshot, *, header: list[str], width: int = 100) -> str:
    causes = " · ".join(f"{k} {_n(v)}" for k, v in snap.causes.items() if v) or "none yet"
    lag = "?" if snap.lag is None else _n(snap.lag)
    lines = [
        *header,
        "",
        f"  in    webhooks {_n(snap.webhooks):>7} signed, accepted by the connector "
        f"({_n(snap.redelivered)} redeliveries, {_n(snap.webhooks_rejected)} refused) "
        f"{_rate(snap, 'webhooks')}",
        f"        backfill {backfill_text(snap.backfill)}",
        f"  work  worker   {_n(snap.events):>7} events → {_n(snap.facts)} facts "
        f"({_n(snap.duplicates)} duplicates, {_n(snap.no_email)} without email, "
        f"{_n(snap.dead_letters)} DLQ)  lag {lag}",
        f"  out   changes  {_n(snap.changes):>7} ({_n(snap.joined)} joined, {_n(snap.left)} "
        f"left; {causes}) {_rate(snap, 'changes')}",
        "",
        f"  {'segment':18} {'rule':48} {'members':>7}",
    ]
    top = max([count for _, _, count, _ in snap.segments] + [1])
    for segment, name, count, version in snap.segments:
        bar = "█" * max(1 if count else 0, round(BAR_WIDTH * count / top))
        label = f"{name} (v{version})" if version > 1 else name
        lines.append(f"  {segment:18} {label[:48]:48} {count:7,}  {bar}")
    lines += ["", "  recent changes (from the API's live feed, GET /events)"]
    lines += [_change_line(e, width) for e in reversed(snap.recent)] or ["  (none yet)"]
    return "\n".join(line[:width] for line in lines)


def render_line(snap: Snapshot) -> str:
    """One line for logs and pipes (no terminal)."""
    members = " ".join(f"{s}={c}" for s, _, c, _ in snap.segments)
    lag = "?" if snap.lag is None else str(snap.lag)
    state = (snap.backfill or {}).get("state", "-")
    return (f"[{snap.elapsed:5.1f}s] webhooks {snap.webhooks} · backfill {state} "
            f"{(snap.backfill or {}).get('events', 0)} · events {snap.events} · "
            f"changes {snap.changes} · lag {lag} · {members}")
