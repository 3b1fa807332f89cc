"""The local stack (`segments stack up|down|status`): real Kafka and Redis, no Docker."""

from __future__ import annotations

from common.environment import stack_dir
from segments.stack.kafka import KAFKA_VERSION, LocalKafka
from segments.stack.processes import StackError
from segments.stack.redis_server import LocalRedis

__all__ = ["KAFKA_VERSION", "LocalKafka", "LocalRedis", "StackError", "stack_dir"]
