"""A partition given up cleanly and assigned again is brought up to date from where this
worker's writes ended, not read again from the start; and whatever another owner
committed meanwhile is applied, what it aborted is not.

Written against a real broker with transactional producers, as the workers write.
"""

from __future__ import annotations

import pytest

from common import kafka
from common.settings import Settings
from common.topics import TopicSpec, ensure_topics
from stream.state import RAW, State, recover_all

pytestmark = pytest.mark.integration


async def write(settings: Settings, topic: str, records: dict[str, bytes | None],
                commit: bool = True) -> int:
    """Writes in one transaction (the owner of partition 0); the offset after them."""
    producer = kafka.producer(settings, transactional_id=f"{topic}-owner",
                              enable_idempotence=True)
    await producer.start()
    try:
        await producer.begin_transaction()
        last = 0
        for key, value in records.items():
            metadata = await (await producer.send(topic, value, key=key.encode(),
                                                  partition=0))
            last = metadata.offset + 1
        if commit:
            await producer.commit_transaction()
        else:
            await producer.abort_transaction()
        return last
    finally:
        await producer.stop()


@pytest.fixture
async def store(settings: Settings) -> State:
    await ensure_topics(settings, (TopicSpec("resume.changelog", compacted=True,
                                             single_partition=True),))
    return State("resume", settings.topic("resume.changelog"), settings, RAW)


async def test_a_kept_partition_reads_only_what_others_wrote(settings: Settings,
                                                             store: State) -> None:
    await write(settings, store.topic, {"a": b"1", "b": b"2"})
    assert await recover_all([store], [0]) == {0}
    assert store.data[0] == {"a": b"1", "b": b"2"}

    # This worker writes (as its task would) and gives the partition up cleanly.
    view = store.view(0)
    view["c"] = b"3"
    ends = await write(settings, store.topic,
                       {key.decode(): value for key, value in store.take(0)})
    store.suspend(0, ends)
    kept = store.data[0]

    # Nobody wrote meanwhile: nothing changed, the same data is kept.
    assert await recover_all([store], [0]) == set()
    assert store.data[0] is kept
    assert kept == {"a": b"1", "b": b"2", "c": b"3"}

    # Another owner commits one transaction and aborts another.
    store.suspend(0, None)
    await write(settings, store.topic, {"b": b"20", "d": b"4", "a": None})
    await write(settings, store.topic, {"c": b"999"}, commit=False)
    assert await recover_all([store], [0]) == {0}
    assert store.data[0] is kept, "resumed, not read from the start"
    assert store.data[0] == {"b": b"20", "c": b"3", "d": b"4"}

    # The same from scratch, as a worker without kept state reads it.
    fresh = State("resume", store.topic, settings, RAW)
    assert await recover_all([fresh], [0]) == {0}
    assert fresh.data[0] == store.data[0]


async def test_a_resume_point_the_log_does_not_have_reads_from_the_start(
        settings: Settings, store: State) -> None:
    """E.g. the topic was recreated: an offset past its end means the kept data is not
    this log's; it is dropped and the partition read from the beginning."""
    await write(settings, store.topic, {"a": b"1"})
    store.data[0] = {"stale": b"x"}
    store.resume[0] = 10_000
    assert await recover_all([store], [0]) == {0}
    assert store.data[0] == {"a": b"1"}


async def test_unwritten_changes_cannot_be_suspended(settings: Settings,
                                                     store: State) -> None:
    await recover_all([store], [0])
    store.view(0)["x"] = b"1"
    with pytest.raises(RuntimeError, match="unwritten"):
        store.suspend(0, None)
