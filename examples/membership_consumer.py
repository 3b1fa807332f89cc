"""Follow segment membership exactly: no gap, no duplicate, across crashes.

A standalone example for teams downstream of stripe-segments (it needs only Python 3.11
and aiokafka, nothing of this repository); `docs/consumers.md` explains each step.

    python3 membership_consumer.py --bootstrap localhost:9092 --state picture.json

It keeps a picture of every segment's members, account -> segment -> email -> state,
and acts on every change after that picture (here: prints one line per change). The
picture and the offsets it stands for are written together to one JSON file, replaced
atomically, so the process can be killed at any instant and resumed: it continues from
the last picture it wrote, so nothing is skipped and nothing is applied twice.

Bootstrap (when there is no state file yet), a consistent cut of both topics:
  1. note T1, the last stable offsets of `segments.membership` (the end offsets a
     read_committed consumer sees: every transaction below them is decided);
  2. read the compacted `segments.members` to its end: snapshot S;
  3. note T2, the high watermarks of `segments.membership` (the end offsets a
     read_uncommitted consumer sees);
  4. read `segments.membership` from T1 to T2 (read_committed); for every member changed
     there, its last change in that window replaces S's entry (a change carries the
     member's full state).
The picture is then exactly the state at T2. A change below T1 was decided before S was
read, so S shows it (or a later state). S shows nothing written at or after T2: a
change's members record is written in the same transaction as its membership event, so
any transaction S saw had committed before T2 was noted. So a member without a change
between T1 and T2 has the same state in S as at T2, and one with changes there is set
by its last. Tail from T2: every change read is new.

Consumers must read with isolation_level="read_committed": with the default
read_uncommitted, the records of a transaction the worker aborted (after a crash, say)
are seen as well as their committed retry: duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

SEPARATOR = "\x1f"  # parts of a record key (docs/consumers.md, "Keys")
KNOWN_VERSION = 1
Picture = dict[str, dict[str, dict[str, dict[str, Any]]]]


class UnknownVersion(RuntimeError):
    """A record of a schema version this consumer was not written for."""


def decode(value: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(value)
    version = doc.get("v", 1)  # records written before versions existed: version 1
    if version != KNOWN_VERSION:
        raise UnknownVersion(f"record schema version {version!r}; this consumer reads 1")
    return doc


def put(picture: Picture, account: str, segment: str, email: str,
        state: dict[str, Any] | None) -> None:
    """Set one member's state (None: not a member)."""
    if state is not None:
        picture.setdefault(account, {}).setdefault(segment, {})[email] = state
        return
    segments = picture.get(account, {})
    members = segments.get(segment, {})
    members.pop(email, None)
    if not members:
        segments.pop(segment, None)
    if not segments:
        picture.pop(account, None)


def state_after(change: dict[str, Any]) -> dict[str, Any] | None:
    """The member's state after a `segments.membership` change: the same fields as its
    `segments.members` value, or None after a leave."""
    if change["change"] == "left":
        return None
    return {"since": change["at"], "fact_id": change["fact_id"],
            "rule_version": change["rule_version"]}


def save(path: Path, doc: dict[str, Any]) -> None:
    """Replace `path` with `doc` atomically: a crash leaves the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(doc, out, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    numbers = consumer.partitions_for_topic(topic)
    if not numbers:
        await consumer._client.force_metadata_update()
        numbers = consumer.partitions_for_topic(topic)
    if not numbers:
        raise SystemExit(f"topic {topic} does not exist")
    return [TopicPartition(topic, partition) for partition in sorted(numbers)]


async def read_range(consumer: AIOKafkaConsumer, start: dict[TopicPartition, int],
                     end: dict[TopicPartition, int]) -> Any:
    """Every committed record of the given partitions from `start` up to `end`, in
    order per partition (compacted topics have gaps: positions are compared)."""
    wanted = [tp for tp in start if start[tp] < end[tp]]
    consumer.assign(wanted)
    for tp in wanted:
        consumer.seek(tp, start[tp])
    while True:
        pending = [tp for tp in wanted if await consumer.position(tp) < end[tp]]
        if not pending:
            return
        batch = await consumer.getmany(*pending, timeout_ms=1000)
        for tp, records in batch.items():
            for record in records:
                if record.offset < end[tp]:
                    yield record


async def high_watermarks(bootstrap_servers: str,
                          tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """End offsets including open transactions (a read_committed consumer's end
    offsets stop at the first open one)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers,
                                isolation_level="read_uncommitted")
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def bootstrap(consumer: AIOKafkaConsumer, bootstrap_servers: str, members_topic: str,
                    membership: list[TopicPartition]) -> dict[str, Any]:
    t1 = await consumer.end_offsets(membership)  # read_committed: last stable offsets
    picture: Picture = {}
    snapshot = await partitions(consumer, members_topic)
    beginning = await consumer.beginning_offsets(snapshot)
    async for record in read_range(consumer, beginning, await consumer.end_offsets(snapshot)):
        account, segment, email = record.key.decode().split(SEPARATOR)
        state = None
        if record.value is not None:
            doc = decode(record.value)
            state = {k: doc[k] for k in ("since", "fact_id", "rule_version")}
        put(picture, account, segment, email, state)
    t2 = await high_watermarks(bootstrap_servers, membership)
    async for record in read_range(consumer, t1, t2):
        change = decode(record.value)
        put(picture, change["account_id"], change["segment_id"], change["email"],
            state_after(change))
    cut = {str(tp.partition): t2[tp] for tp in membership}
    # "bootstrapped_at": where acting started; "acted": changes acted on since.
    return {"offsets": cut, "bootstrapped_at": dict(cut), "picture": picture, "acted": 0}


async def run(args: argparse.Namespace, state: dict[str, Any] | None) -> None:
    state_path = Path(args.state)
    membership_topic = f"{args.prefix}segments.membership"
    consumer = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, group_id=None,
                                enable_auto_commit=False, isolation_level="read_committed",
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        membership = await partitions(consumer, membership_topic)
        if state is None:
            state = await bootstrap(consumer, args.bootstrap, f"{args.prefix}segments.members",
                                    membership)
            save(state_path, state)
            print(f"bootstrapped: offsets {state['offsets']}", flush=True)
        offsets = {tp: state["offsets"].get(str(tp.partition), 0) for tp in membership}
        until = await high_watermarks(args.bootstrap, membership) if args.until_end else None
        consumer.assign(membership)
        for tp, offset in offsets.items():
            consumer.seek(tp, offset)
        while True:
            if until is not None and all(
                    [await consumer.position(tp) >= until[tp] for tp in membership]):
                return
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch:
                continue
            for tp, records in batch.items():
                for record in records:
                    change = decode(record.value)
                    put(state["picture"], change["account_id"], change["segment_id"],
                        change["email"], state_after(change))
                    state["acted"] += 1
                    state["offsets"][str(tp.partition)] = record.offset + 1
                    # Act on the change here. This example prints it; an action with
                    # effects outside this file should be made idempotent (key it by
                    # partition and offset, or by account, segment, email, change, at,
                    # rule_version), as it may be repeated if the process dies between
                    # acting and saving.
                    print(f"{change['change']} {change['account_id']}/"
                          f"{change['segment_id']} {change['email']} ({change['cause']})",
                          flush=True)
            save(state_path, state)
    finally:
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="localhost:9092", help="Kafka brokers")
    parser.add_argument("--prefix", default="", help="SEGMENTS_TOPIC_PREFIX of the deployment")
    parser.add_argument("--state", required=True, help="JSON file: the picture and offsets")
    parser.add_argument("--until-end", action="store_true",
                        help="exit once caught up with the end offsets taken at start")
    args = parser.parse_args(argv)
    path = Path(args.state)
    state = json.loads(path.read_text()) if path.exists() else None
    try:
        asyncio.run(run(args, state))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
