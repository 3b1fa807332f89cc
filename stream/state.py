"""Partitioned state with our own changelog, recovered exactly from committed records.

Why not Faust tables: under exactly-once, faust-streaming 0.15's table recovery decides
a changelog partition is fully read by heuristics ("Aborted tx until highwater") and our
kill -9 test saw it hand a restarted worker empty or partial tables, which then emitted
joins again or missed them. This store is deliberately simple and checkable:

- state lives in memory, one dict per partition of the source topic;
- values are kept decoded (a `ContactState`, a dict), so a fact costs no JSON round
  trip of its contact's whole history; they are encoded once per batch, when written;
- the writes made while processing a batch are held per partition (the last value of
  each key wins) and sent to a compacted changelog topic (same partition number) by the
  runtime, inside the batch's transaction (see `stream.runtime`), so state, output and
  input offsets commit together or not at all;
- a partition is recovered when it is assigned: a read_committed consumer reads its
  changelog partition from the beginning to the last stable offset. By then the runtime
  has initialised the partition's transactional producer, which aborts any transaction
  a crashed predecessor left open, so the last stable offset is final.
- a partition this worker gave up cleanly (everything it wrote committed) keeps its data
  and `resume`, the changelog offset after its last write. If it comes back, the
  recovery reads from there: every record before it is already in the data, and
  whatever another owner wrote meanwhile comes after it (it could only start writing
  after fencing this worker). Re-reading from an earlier offset would only apply again
  values already held, so `resume` may be low, never high.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, NamedTuple

import orjson

from common import kafka
from common.settings import Settings
from stream.errors import StreamError

log = logging.getLogger(__name__)


class Codec(NamedTuple):
    #: Returns bytes that own exactly their length: `take` hands them to the outbox,
    #: which sends them as they are (`Outbox.send_all`).
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]


JSON = Codec(lambda value: compact(orjson.dumps(value)), orjson.loads)
#: Bytes kept as they are (copied: orjson's buffers over-allocate, see `compact`).
RAW = Codec(lambda value: value, lambda raw: compact(raw))


def compact(raw: bytes) -> bytes:
    """A copy of `raw` that owns exactly its length.

    orjson >= 3.9 returns bytes whose allocation can be many KB larger than the
    document (orjson#483), and aiokafka's records are slices of a fetch buffer; a
    long-lived value keeps either alive, so what is kept is copied to its size."""
    return bytes(memoryview(raw))


#: A changelog read that makes no progress this long is an infrastructure fault.
RECOVERY_STALL_SECONDS = 60.0


class StateError(StreamError, RuntimeError):
    """State used against its rules (a bug)."""


class StateRecoveryError(StreamError, RuntimeError):
    """A changelog partition could not be read to its end; the worker must stop."""

    retriable = True


class PartitionView(MutableMapping[str, Any]):
    """One partition of a `State`, as a mapping; writes are recorded for the changelog."""

    def __init__(self, state: State, partition: int) -> None:
        self._state = state
        self._partition = partition
        self._data = state.data[partition]
        self._pending = state.pending.setdefault(partition, {})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)  # the hot path: no KeyError round trip

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value
        self._pending[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._pending[key] = None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class State:
    """Named state of one agent, partitioned like the agent's source topic."""

    def __init__(self, name: str, topic: str, settings: Settings, codec: Codec = JSON) -> None:
        self.name = name
        self.topic = topic
        self.settings = settings
        self.codec = codec
        self.data: dict[int, dict[str, Any]] = {}
        #: partition -> key -> value (None: deleted) written since the last `take`.
        self.pending: dict[int, dict[str, Any]] = {}
        #: partition -> changelog offset from which reading brings `data` up to date
        #: (set when recovered, and when the partition was given up cleanly).
        self.resume: dict[int, int] = {}
        self._views: dict[int, PartitionView] = {}

    def loaded(self, partition: int) -> bool:
        return partition in self.data

    def view(self, partition: int) -> PartitionView:
        """The partition as a mapping (one per partition, made anew when the partition's
        data or pending writes were replaced by a recovery or a `forget`)."""
        view = self._views.get(partition)
        if (view is None or view._data is not self.data.get(partition)
                or view._pending is not self.pending.get(partition)):
            view = self._views[partition] = PartitionView(self, partition)
        return view

    def forget(self, partitions: list[int] | None = None) -> None:
        """After a rebalance: anything may change elsewhere; recover again."""
        for partition in list(self.data) if partitions is None else partitions:
            self.data.pop(partition, None)
            self.pending.pop(partition, None)
            self.resume.pop(partition, None)

    def suspend(self, partition: int, written: int | None) -> None:
        """Partition given up cleanly: keep its data to resume from `written` (the
        offset after this worker's last durable write to its changelog, if any)."""
        if self.pending.get(partition):
            raise StateError(f"{self.name}[{partition}]: unwritten changes on suspending")
        if written is not None:
            self.resume[partition] = max(written, self.resume.get(partition, 0))

    def take(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        """The partition's changelog records for the writes since the last call."""
        pending = self.pending.get(partition)
        if not pending:
            return []
        encode = self.codec.encode
        records = [(key.encode(), None if value is None else encode(value))
                   for key, value in pending.items()]
        pending.clear()
        return records


async def recover_all(stores: list[State], partitions: list[int]) -> set[int]:
    """Load these partitions of these stores with ONE read_committed consumer; return
    the partitions whose data changed (read from scratch, or anything read on top of
    the data kept since they were suspended).

    One consumer for everything a worker was assigned: starting a consumer costs a few
    hundred milliseconds, and a worker that started one per store and partition took
    ten seconds to process its first event.
    """
    from aiokafka import TopicPartition

    changed: set[int] = set()
    if not stores or not partitions:
        return changed
    started = time.monotonic()
    owner = {TopicPartition(store.topic, partition): (store, partition)
             for store in stores for partition in partitions}
    consumer = kafka.consumer(
        stores[0].settings, isolation_level="read_committed",
        enable_auto_commit=False, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = list(owner)
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        firsts = await consumer.beginning_offsets(tps)
        data: dict[TopicPartition, dict[str, Any]] = {}
        from_start = []
        for tp, (store, partition) in owner.items():
            resume = store.resume.get(partition)
            if partition in store.data and resume is not None and firsts[tp] <= resume <= ends[tp]:
                data[tp] = store.data[partition]
                consumer.seek(tp, resume)
            else:
                data[tp] = {}
                changed.add(partition)
                from_start.append(tp)
        if from_start:  # one offset look-up for all of them, not one round trip each
            await consumer.seek_to_beginning(*from_start)
        read = await _read_to(consumer, owner, data, ends)
    finally:
        await consumer.stop()
    changed.update(partition for (_, partition), count in read.items() if count)
    for tp, (store, partition) in owner.items():
        store.data[partition] = data[tp]
        store.pending.pop(partition, None)
        store.resume[partition] = ends[tp]
    log.info("recovered %s, partitions %s (%s from scratch or changed): %d records read, "
             "%d keys in %.2fs", ", ".join(s.name for s in stores), sorted(partitions),
             sorted(changed), sum(read.values()), sum(len(d) for d in data.values()),
             time.monotonic() - started)
    return changed


async def _read_to(consumer: Any, owner: dict[Any, tuple[State, int]],
                   data: dict[Any, dict[str, Any]], ends: dict[Any, int]
                   ) -> dict[tuple[str, int], int]:
    """Apply every committed record up to `ends`; records read per (store, partition)."""
    tps = list(owner)
    read: dict[tuple[str, int], int] = {(store.name, partition): 0
                                        for store, partition in owner.values()}
    last_progress = time.monotonic()
    positions = {tp: await consumer.position(tp) for tp in tps}
    while any(positions[tp] < ends[tp] for tp in tps):
        # Batches small enough that decoding one leaves the event loop free for the
        # group's heartbeats within a fraction of the session timeout.
        batch = await consumer.getmany(timeout_ms=1000, max_records=2_000)
        for tp, records in batch.items():
            store, partition = owner[tp]
            decode, into = store.codec.decode, data[tp]
            for record in records:
                key = record.key.decode()
                if record.value is None:
                    into.pop(key, None)
                else:
                    into[key] = decode(record.value)
            read[store.name, partition] += len(records)
        moved = False
        for tp in tps:
            now_at = await consumer.position(tp)
            if now_at > positions[tp]:
                positions[tp], moved = now_at, True
        if moved:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > RECOVERY_STALL_SECONDS:
            stuck = [f"{tp.topic}[{tp.partition}]@{positions[tp]}/{ends[tp]}"
                     for tp in tps if positions[tp] < ends[tp]]
            raise StateRecoveryError(f"changelog read stuck: {', '.join(stuck)}")
    return read
