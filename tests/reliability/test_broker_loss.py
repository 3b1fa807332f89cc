"""A broker killed (SIGKILL) under the connector while Stripe keeps posting webhooks,
and under an exactly-once stream worker.

A private three-node KRaft cluster for this module (the session broker is never
touched): topics at replication factor 3, `min.insync.replicas=2`. Webhooks are posted
at a steady rate; one broker is killed with `kill -9` mid-stream and brought back.

Checked: every answer is 200 or 503, and 503s only while the cluster is recovering;
every webhook answered 200 is on the topic; after Stripe-style redelivery of the 503s,
every event is there; events acknowledged at the first attempt are there exactly once
(the idempotent producer adds no duplicates of its own). An event answered 503 may have
been written all the same (the acknowledgement was what got lost): its redelivery is
then a second copy, which the stream's fact ids deduplicate; the count is reported.

Under the worker (`test_broker_killed_under_an_exactly_once_worker`): the crash test's
rounds of payments flow while a broker is killed and brought back; the membership
output, drained, holds every expected join exactly once.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from common.settings import Settings
from connectors.store import new_connection_id
from segments.stack import LocalKafka, StackError, stack_dir
from segments.stack.kafka import KAFKA_VERSION, Node
from tests.conftest import IN_CI
from tests.connector_harness import read_events, running_connector
from tests.reliability.ledger import LEDGER
from tests.stripe_signing import sign

pytestmark = pytest.mark.reliability

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "stripe-fixtures"
TEMPLATE = json.loads(
    (FIXTURES / "events-stripe-cli-2020-08-27" / "charge.succeeded.json").read_text())
RATE_PER_S = 40
#: A 503 is allowed from the kill until this long after the broker is back and ready.
RECOVERY_GRACE_S = 15.0


class QuickRestartKafka(LocalKafka):
    """A node restarted after SIGKILL is fenced until its old registration expires
    (broker.session.timeout.ms, 9 s by default); 2 s keeps the test quick."""

    def _properties(self, node: Node) -> str:
        return super()._properties(node) + (
            "broker.session.timeout.ms=2000\nbroker.heartbeat.interval.ms=500\n")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_base_port(nodes: int) -> int:
    """p such that p..p+nodes-1 and p+100.. (controllers) are all free."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base: int = s.getsockname()[1]
        if base + 100 + nodes < 65535 and all(
                _free(base + i) and _free(base + 100 + i) for i in range(nodes)):
            return base
    raise RuntimeError("no free port range")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuickRestartKafka]:
    if shutil.which("java") is None:
        if IN_CI:
            pytest.fail("java is required under CI=true for the broker-loss test")
        pytest.skip("java not installed")
    home = tmp_path_factory.mktemp("kafka3")
    cached = stack_dir() / "jars" / f"kafka-{KAFKA_VERSION}"
    if (cached / ".complete").exists():
        (home / "jars").mkdir()
        (home / "jars" / f"kafka-{KAFKA_VERSION}").symlink_to(cached)
    kafka = QuickRestartKafka(home, nodes=3, base_port=free_base_port(3))
    try:
        kafka.up(timeout=180)
    except StackError as exc:
        kafka.down()
        if IN_CI:
            pytest.fail(f"the three-node cluster did not start: {exc}")
        pytest.skip(f"the three-node cluster did not start: {exc}")
    yield kafka
    kafka.down()


def event_body(event_id: str, n: int) -> bytes:
    event = copy.deepcopy(TEMPLATE)
    event["id"] = event_id
    event["data"]["object"]["customer"] = f"cus_broker_{n % 7}"
    return json.dumps(event).encode()


async def test_broker_killed_while_webhooks_flow(settings: Settings,
                                                 cluster: QuickRestartKafka) -> None:
    private = replace(settings, kafka_bootstrap_servers=cluster.bootstrap_servers,
                      replication_factor=3, partitions=3)
    secret = LEDGER.webhook_secret()
    answers: list[tuple[float, str, int]] = []  # (when, event id, status)
    async with running_connector(private, publish_timeout=5.0) as connector:
        connection_id = new_connection_id()
        await connector.store.create(
            connection_id=connection_id, account_id="acme", api_key=LEDGER.api_key(),
            webhook_secret=secret, registration="manual", webhook_endpoint_id=None)
        stop = asyncio.Event()

        async def deliver(event_id: str, n: int) -> int:
            body = event_body(event_id, n)
            status, _ = await connector.post_webhook(connection_id, body,
                                                     {"Stripe-Signature": sign(body, secret)})
            answers.append((time.monotonic(), event_id, status))
            return status

        async def stripe() -> None:
            n, pending = 0, set()
            while not stop.is_set():
                n += 1
                pending.add(asyncio.create_task(deliver(f"evt_broker_{uuid.uuid4().hex}", n)))
                pending = {t for t in pending if not t.done()}
                await asyncio.sleep(1 / RATE_PER_S)
            await asyncio.gather(*pending)

        sender = asyncio.create_task(stripe())
        await asyncio.sleep(4)
        victim = cluster.nodes[1]
        killed_at = time.monotonic()
        cluster.stop_node(victim, kill=True)
        await asyncio.sleep(8)
        cluster.start_node(victim)
        await asyncio.to_thread(cluster.wait_ready, 120)
        ready_at = time.monotonic()
        await asyncio.sleep(4)
        stop.set()
        await sender

        first = {event_id: status for _, event_id, status in answers}
        statuses = Counter(status for _, _, status in answers)
        assert set(statuses) <= {200, 503}, statuses
        late = [(round(t - killed_at, 1), s) for t, _, s in answers
                if s != 200 and not killed_at <= t <= ready_at + RECOVERY_GRACE_S]
        assert late == [], f"5xx outside the outage window: {late}"
        during = sum(1 for t, _, s in answers if killed_at <= t <= ready_at and s == 200)

        # Stripe redelivers every event not acknowledged, until it is.
        redelivered = [event_id for event_id, status in first.items() if status != 200]
        for event_id in redelivered:
            for attempt in range(20):
                if await deliver(event_id, attempt) == 200:
                    break
                await asyncio.sleep(0.5)
            else:
                pytest.fail(f"{event_id} never accepted after the broker came back")

        events = await read_events(private, expect=len(first), timeout=60, quiet=2.0)
    on_topic = Counter(e.event_id for e in events)
    acked_first = {event_id for event_id, status in first.items() if status == 200}
    assert set(on_topic) == set(first), "an event is missing (or one nobody sent appeared)"
    assert {i: on_topic[i] for i in acked_first if on_topic[i] != 1} == {}, \
        "an event acknowledged at the first attempt is on the topic more than once"
    duplicates = {i: n for i, n in on_topic.items() if n > 1}
    assert set(duplicates) <= set(redelivered)
    for event in events:
        LEDGER.check_bytes("topic message", event.to_bytes())
    print(f"broker loss: {len(first)} webhooks at {RATE_PER_S}/s, broker {victim.node_id} "
          f"killed -9 for {ready_at - killed_at:.1f}s (until ready), answers {dict(statuses)}, "
          f"{during} acknowledged while it was down, {len(redelivered)} redelivered, "
          f"{len(duplicates)} duplicate(s) from redelivery, all {len(first)} on the topic")


async def test_broker_killed_under_an_exactly_once_worker(settings: Settings,
                                                          cluster: QuickRestartKafka) -> None:
    """The stream worker keeps its promise through a broker's death: leaders and
    transaction coordinators move, and every membership change is still published
    exactly once. A worker that gives up (exit 1 in production) is restarted, as its
    orchestrator would; the restarts are reported."""
    from common.topics import ensure_topics
    from stream.app import create_app
    from tests.integration.test_pipeline import Topics, wait_changes
    from tests.integration.test_worker_crash import (
        ROUNDS,
        assert_exact,
        expected_joins,
        publish_rules,
        round_events,
    )

    private = replace(settings, kafka_bootstrap_servers=cluster.bootstrap_servers,
                      replication_factor=3, partitions=3)
    await ensure_topics(private)
    topics = Topics(private)
    await topics.producer.start()
    restarts = 0
    stop = asyncio.Event()

    async def supervise() -> None:
        nonlocal restarts
        while not stop.is_set():
            app = create_app(private)
            await app.start()
            try:
                done = asyncio.create_task(app.wait())
                await asyncio.wait({done, asyncio.create_task(stop.wait())},
                                   return_when=asyncio.FIRST_COMPLETED)
                if done.done() and done.exception() is not None:
                    restarts += 1
                    print(f"worker failed ({done.exception()!r}); restarting")
                else:
                    done.cancel()
            finally:
                await app.stop()

    worker = asyncio.create_task(supervise())
    victim = cluster.nodes[1]
    try:
        await publish_rules(topics)
        for r in range(ROUNDS):
            for event in round_events(r):
                await topics.raw(event)
            if r == 1:
                cluster.stop_node(victim, kill=True)
            if r == 3:
                cluster.start_node(victim)
                await asyncio.to_thread(cluster.wait_ready, 120)
        changes = await wait_changes(topics, len(expected_joins()), timeout=180)
        assert_exact(await topics.drained(timeout=120))
    finally:
        stop.set()
        await worker
        await topics.close()
    print(f"broker loss under the worker: {len(changes)} joins exactly once, broker "
          f"{victim.node_id} killed -9 mid-stream, {restarts} worker restart(s)")

