"""Exactly-once for Faust: all of one event's output commits with its offset, or none.

faust-streaming (0.15) gets three things wrong under `processing_guarantee=
"exactly_once"`, each of which our kill -9 test caught:

1. It picks the transactional producer for a send by the partition of the
   *destination* topic and looks that topic up in the assignor's groups, so a send to a
   topic the app does not consume raises KeyError, and a send to a differently
   partitioned topic joins an unrelated transaction.
2. Table changelog writes go through a buffer drained by a background task, outside the
   event's context, and the transactional commit does not flush that buffer: a
   changelog write can land in a later transaction than the event's output, or (with
   fix 1 alone) in none at all. After a crash the table then says "member" while the
   "joined" event was aborted, and the change is lost.
3. It commits from a background task, which can run while an agent is half way through
   an event, committing that event's first sends with the previous offset.
4. (Speed, not correctness.) It commits the partitions' transactions one after another;
   we commit them concurrently, since agents wait while a commit runs.

Kafka Streams' model is the correct one: everything produced while processing one input
record (output and changelog writes) goes through the transaction of the task (source
partition) that consumed it, and commits atomically with that partition's offset.
`install()` makes Faust do exactly that:

- `send` picks the transaction of the source partition of the current event; a send
  made outside stream iteration (a timer) uses the plain idempotent producer;
- table writes made while processing an event are held, and sent by `processing(app)`
  at the end of the event, still in the event's context (so in its transaction);
- agents process each event inside `processing(app)`, whose lock the transactional
  commit also takes. The lock is released at the end of the loop body and Faust acks
  the event synchronously right after, before anything else can run, so a commit sees
  either none or all of an event's output, and its offset with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

_installed = False
_DEBUG = bool(os.environ.get("SEGMENTS_EOS_DEBUG"))
log = logging.getLogger("segments.eos")


def barrier(app: Any) -> asyncio.Lock:
    """The lock an agent holds while processing one event (see the module docstring)."""
    lock: asyncio.Lock | None = getattr(app, "_segments_barrier", None)
    if lock is None:
        lock = asyncio.Lock()
        app._segments_barrier = lock
    return lock


def _held(app: Any) -> list[tuple[Any, int | None, Any, Any, Any, Any]]:
    held: list[tuple[Any, int | None, Any, Any, Any, Any]] | None = getattr(
        app, "_segments_held_changelog", None)
    if held is None:
        held = []
        app._segments_held_changelog = held
    return held


@asynccontextmanager
async def processing(app: Any) -> AsyncIterator[None]:
    """Process one event: under the commit barrier, with its table writes sent at the end."""
    async with barrier(app):
        try:
            yield
        finally:
            await flush_changelog(app)


async def flush_changelog(app: Any) -> None:
    """Send the table writes held for the current event, in its transaction."""
    held = _held(app)
    while held:
        table, partition, key, value, key_serializer, value_serializer = held.pop(0)
        await table.changelog_topic.send(
            key=key, value=value, partition=partition, key_serializer=key_serializer,
            value_serializer=value_serializer, callback=table._on_changelog_sent, force=True)


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
    """Patch Faust as the module docstring says; idempotent."""
    global _installed
    if _installed:
        return
    from faust.streams import current_event
    from faust.tables.base import Collection
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
        if _DEBUG:
            log.info("eos send tid=%s topic=%s partition=%s", tid, topic, partition)
        return await self.producer.send(
            topic, key, value, partition, timestamp, headers, transactional_id=tid
        )

    original_commit = TransactionManager.commit

    async def commit(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        async with barrier(self.app):
            if _DEBUG:
                log.info("eos commit %s", {f"{tp.topic}:{tp.partition}": o
                                           for tp, o in offsets.items()})
            result: bool = await original_commit(self, offsets, start_new_transaction)
            return result

    original_send_changelog = Collection.send_changelog

    def send_changelog(self: Any, partition: int | None, key: Any, value: Any,
                       key_serializer: Any = None, value_serializer: Any = None) -> Any:
        if not self.app.in_transaction or current_event() is None:
            return original_send_changelog(
                self, partition, key, value, key_serializer, value_serializer)
        _held(self.app).append((
            self, partition, key, value,
            key_serializer if key_serializer is not None else self.key_serializer,
            value_serializer if value_serializer is not None else self.value_serializer,
        ))
        # Faust's callers read the destination partition off the returned future.
        return SimpleNamespace(message=SimpleNamespace(partition=partition))

    from faust.transport.drivers.aiokafka import Producer

    async def commit_transactions(self: Any, tid_to_offset_map: Any, group_id: str,
                                  start_new_transaction: bool = True) -> None:
        """Commit every partition's transaction at once, not one after another: each
        takes several round trips, and agents wait behind the commit barrier."""

        async def one(transactional_id: str, offsets: Any) -> None:
            async with self._trn_locks[transactional_id]:
                producer = self._transaction_producers.get(transactional_id)
                if producer is None:
                    log.warning("commit invoked for unknown transaction %s", transactional_id)
                    return
                await producer.send_offsets_to_transaction(offsets, group_id)
                await producer.commit_transaction()
                if start_new_transaction:
                    await producer.begin_transaction()

        await asyncio.gather(*(one(tid, offsets) for tid, offsets in tid_to_offset_map.items()))

    Producer.commit_transactions = commit_transactions  # type: ignore[method-assign]
    TransactionManager.send = send  # type: ignore[method-assign]
    TransactionManager.commit = commit  # type: ignore[method-assign]
    Collection.send_changelog = send_changelog  # type: ignore[method-assign]
    _installed = True
