"""The pipeline on 8 partitions split over 2 simulated workers, without a broker.

Each record goes to the partition its key hashes to (Kafka's default partitioner) and is
processed by the worker owning that partition (0-3 and 4-7: two `Pipeline`s with their
own state, as two `segments worker` processes would have); whatever a partition sends to
an internal topic is fed on to the partition of its key, until nothing is left. The
approach of `tests/unit/stream/test_attribution.py`, with two workers.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from common.settings import Settings
from connectors.contract import RawEvent
from stream.changes import MembershipChange, rule_key
from stream.facts import Fact
from stream.options import StreamOptions
from stream.outbox import Outbox
from stream.partitioning import partition_for
from stream.pipeline import Pipeline
from tests.clock import ManualClock

PARTITIONS = 8
WORKERS = 2
INTERNAL = ("stripe.facts", "segments.control", "segments.by-charge")


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class TwoWorkers:
    """Feed raw events and rules; read facts and membership changes back."""

    def __init__(self, clock: ManualClock | None = None, account: str = "acme") -> None:
        self.clock = clock or ManualClock()
        self.account = account
        self.settings = Settings(topic_prefix="t.", partitions=PARTITIONS)
        per = PARTITIONS // WORKERS
        self.workers = []
        for worker in range(WORKERS):
            pipeline = Pipeline(self.settings, StreamOptions(clock=self.clock))
            pipeline.adopt(list(range(worker * per, (worker + 1) * per)))
            self.workers.append(pipeline)
        self.owner = {partition: self.workers[partition // per]
                      for partition in range(PARTITIONS)}
        self.offset = 0
        self.out: list[tuple[str, bytes | None, bytes | None]] = []
        self.runner = asyncio.Runner()

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> TwoWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def feed(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None) -> None:
        queue = deque([(topic, key, value, partition)])
        while queue:
            topic, key, value, requested = queue.popleft()
            partition = (requested if requested is not None
                         else partition_for(key or b"", PARTITIONS))
            out = Outbox()
            self.offset += 1
            record = Record(self.settings.topic(topic), partition, self.offset, key, value)
            self.runner.run(self.owner[partition].process(partition, record.topic, [record], out))
            for t, k, v, part, _ in out.messages:
                name = t.removeprefix("t.")
                self.out.append((name, k, v))
                if name in INTERNAL:
                    queue.append((name, k, v, part))

    def event(self, event: dict[str, Any], connection: str = "conn1") -> int:
        """Feed a raw event keyed as the connector keys it; the partition it landed on."""
        raw = RawEvent(connection, self.account, "webhook", 0, event)
        partition = partition_for(raw.key(), PARTITIONS)
        self.feed("stripe.events", raw.key(), raw.to_bytes())
        return partition

    def rule(self, doc: dict[str, Any]) -> None:
        doc = {"account_id": self.account, "name": doc["id"], "timezone": "UTC",
               "version": 1, **doc}
        self.feed("segments.rules", rule_key(doc["account_id"], doc["id"]), orjson.dumps(doc))

    def facts(self, filter_id: str | None = None) -> list[Fact]:
        found = [Fact.from_bytes(v) for t, _, v in self.out if t == "stripe.facts" and v]
        return [f for f in found if filter_id is None or f.filter == filter_id]

    def dead_letters(self) -> list[bytes | None]:
        return [v for t, _, v in self.out if t == "stripe.events.dlq"]

    def changes(self) -> list[MembershipChange]:
        return [MembershipChange.from_bytes(v) for t, _, v in self.out
                if t == "segments.membership" and v]

    def members(self) -> set[tuple[str, str]]:
        """(segment, email) of the members now, from the change feed."""
        now: set[tuple[str, str]] = set()
        for c in self.changes():
            (now.add if c.change == "joined" else now.discard)((c.segment_id, c.email))
        return now
