"""The testcontainers Kafka of the suite (`tests/conftest.py`, when a Docker engine
answers): one KRaft broker configured so that Kafka transactions work on it.

A broker's defaults expect three: the transaction-state log at replication factor 3
with `min.insync.replicas` 2, so on one broker the first `InitProducerId` of an
exactly-once worker never completes. The container's own defaults cover the offsets
topic only.
"""

from __future__ import annotations

from typing import Any

from testcontainers.community.kafka import KafkaContainer

#: Broker settings (the image maps `KAFKA_X_Y` to `x.y`) a single broker needs.
SINGLE_BROKER_ENV = {
    "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
}


def single_broker_kafka(**kwargs: Any) -> KafkaContainer:
    """A KRaft Kafka container (not started); `kwargs` go to `KafkaContainer`."""
    container = KafkaContainer(**kwargs).with_kraft()
    for name, value in SINGLE_BROKER_ENV.items():
        container.with_env(name, value)
    return container
