"""Consumer lag of a consumer group: how far its committed offsets trail the topics' ends.

The worker's own metrics say what it did; lag says what it has not done yet, and is
what to alert on when workers fall behind or stop. It is read from Kafka, not from the
worker: the group's committed offsets (admin API) against the end offsets of the
same partitions (read_committed, so an open transaction's records do not count), so
the number is right even when every worker of the group is down.

`ConsumerLagCollector` exposes it on a Prometheus registry, fetched at scrape time
(cached for `min_interval` seconds, so several scrapers cost one Kafka round trip):

    segments_consumer_lag_messages{group, topic, partition}
    segments_consumer_lag_up{group}        1 when the last fetch succeeded

Transactions leave commit markers: offsets that no record fills, so a caught-up group
of an exactly-once worker would show one message of lag per partition. Where the raw
difference is small (`exact_below`), the records in between are read (read_committed)
and only real ones count; a large lag is reported as the raw difference.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from common import kafka
from common.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["ConsumerLagCollector", "PartitionLag", "read_lag"]


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    #: The group's committed offset, or None when it never committed on this partition.
    committed: int | None
    end: int
    lag: int


async def read_lag(settings: Settings, group: str, topics: Sequence[str] = (),
                   timeout: float = 5.0, exact_below: int = 16) -> list[PartitionLag]:
    """Lag of `group` on every partition it committed on, and on every partition of
    `topics` (where it never committed, lag counts from the partition's beginning)."""
    from aiokafka import TopicPartition

    admin = kafka.admin(settings, request_timeout_ms=int(timeout * 1000))
    consumer = kafka.consumer(settings, group_id=None, enable_auto_commit=False,
                              isolation_level="read_committed",
                              request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(asyncio.gather(admin.start(), consumer.start()), timeout)
        offsets = await asyncio.wait_for(admin.list_consumer_group_offsets(group), timeout)
        committed = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        partitions = set(committed)
        if topics:
            described = await asyncio.wait_for(admin.describe_topics(list(topics)), timeout)
            for doc in described:
                if doc.get("error_code") == 0:  # else the topic does not exist (yet)
                    partitions.update(TopicPartition(doc["topic"], entry["partition"])
                                      for entry in doc.get("partitions", ()))
        if not partitions:
            return []
        ordered = sorted(partitions)
        ends = await asyncio.wait_for(consumer.end_offsets(ordered), timeout)
        missing = [tp for tp in ordered if tp not in committed]
        starts = (await asyncio.wait_for(consumer.beginning_offsets(missing), timeout)
                  if missing else {})
        bases = {tp: committed.get(tp, starts.get(tp, 0)) for tp in ordered}
        raw = {tp: max(0, ends[tp] - bases[tp]) for tp in ordered}
        small = {tp: bases[tp] for tp in ordered if 0 < raw[tp] <= exact_below}
        if small:
            raw.update(await _records_between(consumer, small, ends, min(timeout, 1.0)))
        return [PartitionLag(tp.topic, tp.partition, committed.get(tp), ends[tp], raw[tp])
                for tp in ordered]
    finally:
        await asyncio.gather(admin.close(), consumer.stop(), return_exceptions=True)


async def _records_between(consumer: Any, starts: dict[Any, int], ends: dict[Any, int],
                           timeout: float) -> dict[Any, int]:
    """Records (not markers, not aborted) from each start to its end; partitions that do
    not finish reading within `timeout` are left out (their raw lag stands)."""
    consumer.assign(list(starts))
    for tp, offset in starts.items():
        consumer.seek(tp, offset)
    counts = dict.fromkeys(starts, 0)
    pending = set(starts)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        batch = await consumer.getmany(*pending, timeout_ms=100)
        for tp, records in batch.items():
            counts[tp] += sum(1 for r in records if r.offset < ends[tp])
        pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    return {tp: n for tp, n in counts.items() if tp not in pending}


def _run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code: in this thread when no loop runs
    here (prometheus_client's HTTP thread), else in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


class ConsumerLagCollector(Collector):
    """A Prometheus collector of one group's lag; safe to call from the metrics thread."""

    def __init__(self, settings: Settings, group: str, topics: Iterable[str] = (), *,
                 timeout: float = 5.0, min_interval: float = 5.0) -> None:
        self.settings = settings
        self.group = group
        self.topics = tuple(topics)
        self.timeout = timeout
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._cached: tuple[float, list[PartitionLag] | None] = (0.0, None)

    def _fetch(self) -> list[PartitionLag] | None:
        with self._lock:
            stamp, value = self._cached
            if stamp and time.monotonic() - stamp < self.min_interval:
                return value  # a failure is cached too: Kafka down costs one timeout
            try:
                value = _run(lambda: read_lag(self.settings, self.group,
                                              self.topics, self.timeout))
            except Exception as exc:  # a scrape must answer even when Kafka does not
                log.warning("consumer lag of %s unavailable: %s", self.group,
                            type(exc).__name__)
                value = None
            self._cached = (time.monotonic(), value)
            return value

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lags = self._fetch()
        up = GaugeMetricFamily("segments_consumer_lag_up",
                               "1 when the last consumer lag fetch from Kafka succeeded",
                               labels=["group"])
        up.add_metric([self.group], 0 if lags is None else 1)
        yield up
        family = GaugeMetricFamily(
            "segments_consumer_lag_messages",
            "Messages between the group's committed offset and the partition's end",
            labels=["group", "topic", "partition"])
        for lag in lags or ():
            family.add_metric([self.group, lag.topic, str(lag.partition)], lag.lag)
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """Names only: registering must not reach for Kafka."""
        yield GaugeMetricFamily("segments_consumer_lag_up", "", labels=["group"])
        yield GaugeMetricFamily("segments_consumer_lag_messages", "",
                                labels=["group", "topic", "partition"])
