"""`segments rules add|list|show|delete` as a user runs them, on the real broker."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from common.settings import Settings
from common.topics import RULES_TOPIC
from segments.cli import main
from segments.rules_admin import ensure_rules_topic, read_rules

pytestmark = pytest.mark.integration

RULE: dict[str, Any] = {
    "id": "big-refunds", "account_id": "acme", "name": "Refunded over $50 this month",
    "filter": "refunded",
    "conditions": [
        {"field": "refund_amount", "op": "gt", "value": "50"},
        {"field": "currency", "op": "in", "value": ["usd", "eur"]},
        {"field": "date", "op": "within_last", "value": {"count": 30, "unit": "days"}},
    ],
    "timezone": "UTC",
}


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    monkeypatch.setenv("SEGMENTS_TOPIC_PREFIX", settings.topic_prefix)
    return settings


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["rules", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def add(capsys: pytest.CaptureFixture[str], tmp_path: Path, doc: dict[str, Any]) -> str:
    path = tmp_path / f"{doc['account_id']}-{doc['id']}.json"
    path.write_text(json.dumps(doc))
    code, out, err = run(capsys, "add", str(path))
    assert code == 0, err
    return out


def listed(capsys: pytest.CaptureFixture[str], *argv: str) -> list[list[str]]:
    code, out, err = run(capsys, "list", *argv)
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["ACCOUNT", "ID", "FILTER", "VERSION", "NAME"]
    return [row.split(None, 4) for row in rows]


def test_add_list_show_delete_round_trip(
    env: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert "stored rule big-refunds (account acme) version 1" in add(capsys, tmp_path, RULE)
    assert listed(capsys) == [["acme", "big-refunds", "refunded", "1", RULE["name"]]]

    # A change (with a stale version in the input) becomes version 2.
    changed = {**RULE, "name": "Refunded over $60", "version": 7}
    changed["conditions"] = [{"field": "refund_amount", "op": "gt", "value": "60"}]
    assert "version 2" in add(capsys, tmp_path, changed)
    assert listed(capsys) == [["acme", "big-refunds", "refunded", "2", "Refunded over $60"]]

    code, out, _ = run(capsys, "show", "big-refunds", "--account", "acme")
    assert code == 0
    doc = json.loads(out)
    assert doc["version"] == 2
    assert doc["conditions"] == [{"field": "refund_amount", "op": "gt", "value": "60"}]

    code, _, _ = run(capsys, "delete", "big-refunds", "--account", "acme")
    assert code == 0
    assert listed(capsys) == []
    code, _, err = run(capsys, "delete", "big-refunds", "--account", "acme")
    assert code == 1
    assert "no rule 'big-refunds'" in err
    code, _, _ = run(capsys, "show", "big-refunds", "--account", "acme")
    assert code == 1


def test_same_id_in_two_accounts_coexist(
    env: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    add(capsys, tmp_path, RULE)
    add(capsys, tmp_path, {**RULE, "account_id": "globex", "name": "Globex refunds"})
    assert [row[:4] for row in listed(capsys)] == [
        ["acme", "big-refunds", "refunded", "1"],
        ["globex", "big-refunds", "refunded", "1"],
    ]
    assert [row[0] for row in listed(capsys, "--account", "globex")] == ["globex"]

    code, _, _ = run(capsys, "delete", "big-refunds", "--account", "acme")
    assert code == 0
    assert [row[0] for row in listed(capsys)] == ["globex"]


def test_invalid_rule_reports_every_problem_and_publishes_nothing(
    env: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asyncio.run(ensure_rules_topic(env))
    bad = {
        "id": "bad", "account_id": "acme", "name": "bad", "filter": "charge_failed",
        "conditions": [
            {"field": "refund_amount", "op": "gt", "value": "5"},
            {"field": "amount", "op": "between", "value": ["9", "1"]},
            {"field": "currency", "op": "in", "value": ["zzz"]},
        ],
        "timezone": "Mars/Olympus",
    }
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(bad)))
    code, out, err = run(capsys, "add", "-")
    assert code == 2
    assert out == ""
    for where in ("/timezone:", "/conditions/0", "/conditions/1/value:", "/conditions/2/value"):
        assert where in err
    assert _end_offset(env) == 0
    assert asyncio.run(read_rules(env)) == {}


def test_kafka_unreachable_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    code, out, err = run(capsys, "list")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert "unavailable" in err


def _end_offset(settings: Settings) -> int:
    async def end() -> int:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
        await consumer.start()
        try:
            tp = TopicPartition(settings.topic(RULES_TOPIC), 0)
            return int((await consumer.end_offsets([tp]))[tp])
        finally:
            await consumer.stop()

    return asyncio.run(end())
