"""What the runtime and the pipeline agree on: the outbox a batch fills, and the
interface the runtime drives (`Processor`).

Its own module so that the runtime's parts (`stream.task`, `stream.runtime`) and the
pipeline can each import it without importing one another.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

#: (topic, partition) -> the offset after the last record this worker wrote there and
#: knows durable (acknowledged, and committed under exactly-once).
Written = Mapping[tuple[str, int], int]


@dataclass(slots=True)
class Outbox:
    """What a task produced while processing: sent and committed by the runtime."""

    messages: list[tuple[str, bytes | None, bytes | None, int | None,
                         list[tuple[str, bytes]] | None]] = field(default_factory=list)

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None,
             headers: list[tuple[str, bytes]] | None = None) -> None:
        # An exact-size copy: orjson's result holds a 4 KiB buffer whatever its length
        # (orjson#483), and one batch can hold 100,000 messages (a rule recompute).
        if value is not None:
            value = bytes(memoryview(value))
        self.messages.append((topic, key, value, partition, headers))

    def send_all(self, topic: str, records: Iterable[tuple[bytes, bytes | None]],
                 partition: int) -> None:
        """`send` of many records to one partition: a state changelog's writes, whose
        values are already exact-size (`stream.state.Codec`), so not copied again."""
        self.messages.extend((topic, key, value, partition, None) for key, value in records)


class Processor(Protocol):
    """The pipeline the runtime drives (see `stream.pipeline`)."""

    topics: Sequence[str]

    async def assigned(self, partitions: list[int]) -> None:
        """Make the state of these partition numbers current (their producers are
        fenced): recover it, or bring state kept since `suspended` up to date."""

    def suspended(self, partitions: list[int], written: Written) -> None:
        """These partitions stopped cleanly: everything processed is durable and
        `written` says where this worker's last writes ended. Their state may be kept
        for a later `assigned` (which must still check it), but not served meanwhile."""

    def revoked(self, partitions: list[int]) -> None:
        """Forget these partitions: their state may hold writes that never committed,
        or another worker may change it from now on."""

    async def process(self, partition: int, topic: str, records: list[Any],
                      out: Outbox) -> None:
        """Handle a batch of one topic-partition's records, in order."""

    async def tick(self, partition: int, out: Outbox) -> None:
        """The clock moved on: time-driven work of this partition."""

    def state_writes(self, partition: int, out: Outbox) -> None:
        """Add the partition's pending state changelog writes to `out`."""
