"""`docs/operations.md` names only metrics and settings that exist, and states the
retention `common/topics.py` declares."""

from __future__ import annotations

import re
from pathlib import Path

from common.topics import DAY_MS, TOPICS

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "operations.md").read_text()
METRIC_SOURCES = ("connectors/metrics.py", "stream/metrics.py", "serving/metrics.py",
                  "segments/lag.py")


def test_every_metric_named_exists() -> None:
    code = "".join((REPO / path).read_text() for path in METRIC_SOURCES)
    named = set(re.findall(r"`(segments_[a-z_]+)", DOC))
    assert len(named) > 10
    assert sorted(m for m in named if f'"{m}"' not in code) == []


def test_every_setting_named_is_read_somewhere() -> None:
    code = "".join(p.read_text() for package in ("common", "connectors", "stream", "serving",
                                                 "segments")
                   for p in (REPO / package).rglob("*.py"))
    named = set(re.findall(r"`(SEGMENTS_[A-Z_]+)`", DOC))
    assert sorted(s for s in named if f'"{s}"' not in code) == []


def test_the_retention_table_matches_the_topic_specs() -> None:
    rows = dict(re.findall(r"^\| `([a-z.\-]+)` \| delete \| (\d+) days? \|$", DOC, re.M))
    deleting = {spec.name: spec.retention_ms for spec in TOPICS if not spec.compacted}
    assert set(rows) == set(deleting)
    assert {name: int(days) * DAY_MS for name, days in rows.items()} == deleting
    assert "docs/operations.md" in (REPO / "README.md").read_text()
