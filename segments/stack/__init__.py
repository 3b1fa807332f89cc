"""The local stack (`segments stack up|down|status`): real Kafka and Redis, no Docker."""

from __future__ import annotations

import os
from pathlib import Path

from segments.stack.kafka import KAFKA_VERSION, LocalKafka
from segments.stack.processes import StackError
from segments.stack.redis_server import LocalRedis

__all__ = ["KAFKA_VERSION", "LocalKafka", "LocalRedis", "StackError", "stack_dir"]


def stack_dir() -> Path:
    """Where jars, data and logs live: SEGMENTS_STACK_DIR, else ./.stack (git-ignored)."""
    return Path(os.environ.get("SEGMENTS_STACK_DIR") or Path.cwd() / ".stack").resolve()
