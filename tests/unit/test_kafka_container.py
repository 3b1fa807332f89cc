"""The testcontainers Kafka is configured for transactions on one broker, checked on the
container's configuration (no Docker engine is needed: nothing is started)."""

from __future__ import annotations

import pytest

from tests.kafka_container import single_broker_kafka

pytestmark = pytest.mark.unit


def test_transactions_work_on_one_broker() -> None:
    # An explicit API version: the Docker client then asks no engine for one.
    container = single_broker_kafka(docker_client_kw={"version": "1.41"})
    assert container.kraft_enabled
    for name in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                 "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                 "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert container.env.get(name) == "1", name
