"""Shared plumbing of the benchmarks: settings, Kafka I/O, worker processes, statistics.

Every run gets a fresh topic prefix (`bench<hex>.`), so runs never see each other's
topics or consumer groups; nothing is deleted afterwards (topics keep their normal
retention on the local broker).
"""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from bench.dataset import SENTINEL_ACCOUNT, Message
from common.settings import Settings
from common.topics import DLQ_TOPIC, ensure_topics

REPO = Path(__file__).resolve().parent.parent
#: Partitions of the benchmark's topics (SEGMENTS_PARTITIONS); 4 lets two workers share.
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "4"))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- statistics and the machine ----------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of repeated runs (and the runs themselves)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": list(values)}


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"nproc": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem_gib, 1),
            "python": platform.python_version(), "platform": platform.platform()}


# --- settings and topics -----------------------------------------------------------


#: Topic prefixes this process handed out: `run_all` deletes those topics at the end,
#: and only those (the broker may be shared with someone else's benchmark).
CREATED_PREFIXES: list[str] = []


def fresh_settings(partitions: int = PARTITIONS, label: str = "bench") -> Settings:
    env = Settings.from_env()
    prefix = f"{label}{uuid.uuid4().hex[:8]}."
    CREATED_PREFIXES.append(prefix)
    return replace(env, topic_prefix=prefix, partitions=partitions)


def worker_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SEGMENTS_TOPIC_PREFIX": settings.topic_prefix,
        "SEGMENTS_PARTITIONS": str(settings.partitions),
        "REDIS_URL": settings.redis_url,
        "PYTHONPATH": str(REPO),
    }


async def prepare_topics(settings: Settings) -> None:
    await ensure_topics(settings)


async def produce(settings: Settings, topic: str, messages: Iterable[Message]) -> int:
    """Produce as fast as the client allows (acks=all, batched); returns the count."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all",
                                linger_ms=20, max_batch_size=1 << 20,
                                max_request_size=8 << 20)
    await producer.start()
    count = 0
    try:
        pending: list[asyncio.Future[Any]] = []
        for key, value in messages:
            pending.append(await producer.send(settings.topic(topic), value, key=key))
            count += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        name = settings.topic(topic)
        numbers = consumer.partitions_for_topic(name) or await _partitions(consumer, name)
        parts = [TopicPartition(name, partition) for partition in sorted(numbers)]
        ends = await consumer.end_offsets(parts)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def require_no_dead_letters(settings: Settings) -> None:
    """Fail the run if the worker dead-lettered anything on this (fresh) prefix: a dead
    letter and its log line cost something else than the work being timed, so the
    figure would be of the wrong thing."""
    dead = sum((await end_offsets(settings, DLQ_TOPIC)).values())
    if dead:
        raise RuntimeError(f"{dead} records (with any transaction markers) on "
                           f"{settings.topic(DLQ_TOPIC)}: the run dead-lettered input")


async def _partitions(consumer: AIOKafkaConsumer, name: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return set(consumer._client.cluster.partitions_for_topic(name) or ())


class TopicReader:
    """Reads one topic from given offsets (default: the beginning), read_committed."""

    def __init__(self, settings: Settings, topic: str,
                 start: dict[int, int] | None = None) -> None:
        self.settings = settings
        self.name = settings.topic(topic)
        self.start = start
        self.consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap_servers,
                                    isolation_level="read_committed",
                                    auto_offset_reset="earliest", enable_auto_commit=False,
                                    max_partition_fetch_bytes=4 << 20)
        await consumer.start()
        parts = await _partitions(consumer, self.name)
        deadline = time.monotonic() + 120
        while not parts and time.monotonic() < deadline:  # not declared yet (a peer's)
            await asyncio.sleep(0.5)
            parts = await _partitions(consumer, self.name)
        tps = [TopicPartition(self.name, partition) for partition in sorted(parts)]
        consumer.assign(tps)
        for tp in tps:
            if self.start is not None and tp.partition in self.start:
                consumer.seek(tp, self.start[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
        self.consumer = consumer
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def batch(self, timeout_ms: int = 200) -> list[ConsumerRecord[bytes, bytes]]:
        assert self.consumer is not None
        got = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=20_000)
        return [record for records in got.values() for record in records]


def is_sentinel_join(record: ConsumerRecord[bytes, bytes], segment: str | None = None) -> bool:
    key = record.key or b""
    value = record.value or b""
    if segment is not None and f'"segment_id":"{segment}"'.encode() not in value:
        return False
    return key.startswith(SENTINEL_ACCOUNT.encode() + b"\x1f") and b'"joined"' in value


async def wait_for_sentinels(settings: Settings, topic: str, expected: set[bytes],
                             timeout: float, start: dict[int, int] | None = None,
                             alive: Callable[[], bool] = lambda: True,
                             segment: str | None = None,
                             match: Callable[[ConsumerRecord[bytes, bytes]], bool] | None = None,
                             ) -> float:
    """Wait until every expected sentinel contact key has joined (or, with `match`,
    has a record it accepts); returns the latest such record's timestamp (epoch s)."""
    accept = match or (lambda record: is_sentinel_join(record, segment))
    seen: set[bytes] = set()
    latest = 0.0
    deadline = time.monotonic() + timeout
    async with TopicReader(settings, topic, start) as reader:
        while seen < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(expected - seen)} of {len(expected)} sentinels "
                                   f"not seen on {topic} within {timeout:.0f}s")
            if not alive():
                raise RuntimeError("the process under test exited")
            for record in await reader.batch():
                if record.key in expected and accept(record):
                    seen.add(record.key)
                    latest = max(latest, record.timestamp / 1000)
    return latest


async def first_timestamp(settings: Settings, topic: str, start: dict[int, int]) -> float:
    """The earliest record timestamp at or after `start` offsets (default: the beginning),
    over every partition that has records there (epoch seconds)."""
    first: dict[int, float] = {}
    async with TopicReader(settings, topic, start) as reader:
        assert reader.consumer is not None
        ends = await reader.consumer.end_offsets(list(reader.consumer.assignment()))
        begins = await reader.consumer.beginning_offsets(list(reader.consumer.assignment()))
        wanted = {tp.partition for tp, end in ends.items()
                  if end > max(start.get(tp.partition, 0), begins[tp])}
        deadline = time.monotonic() + 60
        while not wanted <= set(first) and time.monotonic() < deadline:
            for record in await reader.batch():
                if record.partition not in first:
                    first[record.partition] = record.timestamp / 1000
    if not first:
        raise RuntimeError(f"no record on {topic} after {start}")
    return min(first.values())


# --- processes ---------------------------------------------------------------------


def start_process(cmd: Sequence[str], env: dict[str, str],
                  logfile: Path) -> subprocess.Popen[bytes]:
    with open(logfile, "ab") as out:
        return subprocess.Popen(list(cmd), env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=str(REPO))


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM the process group we started; SIGKILL it if it does not leave in time."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def bench_worker_cmd(guarantee: str = "exactly_once", commit_interval: float | None = None,
                     *, membership: bool = True) -> list[str]:
    cmd = [sys.executable, str(REPO / "bench" / "worker.py"), "--guarantee", guarantee]
    if commit_interval is not None:
        cmd += ["--commit-interval", str(commit_interval)]
    if not membership:
        cmd += ["--classify-only"]
    return cmd


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


async def topics_like(settings: Settings, prefix: str) -> list[str]:
    """Names of existing topics that start with `prefix` (e.g. Quix's internal ones)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        return sorted(name for name in await admin.list_topics() if name.startswith(prefix))
    finally:
        await admin.close()


async def first_timestamp_of(settings: Settings, full_name: str) -> float:
    """The earliest record timestamp of a topic given by its full name."""
    raw = replace(settings, topic_prefix="")
    return await first_timestamp(raw, full_name, {})
