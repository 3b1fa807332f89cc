"""Kafka goes away while Stripe keeps posting: 5xx, nothing acknowledged that is lost.

The shared session broker is never stopped: the outage test runs its own single-node
Kafka (same jars, its own data directory and ports) and kills it with SIGKILL.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from common.settings import Settings
from connectors.store import new_connection_id
from segments.stack import LocalKafka, StackError, stack_dir
from segments.stack.kafka import KAFKA_VERSION, Node
from tests.conftest import IN_CI
from tests.connector_harness import Connector, read_events, running_connector
from tests.stripe_signing import sign
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "stripe-fixtures"
SECRET = "whsec_outage_test_secret"
TEMPLATE = json.loads(
    (FIXTURES / "events-stripe-cli-2020-08-27" / "customer.subscription.created.json").read_text()
)


def event_body(n: int) -> bytes:
    event = copy.deepcopy(TEMPLATE)
    event["id"] = f"evt_outage_{n:03d}"
    event["data"]["object"]["customer"] = f"cus_outage_{n % 3}"
    return json.dumps(event).encode()


class _QuickRestartKafka(LocalKafka):
    """A node restarted after SIGKILL is refused until its old registration expires
    (broker.session.timeout.ms, 9 s by default); a short timeout keeps the test quick."""

    def _properties(self, node: Node) -> str:
        return super()._properties(node) + (
            "broker.session.timeout.ms=2000\nbroker.heartbeat.interval.ms=500\n"
        )


def _ports_free(*ports: int) -> bool:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _free_base_port() -> int:
    """A port p with p and p+100 (the controller listener) both free."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port + 100 < 65535 and _ports_free(port, port + 100):
            return port
    raise RuntimeError("no free port pair")


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[LocalKafka]:

    if shutil.which("java") is None:
        if IN_CI:
            pytest.fail("java is required under CI=true for the Kafka outage test")
        pytest.skip("java not installed")
    # Reuse the session stack's jar cache rather than resolving them again.
    cached = stack_dir() / "jars" / f"kafka-{KAFKA_VERSION}"
    if (cached / ".complete").exists():
        (tmp_path / "jars").mkdir()
        (tmp_path / "jars" / f"kafka-{KAFKA_VERSION}").symlink_to(cached)
    kafka = _QuickRestartKafka(tmp_path, nodes=1, base_port=_free_base_port())
    try:
        kafka.up(timeout=90)
    except StackError as exc:
        kafka.down()
        if IN_CI:
            pytest.fail(f"private Kafka did not start: {exc}")
        pytest.skip(f"private Kafka did not start: {exc}")
    yield kafka
    kafka.down()


async def test_connector_starts_and_answers_503_while_kafka_is_unreachable(
    settings: Settings,
) -> None:
    # The connection was stored (and cached in Redis) while Kafka was there; then the
    # connector restarts with Kafka unreachable: it cannot load segments.connections,
    # answers from the Redis cache, and 503 because nothing can be published.
    async with running_connector(settings) as earlier:
        connection_id = await _connect(earlier)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
    no_kafka = replace(settings, kafka_bootstrap_servers=dead)
    async with running_connector(no_kafka, wait_kafka=False, declare_topics=False,
                                 publish_timeout=1.0) as connector:
        body = event_body(1)
        status, answer = await connector.post_webhook(connection_id, body,
                                                      {"Stripe-Signature": sign(body, SECRET)})
        assert (status, answer) == (503, {"error": "event store unavailable; retry later"})
        # Not in the cache and the topic not loaded: "retry later", never "unknown".
        other = new_connection_id()
        status, answer = await connector.post_webhook(other, body,
                                                      {"Stripe-Signature": sign(body, SECRET)})
        assert (status, answer) == (503, {"error": "connections are loading; retry later"})
        status, health = await connector.request("GET", "/healthz")
        assert status == 503
        assert health["redis"] == "ok"
        assert health["kafka"] == "down"
        assert health["connections"] == "loading"


async def _connect(connector: Connector) -> str:
    connection_id = new_connection_id()
    await connector.store.create(
        connection_id=connection_id, account_id="acme", api_key="sk_test_unused",
        webhook_secret=SECRET, registration="manual", webhook_endpoint_id=None,
    )
    return connection_id


@pytest.fixture
async def outage_connector(
    settings: Settings, private_kafka: LocalKafka
) -> AsyncIterator[Connector]:
    private = replace(settings, kafka_bootstrap_servers=private_kafka.bootstrap_servers,
                      partitions=2)
    async with running_connector(private, publish_timeout=2.0) as connector:
        yield connector


async def test_kafka_killed_while_webhooks_arrive(
    outage_connector: Connector, private_kafka: LocalKafka
) -> None:
    connector = outage_connector
    kafka = private_kafka
    connection_id = await _connect(connector)
    acknowledged: set[str] = set()

    async def deliver(n: int) -> int:
        body = event_body(n)
        status, _ = await connector.post_webhook(connection_id, body,
                                                 {"Stripe-Signature": sign(body, SECRET)})
        if 200 <= status < 300:
            acknowledged.add(f"evt_outage_{n:03d}")
        return status

    # Kafka up: accepted.
    assert await asyncio.gather(*(deliver(n) for n in range(5))) == [200] * 5

    kafka.stop_node(kafka.nodes[0], kill=True)
    during = await asyncio.gather(*(deliver(n) for n in range(5, 10)))
    assert during == [503] * 5, during
    status, health = await connector.request("GET", "/healthz")
    assert (status, health["kafka"]) == (503, "down")

    kafka.start_node(kafka.nodes[0])
    await asyncio.to_thread(kafka.wait_ready, 90)

    # Stripe retries what was not acknowledged, until it is.
    pending = set(range(5, 10))

    async def retried() -> bool:
        for n in sorted(pending):
            if await deliver(n) == 200:
                pending.discard(n)
        return not pending

    await async_wait_for(retried, 90, interval=0.5, what="retried deliveries to land")

    events = await read_events(connector.settings, expect=10, timeout=30)
    on_topic = {e.event_id for e in events}
    # Every 2xx given is on the topic; and after the retries, every event is.
    assert acknowledged <= on_topic
    assert on_topic == {f"evt_outage_{n:03d}" for n in range(10)}
