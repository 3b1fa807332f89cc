"""Session-wide real Kafka and Redis, and a fresh topic prefix for every test.

Kafka: KAFKA_BOOTSTRAP_SERVERS if set; else a testcontainers Kafka when a Docker
engine answers; else the project's own local stack (`segments stack`), started here if
it is not running and stopped at the end if this session started it. Without a broker
the integration tests skip on a laptop, but under CI=true that is a failure.

Under CI=true every skip fails the run unless CI_ALLOWED_SKIPS below names it
(`tests/ci_skips.py`).
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from common.redis_client import redis_client
from common.settings import Settings
from tests.ci_skips import AllowedSkip, CiSkips
from tests.tokens import TEST_AUTH_SECRET

#: A Fernet key made for this test session only.
TEST_SECRET_KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

#: The skips CI accepts: AllowedSkip(node id pattern, substring of the reason, why).
#: Empty on purpose: CI installs everything the suite uses (`scripts/bootstrap.sh`:
#: Java, Redis, Chromium, stripe-mock, jsonschema), so any skip there is coverage lost.
#: An entry needs a reason a reviewer accepts, written beside it.
CI_ALLOWED_SKIPS: tuple[AllowedSkip, ...] = ()


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(CiSkips(CI_ALLOWED_SKIPS, active=IN_CI), "ci-skips")


def _unavailable(what: str, why: object) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but unavailable: {why}")
    pytest.skip(f"{what} unavailable: {why}")


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    if _docker_answers():
        from tests.kafka_container import single_broker_kafka

        with single_broker_kafka() as kafka:
            yield kafka.get_bootstrap_server()
        return
    from segments.stack import LocalKafka, StackError, stack_dir
    from segments.stack.processes import read_pid

    kafka = LocalKafka(stack_dir())
    ours = read_pid(kafka.nodes[0].pidfile) is None
    try:
        servers = kafka.up()
    except StackError as exc:
        _unavailable("Kafka", exc)
    yield servers
    if ours and not os.environ.get("SEGMENTS_KEEP_STACK"):
        kafka.down()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    from segments.stack import LocalRedis, StackError, stack_dir

    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    local = LocalRedis(stack_dir(), url)
    ours = local.status() == "down"
    try:
        local.up()
    except StackError as exc:
        _unavailable("Redis", exc)
    yield url
    if ours and not os.environ.get("SEGMENTS_KEEP_STACK"):
        local.down()


@pytest.fixture
def topic_prefix() -> str:
    """Unique per test, so tests never see each other's topics, groups or Redis keys."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str, topic_prefix: str) -> Iterator[Settings]:
    """The test's settings; its topics are deleted afterwards, so a long suite does not
    pile thousands of partitions (and their file handles) onto the broker."""
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        redis_url=redis_url,
        topic_prefix=topic_prefix,
        partitions=4,
        secret_key=TEST_SECRET_KEY,
        auth_secret=TEST_AUTH_SECRET,
    )
    yield settings
    import asyncio

    from common.topics import delete_topics_with_prefix

    try:
        asyncio.run(delete_topics_with_prefix(settings, topic_prefix))
    except Exception as exc:  # cleanup only: never fail a test on it
        print(f"could not delete topics of {topic_prefix}: {exc}")


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """A client of the test's Redis; the test's keys (all under its unique prefix) are
    deleted afterwards. The one `redis` fixture of the suite: modules extend it by
    requesting it under the same name."""
    client = redis_client(settings)
    try:
        yield client
    finally:
        pattern = settings.topic_prefix.replace("[", "\\[").replace("*", "\\*") + "*"
        keys = [k async for k in client.scan_iter(match=pattern, count=1000)]
        if keys:
            await client.unlink(*keys)
        await client.aclose()
