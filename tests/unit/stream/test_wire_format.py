"""The facts and membership topics' bytes are a contract: the fast encoders keep them."""

from __future__ import annotations

from dataclasses import asdict, fields

import orjson
import pytest

from stream.changes import MembershipChange
from stream.facts import Fact

pytestmark = pytest.mark.unit


def _reference(fact: Fact) -> dict[str, object]:
    doc = asdict(fact)
    doc["plans"] = list(fact.plans)
    if not fact.retracted:
        del doc["retracted"]  # only retractions carry the flag (issue 14)
    return doc


@pytest.mark.parametrize("fact", [
    Fact("ch_1:succeeded", "charge_succeeded", "acme", "conn1", "ann@example.com", 1_700_000_000,
         customer_id="cus_1", amount=1000, currency="usd", source_event_id="evt_1",
         source_event_type="charge.succeeded"),
    Fact("sub_1:changed:evt_2", "subscription_changed", "acme", "conn1", "bob@example.com",
         1_700_000_100, plans=("price_1", "prod_1"), start_date=1_690_000_000,
         end_date=1_710_000_000),
    Fact("re_1", "refunded", "acme", "conn1", "cy@example.com", 1, amount=5000, currency="jpy",
         refund_amount=2500),
])
def test_fact_encoding_is_unchanged(fact: Fact) -> None:
    assert list(fact.to_dict()) == [f.name for f in fields(Fact) if f.name != "retracted"]
    assert fact.to_dict() == _reference(fact)
    assert fact.to_bytes() == orjson.dumps(_reference(fact))
    assert Fact.from_bytes(fact.to_bytes()) == fact


def test_a_retraction_is_a_fact_with_the_flag() -> None:
    fact = Fact("re_1", "refunded", "acme", "conn1", "cy@example.com", 1, refund_amount=2500,
                retracted=True)
    assert fact.to_dict() == _reference(fact)
    assert fact.to_dict()["retracted"] is True
    assert Fact.from_bytes(fact.to_bytes()) == fact


@pytest.mark.parametrize("change", [
    MembershipChange("acme", "big", "ann@example.com", "joined", "2026-11-26T23:00:00Z", "fact",
                     "re_3Q", 2),
    MembershipChange("acme", "big", "ann@example.com", "left", "2026-11-26T23:00:00Z", "rule",
                     None, 1),
])
def test_membership_change_encoding_is_unchanged(change: MembershipChange) -> None:
    assert change.to_bytes() == orjson.dumps(asdict(change))
    assert MembershipChange.from_bytes(change.to_bytes()) == change
