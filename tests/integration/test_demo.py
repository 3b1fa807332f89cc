"""The README's main job, as CI runs it: `segments demo --once` fills every segment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from segments.settings import Settings

pytestmark = pytest.mark.integration


def test_demo_once_fills_every_segment(settings: Settings) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "REDIS_URL": settings.redis_url, "SEGMENTS_TOPIC_PREFIX": settings.topic_prefix}
    result = subprocess.run(
        [sys.executable, "-m", "segments.cli", "demo", "--once", "--customers", "80",
         "--timeout", "120"],
        env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "summary: 6/6 segments have members" in result.stdout
