"""The whole pipeline on a secured cluster: SASL_SSL, a principal and ACLs per service.

A private secured stack for this module (`segments.stack.secure`: one KRaft node with a
SASL_SSL listener, SCRAM-SHA-512 users made at format time, `StandardAuthorizer`, and
Redis on TLS with an ACL user), on free ports in its own directory, stopped at the end.
The admin principal creates the deployment's topics and the services' ACLs
(`segments.stack.acls.provision`), then:

- the connector (in-process, as `segments-connector`), a worker (a real `segments
  worker` process configured only by the environment variables of SPEC part 2, as
  `segments-worker`) and the query API (in-process, as `segments-api`) turn a signed
  webhook into a segment member the API serves;
- a record on `stripe.events` whose envelope claims another account than its
  connection's (written with the one principal allowed to write there) is
  dead-lettered with the reason, and produces no fact;
- a principal without the ACL is refused with an authorization error, a wrong password
  with an authentication error, and Redis without its password answers nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka.errors import (
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from common import kafka
from common.settings import KafkaSecurity, Settings
from common.topics import DLQ_TOPIC, EVENTS_TOPIC, FACTS_TOPIC
from connectors.contract import RawEvent
from connectors.store import new_connection_id
from segments.rules_admin import publish_rule
from segments.stack import KAFKA_VERSION, StackError, stack_dir
from segments.stack.acls import provision
from segments.stack.secure import ADMIN, API, CONNECTOR, WORKER, SecureStack
from serving.server import ApiProcess
from tests import stripe_events as se
from tests.conftest import IN_CI, TEST_SECRET_KEY
from tests.connector_harness import running_connector
from tests.drain import read_to_end
from tests.integration.test_pipeline import Topics
from tests.localstripe_server import free_port
from tests.reliability.test_broker_loss import free_base_port
from tests.stripe_signing import sign
from tests.tokens import TEST_AUTH_SECRET, bearer
from tests.waiting import async_wait_for

#: `make test-secure` (which `make test` runs after the rest): starting a secured broker
#: takes most of a minute on a loaded 2-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.secure]


def _unavailable(why: str) -> None:
    if IN_CI:
        pytest.fail(f"the secured stack is required under CI=true: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    for tool in ("java", "redis-server"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} not installed")
    home = tmp_path_factory.mktemp("secure-stack")
    cached = stack_dir() / "jars" / f"kafka-{KAFKA_VERSION}"
    if (cached / ".complete").exists():
        (home / "jars").mkdir()
        (home / "jars" / f"kafka-{KAFKA_VERSION}").symlink_to(cached)
    secured = SecureStack(home, kafka_port=free_base_port(1), redis_port=free_port())
    try:
        secured.kafka.up(timeout=180)
        secured.redis.up()
    except StackError as exc:
        secured.kafka.down()
        secured.redis.down()
        _unavailable(f"the secured stack did not start: {exc}")
    yield secured
    secured.kafka.down()
    secured.redis.down()


@pytest.fixture
async def deployment(stack: SecureStack) -> Settings:
    """A fresh topic prefix with its topics and ACLs; the admin's settings."""
    base = Settings(topic_prefix=f"s{uuid.uuid4().hex[:8]}.", partitions=2,
                    secret_key=TEST_SECRET_KEY, auth_secret=TEST_AUTH_SECRET)
    admin = stack.settings(ADMIN, base)
    await provision(admin)
    return admin


def start_worker(stack: SecureStack, settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """`segments worker` as principal segments-worker, from the environment alone."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KAFKA_") and k != "REDIS_URL"}
    env.update(stack.env(WORKER), SEGMENTS_TOPIC_PREFIX=settings.topic_prefix,
               SEGMENTS_PARTITIONS=str(settings.partitions),
               SEGMENTS_SECRET_KEY=TEST_SECRET_KEY, SEGMENTS_AUTH_SECRET=TEST_AUTH_SECRET)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "segments.cli", "worker", "--loglevel", "warning"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def payment(email: str) -> dict[str, object]:
    now = int(time.time())
    charge = se.charge(amount=10_000, billing_email=email, created=now - 60)
    return se.event("charge.succeeded", charge, created=now - 60)


async def test_pipeline_over_sasl_ssl_and_a_forged_envelope_is_dead_lettered(
        stack: SecureStack, deployment: Settings, tmp_path: Path) -> None:
    admin = deployment
    connector_settings = stack.settings(CONNECTOR, admin)
    api_settings = stack.settings(API, admin)
    for account in ("acme", "globex"):
        await publish_rule(admin, {"id": "vip", "account_id": account, "name": "payers",
                                   "filter": "charge_succeeded", "conditions": [],
                                   "timezone": "UTC"})
    log = tmp_path / "worker.log"
    worker = start_worker(stack, admin, log)
    try:
        async with running_connector(connector_settings) as connector, \
                ApiProcess(api_settings, port=0) as api, aiohttp.ClientSession() as http:
            secret = "whsec_" + uuid.uuid4().hex
            acme = new_connection_id()
            await connector.store.create(
                connection_id=acme, account_id="acme", api_key="sk_test_" + uuid.uuid4().hex,
                webhook_secret=secret, registration="manual", webhook_endpoint_id=None)
            body = orjson.dumps(payment("ann@example.com"))
            status, _ = await connector.post_webhook(acme, body,
                                                     {"Stripe-Signature": sign(body, secret)})
            assert status == 200

            async def segments_of(account: str, email: str) -> list[str]:
                url = f"{api.url}/accounts/{account}/contacts/{email}/segments"
                async with http.get(url, headers=bearer(account)) as resp:
                    assert resp.status == 200, await resp.text()
                    return [s["segment_id"] for s in (await resp.json())["segments"]]

            async def ann_is_a_member() -> bool:
                assert worker.poll() is None, log.read_text()[-3000:]
                return await segments_of("acme", "ann@example.com") == ["vip"]

            await async_wait_for(ann_is_a_member, 90, what="ann in acme's vip, via the API")

            # The forged envelope: acme's connection, globex's account, written by the
            # one principal allowed to write raw events.
            forged = RawEvent(acme, "globex", "webhook", int(time.time() * 1000),
                              payment("mallory@example.com"))
            producer = kafka.producer(connector_settings, acks="all", enable_idempotence=True)
            await producer.start()
            try:
                await producer.send_and_wait(admin.topic(EVENTS_TOPIC), forged.to_bytes(),
                                             key=forged.key())
            finally:
                await producer.stop()

            dlq = Topics(admin)
            try:
                async def dead_lettered() -> bool:
                    assert worker.poll() is None, log.read_text()[-3000:]
                    return bool(await dlq.read(DLQ_TOPIC))

                await async_wait_for(dead_lettered, 60, what="the forged envelope dead-lettered")
                [letter] = dlq.seen[DLQ_TOPIC]
            finally:
                await dlq.close()
            assert RawEvent.from_bytes(letter.value).event_id == forged.event_id
            reason = dict(letter.headers)["reason"].decode()
            assert reason.startswith("ForgedEnvelope: account_id 'globex' is not the account "
                                     f"of connection '{acme}'"), reason
            # The dead letter commits with whatever its record produced: no fact at all.
            facts = [orjson.loads(r.value) for r in await read_to_end(admin, admin.topic(
                FACTS_TOPIC))]
            assert {f["email"] for f in facts} == {"ann@example.com"}
            assert await segments_of("globex", "mallory@example.com") == []
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


async def test_a_principal_without_the_acl_is_refused(stack: SecureStack,
                                                      deployment: Settings) -> None:
    admin = deployment
    topic = admin.topic(EVENTS_TOPIC)
    # The API may read membership, never write raw events.
    producer = kafka.producer(stack.settings(API, admin), acks="all")
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(topic, b"{}", key=b"k")
    finally:
        await producer.stop()
    # The connector may write raw events, never read what the worker publishes.
    consumer = kafka.consumer(stack.settings(CONNECTOR, admin),
                              admin.topic("segments.membership"), group_id=None,
                              auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await consumer.start()
    finally:
        await consumer.stop()
    # A wrong password does not get in at all.
    wrong = replace(stack.files.security(WORKER), sasl_password="not-the-password")
    intruder = kafka.client(replace(admin, kafka_security=wrong))
    try:
        with pytest.raises(KafkaConnectionError):
            await intruder.bootstrap()
    finally:
        await intruder.close()
    # Nor does a plaintext client on the SASL_SSL listener.
    plain = kafka.client(replace(admin, kafka_security=KafkaSecurity()),
                         request_timeout_ms=5000)
    try:
        with pytest.raises(KafkaConnectionError):
            await plain.bootstrap()
    finally:
        await plain.close()
    # Redis: the URL's user and password, or nothing.
    url = stack.files.redis_url(stack.redis.port)
    anonymous = aioredis.Redis.from_url(url.replace(url.split("@")[0] + "@", "rediss://"))
    try:
        with pytest.raises((aioredis.AuthenticationError, aioredis.ResponseError)):
            await anonymous.get("anything")
    finally:
        await anonymous.aclose()
