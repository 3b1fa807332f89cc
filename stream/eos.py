"""Exactly-once output for Faust: send through the source partition's transaction.

faust-streaming (0.15) picks the transactional producer for a send by the partition of
the *destination* topic, and looks that topic up in the assignor's groups, so a send to a
topic the app does not consume raises KeyError and a send to a differently partitioned
topic joins an unrelated transaction. Kafka Streams' model is the correct one: all the
output of processing one input record, changelog writes included, goes through the
transaction of the task (source partition) that consumed it, and commits atomically with
that partition's offset. `install()` makes Faust do exactly that; a send made outside
stream iteration (a timer, a web handler) uses the plain idempotent producer.

Faust also commits from a background task, which could run while an agent is half way
through one event and commit that event's first sends with the previous offset: a
crash then replays the event and duplicates them. Agents therefore process each event
under `barrier(app)`, which the transactional commit also takes. The lock is released
at the end of the loop body and Faust acks the event synchronously right after, before
anything else can run, so a commit sees either none or all of an event's output, and
its offset with it.
"""

from __future__ import annotations

import asyncio
from typing import Any

_installed = False


def barrier(app: Any) -> asyncio.Lock:
    """The lock an agent holds while processing one event (see the module docstring)."""
    lock: asyncio.Lock | None = getattr(app, "_segments_barrier", None)
    if lock is None:
        lock = asyncio.Lock()
        app._segments_barrier = lock
    return lock


def source_transactional_id(app: Any) -> str | None:
    """The transactional id of the partition whose event is being processed, if any."""
    from faust.streams import current_event

    event = current_event()
    if event is None:
        return None
    tp = event.message.tp
    try:
        group = app.assignor.group_for_topic(tp.topic)
    except KeyError:
        return None
    return f"{app.conf.id}-{group}-{tp.partition}"


def install() -> None:
    """Patch faust's TransactionManager.send; idempotent, harmless without exactly-once."""
    global _installed
    if _installed:
        return
    from faust.transport.consumer import TransactionManager

    async def send(
        self: Any,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
        *,
        transactional_id: str | None = None,
    ) -> Any:
        tid = source_transactional_id(self.app)
        return await self.producer.send(
            topic, key, value, partition, timestamp, headers, transactional_id=tid
        )

    original_commit = TransactionManager.commit

    async def commit(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        async with barrier(self.app):
            result: bool = await original_commit(self, offsets, start_new_transaction)
            return result

    TransactionManager.send = send  # type: ignore[method-assign]
    TransactionManager.commit = commit  # type: ignore[method-assign]
    _installed = True
