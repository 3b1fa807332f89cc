"""Retractions, black-box (issue 14): signed webhooks into the connector, output read
from `segments.membership` to its end offsets, on 8 partitions with 2 workers.

A refund at 2024-10-28.acacia (its `refund.created` names no customer, so it is keyed to
another partition than the charge) later fails (`refund.updated`, `refund.failed`, each
posted twice as Stripe retries); a subscription's cancellation is scheduled, then undone
at 2025-09-30.clover. Each contact joins and then leaves, `cause: fact`, exactly once.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from common.settings import Settings
from common.topics import ensure_topics
from connectors.store import new_connection_id
from stream.app import StreamOptions, create_app
from tests.connector_harness import running_connector
from tests.integration.test_pipeline import Topics
from tests.integration.test_refund_attribution import PARTITIONS, SECRET, post
from tests.stripe_story import Story
from tests.waiting import async_wait_for
from tests.worker_runner import running

pytestmark = pytest.mark.integration


def story(now: int) -> tuple[list[dict[str, Any]], str, str]:
    s = Story(now - 3600, "2024-10-28.acacia", key=f"r{now}")
    charge = s.pay(s.customer("Refundee@Example.com"), 10_000)
    refund = s.refund(charge, 2_500)
    s.refund_fails(refund)
    s.version = "2025-09-30.clover"
    sub = s.subscribe(s.customer("quitter@example.com"), "price_basic", 1_500)
    s.schedule_cancel(sub)
    s.unschedule(sub)
    return s.events, refund.id, f"{sub.id}:cancelled"


async def test_a_failed_refund_and_an_undone_cancellation_leave_once(
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
                for rule_id, filter_id in (("refunded", "refunded"),
                                           ("cancelled", "subscription_cancelled")):
                    await topics.rule({"id": rule_id, "account_id": "acme", "name": rule_id,
                                       "filter": filter_id, "timezone": "UTC", "version": 1,
                                       "conditions": []}, "acme", rule_id)
                events, refund_id, cancel_id = story(int(time.time()))
                for event in events:
                    await post(connector, connection_id, event)
                    if event["type"] in ("refund.updated", "refund.failed"):
                        await post(connector, connection_id, event)  # a Stripe retry

                async def four() -> list[Any] | None:
                    found = await topics.changes()
                    return found if len(found) >= 4 else None

                await async_wait_for(four, 90, what="two joins and two leaves")
                changes = await topics.drained(90)
        got = sorted((c.segment_id, c.email, c.change, c.cause, c.fact_id) for c in changes)
        assert got == [
            ("cancelled", "quitter@example.com", "joined", "fact", cancel_id),
            ("cancelled", "quitter@example.com", "left", "fact", cancel_id),
            ("refunded", "refundee@example.com", "joined", "fact", refund_id),
            ("refunded", "refundee@example.com", "left", "fact", refund_id),
        ]
    finally:
        await topics.close()
