"""The supervised sink: up without Kafka, connects in the background, rebuilds when stuck."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest

from common.settings import Settings
from connectors.contract import RawEvent
from connectors.sink import (
    MAX_RECORD_BYTES,
    KafkaEventSink,
    RecordTooLarge,
    SinkUnavailable,
    UnencodableEvent,
    encode,
)
from connectors.supervised_sink import RECYCLE_AFTER_FAILURES, SupervisedSink
from tests.waiting import async_wait_for

pytestmark = pytest.mark.unit

EVENT = RawEvent("conn_1", "acme", "webhook", 0, {"id": "evt_1", "type": "charge.failed"})


class FakeSink:
    """Stands in for KafkaEventSink; one instance per connection attempt."""

    def __init__(self, start_fails: int, publish_ok: bool = True) -> None:
        self.start_fails = bool(start_fails)
        self.publish_ok = publish_ok
        self.published: list[RawEvent] = []
        self.stopped = False

    async def start(self) -> None:
        if self.start_fails:
            raise OSError("connection refused")

    async def stop(self) -> None:
        self.stopped = True

    async def publish(self, event: RawEvent) -> None:
        if not self.publish_ok:
            raise SinkUnavailable("no ack") from RuntimeError("out of order sequence number")
        self.published.append(event)


def factory(plan: list[FakeSink]) -> Any:
    def build(settings: Settings, timeout: float) -> KafkaEventSink:
        return plan.pop(0)  # type: ignore[return-value]

    return build


async def test_unavailable_until_connected_then_publishes() -> None:
    plan = [FakeSink(1), FakeSink(1), FakeSink(0)]
    states: list[bool] = []
    sink = SupervisedSink(Settings(), retry_interval=0.01, factory=factory(plan),
                          on_state=states.append)
    await sink.start()
    assert await sink.wait_connected(5)
    await sink.publish(EVENT)
    assert states == [True]
    await sink.stop()
    assert states == [True, False]


async def test_publish_before_connect_raises_sink_unavailable() -> None:
    sink = SupervisedSink(Settings(), retry_interval=10, factory=factory([FakeSink(5)]))
    await sink.start()
    with pytest.raises(SinkUnavailable):
        await sink.publish(EVENT)
    await sink.stop()


async def test_repeated_failures_rebuild_the_producer() -> None:
    stuck, fresh = FakeSink(0, publish_ok=False), FakeSink(0)
    sink = SupervisedSink(Settings(), retry_interval=0.01, factory=factory([stuck, fresh]))
    await sink.start()
    assert await sink.wait_connected(5)
    for _ in range(RECYCLE_AFTER_FAILURES):
        with pytest.raises(SinkUnavailable):
            await sink.publish(EVENT)
    assert await sink.wait_connected(5)
    await sink.publish(EVENT)
    assert fresh.published == [EVENT]
    assert stuck.stopped
    await sink.stop()


async def test_timeouts_alone_rebuild_only_after_a_while() -> None:
    class TimingOut(FakeSink):
        async def publish(self, event: RawEvent) -> None:
            raise SinkUnavailable("no ack") from TimeoutError()

    first, fresh = TimingOut(0), FakeSink(0)
    sink = SupervisedSink(Settings(), retry_interval=0.01, stuck_after=0.2,
                          factory=factory([first, fresh]))
    await sink.start()
    assert await sink.wait_connected(5)
    for _ in range(2 * RECYCLE_AFTER_FAILURES):  # an outage or overload: keep the producer
        with pytest.raises(SinkUnavailable):
            await sink.publish(EVENT)
    assert not first.stopped

    async def rebuilt() -> bool:
        with contextlib.suppress(SinkUnavailable):
            await sink.publish(EVENT)
        return bool(fresh.published)

    await async_wait_for(rebuilt, 5, interval=0.05, what="the producer to be rebuilt")
    assert first.stopped
    await sink.stop()


async def test_prepare_runs_once_before_the_first_connection() -> None:
    calls: list[int] = []

    async def prepare() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("broker not there yet")

    sink = SupervisedSink(Settings(), retry_interval=0.01, prepare=prepare,
                          factory=factory([FakeSink(0), FakeSink(0)]))
    await sink.start()
    assert await sink.wait_connected(5)
    assert calls == [1, 1]
    await sink.stop()


def test_encode_refuses_an_envelope_over_the_record_limit() -> None:
    big = RawEvent("conn_1", "acme", "webhook", 0,
                   {"id": "evt_1", "type": "charge.failed", "pad": "x" * MAX_RECORD_BYTES})
    with pytest.raises(RecordTooLarge):
        encode(big)
    assert orjson.loads(encode(EVENT))["event"] == {"id": "evt_1", "type": "charge.failed"}


def test_encode_refuses_what_orjson_cannot_write() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(300):  # orjson writes at most 255 levels
        node["x"] = {}
        node = node["x"]
    with pytest.raises(UnencodableEvent):
        encode(RawEvent("conn_1", "acme", "webhook", 0, {"id": "e", "type": "t", "d": deep}))


async def test_publish_refuses_before_touching_kafka() -> None:
    """Not a retriable failure: the receiver answers 413, never 503."""
    sink = KafkaEventSink(Settings(kafka_bootstrap_servers="127.0.0.1:1"))
    sink._producer = object()  # started, but never reached: encode fails first
    big = RawEvent("conn_1", "acme", "webhook", 0, {"id": "e", "type": "t",
                                                     "pad": "x" * MAX_RECORD_BYTES})
    with pytest.raises(RecordTooLarge) as caught:
        await sink.publish(big)
    assert caught.value.retriable is False
