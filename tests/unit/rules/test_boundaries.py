"""rules/ stands alone: it imports nothing of ours and no broker, and the facts the
stream produces fit its FactView protocol."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import rules

pytestmark = pytest.mark.unit

RULES_DIR = Path(rules.__file__).parent
FORBIDDEN = {
    "stream",
    "connectors",
    "segments",
    "faust",
    "mode",
    "aiokafka",
    "kafka",
    "stripe",
    "redis",
}
MAX_LINES = 400


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted(RULES_DIR.glob("*.py")), ids=lambda p: p.name)
def test_rules_modules_import_nothing_of_ours_nor_a_broker(path: Path) -> None:
    assert not _imported_roots(path) & FORBIDDEN
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_public_api() -> None:
    assert set(rules.__all__) >= {
        "parse_rule",
        "Rule",
        "RuleError",
        "FieldError",
        "matches",
        "is_member",
        "next_change",
        "RuleIndex",
        "FactView",
        "FILTERS",
    }


def test_stream_facts_fit_the_rules_fact_protocol() -> None:
    from stream import facts

    names = {field.name for field in dataclasses.fields(facts.Fact)}
    wanted = {name for name in dir(rules.FactView) if not name.startswith("_")}
    assert wanted <= names
    fact = facts.Fact(
        fact_id="ch_1:failed",
        filter="charge_failed",
        account_id="acme",
        connection_id="conn",
        email="ann@example.com",
        occurred_at=1_780_000_000,
        amount=500,
        currency="usd",
    )
    rule = rules.parse_rule(
        {
            "id": "seg",
            "account_id": "acme",
            "name": "n",
            "filter": "charge_failed",
            "conditions": [{"field": "amount", "op": "eq", "value": "5"}],
        }
    )
    assert rules.matches(rule, fact, fact.occurred_at)
