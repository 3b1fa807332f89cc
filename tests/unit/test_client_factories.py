"""Every Kafka and Redis client of the project comes from its one factory, so that none
can miss the transport security (`common/kafka.py`) or the Redis URL (`common/redis_client.py`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "connectors", "stream", "serving", "segments")
DIRECT = re.compile(r"\b(AIOKafka(Producer|Consumer|AdminClient|Client)\(|from_url\(|from_pool\()")
FACTORIES = {ROOT / "common" / "kafka.py", ROOT / "common" / "redis_client.py"}


def test_no_client_is_made_outside_the_factories() -> None:
    found = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path in FACTORIES:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if DIRECT.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert found == []


def test_the_check_sees_a_direct_client() -> None:
    assert DIRECT.search("    producer = AIOKafkaProducer(bootstrap_servers=b)")
    assert DIRECT.search("redis = aioredis.Redis.from_url(url)")
