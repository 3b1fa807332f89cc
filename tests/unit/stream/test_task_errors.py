"""Which errors lose a task (rejoin) and which stop the worker."""

from __future__ import annotations

import pytest
from aiokafka.errors import (
    CommitFailedError,
    IllegalOperation,
    KafkaError,
    ProducerFenced,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnknownError,
)

from stream.task import migrated

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("exc", [ProducerFenced(), CommitFailedError("rebalanced"),
                                 IllegalOperation("not in transaction"), UnknownError(),
                                 KafkaError("Unexpected error during batch delivery")])
def test_a_moved_partition_or_a_failed_write_loses_the_task(exc: BaseException) -> None:
    assert migrated(exc)


@pytest.mark.parametrize("exc", [TopicAuthorizationFailedError(),
                                 TransactionalIdAuthorizationFailed(),
                                 ValueError("a bug"), KeyError("a bug")])
def test_what_no_rejoin_can_mend_stops_the_worker(exc: BaseException) -> None:
    assert not migrated(exc)
