"""The CLI's side of rules on `segments.rules`: validate, then write through the API's
writer (`serving.rules_store`), so the CLI and the query API assign versions the same
way and are serialised against each other per segment.

The topic is the only store of rules: one record per (account, rule id), the canonical
rule document as value, a tombstone on delete. Writes are committed (acks=all) before
a command returns.
"""

from __future__ import annotations

from collections.abc import Mapping

from common.settings import Settings
from rules import Rule, parse_rule
from serving.rules_store import (
    RuleKey,
    RuleNotFound,
    ensure_rules_topic,
    put_rule,
    read_rules,
)
from serving.rules_store import delete_rule as _delete

__all__ = ["RuleKey", "delete_rule", "ensure_rules_topic", "publish_rule", "read_rules"]


async def publish_rule(settings: Settings, doc: object) -> Rule:
    """Validate `doc` and store it as the rule's next version; returns the stored rule.

    Raises `rules.RuleError` (and publishes nothing) when the document is invalid. Any
    `version` in `doc` is ignored: it is the previous version + 1, or 1 for a new rule.
    """
    if isinstance(doc, Mapping):
        doc = {k: v for k, v in doc.items() if k != "version"}
    rule = parse_rule(doc)
    return (await put_rule(settings, rule)).rule


async def delete_rule(settings: Settings, account_id: str, rule_id: str) -> bool:
    """Publish a tombstone for the rule; False (and nothing written) if there is none."""
    try:
        await _delete(settings, account_id, rule_id)
    except RuleNotFound:
        return False
    return True
