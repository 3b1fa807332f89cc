"""Interactive queries over the state of one partition: preview a rule, explain a member.

Pure (no I/O, `as_of` is an argument), so unit tests pin every instant; the worker's
query server (`stream.query_server`) calls these on the partitions it owns, and the
query API merges their answers (`serving.interactive`).

Exactness: a rule saved at `as_of` is computed by `stream.membership.on_rule` from
the same held facts (`ContactState.facts_for(rule.filter)`) of the same contacts
(`PartitionState.contacts_by_account`), with `rules.evaluate`; `preview` evaluates
exactly that, so its count is the number of members the saved rule then has.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules import Rule, evaluate, failed_conditions, is_member, matches
from stream.changes import iso
from stream.facts import Fact
from stream.membership import ContactState
from stream.partition_state import PartitionState

#: Emails a preview shows (each partition sends its smallest, the API keeps the smallest).
SAMPLE_SIZE = 20


@dataclass(frozen=True, slots=True)
class Preview:
    count: int
    #: The `sample_size` alphabetically first members' emails.
    sample: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sample": self.sample}


def preview(partition_state: PartitionState, contacts: Mapping[str, ContactState], rule: Rule,
            as_of: int, sample_size: int = SAMPLE_SIZE) -> Preview:
    """Members `rule` would have on this partition if it were saved at `as_of`."""
    members: list[str] = []
    get, filter_id = contacts.get, rule.filter
    for key in partition_state.contacts_by_account.get(rule.account_id, ()):
        contact = get(key)
        if contact is None:
            continue
        # `contact.facts_for(rule.filter)` without copying it into a tuple (this loop
        # visits every contact of the account). As `stream.membership._decide` decides
        # a saved rule: its `evaluate(...)[0]` is `is_member` (tests/unit/rules),
        # without the next change it also computes.
        facts = contact.facts.get(filter_id)
        if facts and is_member(rule, facts.values(), as_of):
            members.append(contact.email)
    return Preview(len(members), heapq.nsmallest(sample_size, members))


def merge(previews: list[Preview], sample_size: int = SAMPLE_SIZE) -> Preview:
    """One answer from every partition's (partitions hold disjoint contacts)."""
    count = sum(part.count for part in previews)
    emails = heapq.nsmallest(sample_size, (email for part in previews for email in part.sample))
    return Preview(count, emails)


def explain(contact: ContactState | None, rule: Rule, as_of: int) -> dict[str, Any]:
    """Whether the contact is a member at `as_of`, every fact held for the rule's filter
    with the indexes of the conditions it fails, and when time alone changes the answer.
    `since` is left to the caller (the read model knows when the contact joined)."""
    facts = contact.facts_for(rule.filter) if contact is not None else ()
    member, due = evaluate(rule, facts, as_of) if facts else (False, None)
    ordered = sorted(facts, key=lambda f: (f.occurred_at, f.fact_id), reverse=True)
    return {
        "member": member,
        "facts": [_fact_doc(rule, fact, as_of) for fact in ordered],
        "next_change_at": iso(due) if due is not None else None,
    }


def _fact_doc(rule: Rule, fact: Fact, as_of: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "fact_id": fact.fact_id,
        "filter": fact.filter,
        "occurred_at": iso(fact.occurred_at),
        "amount": fact.amount,
        "currency": fact.currency,
    }
    if fact.refund_amount is not None:
        doc["refund_amount"] = fact.refund_amount
    if fact.plans:
        doc["plan"] = list(fact.plans)
    if fact.start_date is not None:
        doc["start_date"] = iso(fact.start_date)
    if fact.end_date is not None:
        doc["end_date"] = iso(fact.end_date)
    doc["stripe_event_ids"] = stripe_event_ids(fact)
    doc["qualifies"] = matches(rule, fact, as_of)
    doc["failed_conditions"] = list(failed_conditions(rule, fact, as_of))
    return doc


def stripe_event_ids(fact: Fact) -> list[str]:
    """The Stripe events the fact was made from: the one that announced it (its
    siblings and retries collapse into it before the fact exists)."""
    return [fact.source_event_id] if fact.source_event_id else []
