"""Refunds at current API versions reach a `refunded` segment (issue 14), black-box.

Signed webhooks into the connector, rendered as Stripe renders them at
2024-10-28.acacia: the charge (with a customer and the payer's billing email) in
`charge.succeeded`, and each refund in its own `refund.created`, whose refund object names
the charge and the payment intent but not the customer. The connector keys the refund's
raw event by payment intent and the charge's by customer, so (as the test checks) they
land on different partitions of 8, read by 2 workers. Six refunds must make six
`joined` on `segments.membership`, read to the end offsets; two of the refunds are
posted before their charge (Stripe does not guarantee order).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import orjson
import pytest

from common.settings import Settings
from common.topics import ensure_topics
from connectors.contract import message_key
from connectors.store import new_connection_id
from stream.app import StreamOptions, create_app
from stream.partitioning import partition_for
from tests import stripe_events as se
from tests.connector_harness import Connector, running_connector
from tests.integration.test_pipeline import Topics
from tests.stripe_signing import sign
from tests.waiting import async_wait_for
from tests.worker_runner import running

pytestmark = pytest.mark.integration
ACACIA = "2024-10-28.acacia"
SECRET = "whsec_test_refunds_0123456789"
PARTITIONS = 8


async def post(connector: Connector, connection_id: str, event: dict[str, Any]) -> None:
    body = orjson.dumps(event)
    status, answer = await connector.post_webhook(
        connection_id, body, {"Stripe-Signature": sign(body, SECRET),
                              "Content-Type": "application/json"})
    assert (status, answer) == (200, {"received": True})


def payment(connection_id: str, n: int, now: int) -> tuple[dict[str, Any], dict[str, Any],
                                                           dict[str, Any]]:
    """charge.succeeded, charge.refunded and refund.created at acacia, for payer n; the
    customer is picked so that the charge's and the refund's events are keyed to
    different partitions."""
    ch = se.charge(amount=10_000, billing_email=f"Payer{n}@Example.com", created=now - 120,
                   amount_refunded=0, refunded=False)
    for i in range(100):
        ch["customer"] = f"cus_payer{n}x{i}"
        paid = se.event("charge.succeeded", ch, api_version=ACACIA, created=now - 120)
        (refunded, created), = se.refund_events(ch | {}, [2_500], api_version=ACACIA)
        if partition_for(message_key(connection_id, paid), PARTITIONS) != partition_for(
                message_key(connection_id, created), PARTITIONS):
            break
    refund = created["data"]["object"]
    assert refund.get("customer") is None
    assert refund["charge"] == ch["id"]
    for event in (refunded, created):
        event["created"] = now - 60
    refund["created"] = now - 60
    return paid, refunded, created


async def test_six_refunds_join_a_refunded_segment_on_8_partitions_2_workers(
        settings: Settings) -> None:
    s = replace(settings, partitions=PARTITIONS)
    await ensure_topics(s)
    topics = Topics(s)
    await topics.producer.start()
    try:
        async with running_connector(s) as connector:
            connection_id = new_connection_id()
            await connector.store.create(
                connection_id=connection_id, account_id="acme", api_key="sk_test_not_used",
                webhook_secret=SECRET, registration="manual", webhook_endpoint_id=None)
            workers = [create_app(s, StreamOptions()) for _ in range(2)]
            async with running(workers[0]), running(workers[1]):
                async def split() -> bool:
                    mine = [w.assigned() for w in workers]
                    return all(mine) and set().union(*mine) == set(range(PARTITIONS))

                await async_wait_for(split, 60, what="8 partitions over 2 workers")
                await topics.rule({
                    "id": "refunded", "account_id": "acme", "name": "refunded",
                    "filter": "refunded", "timezone": "UTC", "version": 1,
                    "conditions": [{"field": "amount", "op": "gt", "value": "50"},
                                   {"field": "refund_amount", "op": "eq", "value": "25"}],
                }, "acme", "refunded")
                now = int(time.time())
                for n in range(6):
                    paid, refunded, created = payment(connection_id, n, now)
                    order = [paid, refunded, created] if n >= 2 else [created, paid, refunded]
                    for event in order:
                        await post(connector, connection_id, event)
                    await post(connector, connection_id, created)  # a Stripe retry

                async def six() -> list[Any] | None:
                    joined = [c for c in await topics.changes() if c.change == "joined"]
                    return joined if len(joined) >= 6 else None

                await async_wait_for(six, 90, what="six joined")
                changes = await topics.drained(90)
        got = sorted((c.segment_id, c.email, c.change, c.cause) for c in changes)
        assert got == [("refunded", f"payer{n}@example.com", "joined", "fact")
                       for n in range(6)]
        facts = [orjson.loads(r.value) for r in await topics.read_to_end("stripe.facts")]
        refunds = [f for f in facts if f["filter"] == "refunded"]
        assert sorted((f["email"], f["amount"], f["refund_amount"]) for f in refunds) == [
            (f"payer{n}@example.com", 10_000, 2_500) for n in range(6)]
    finally:
        await topics.close()
