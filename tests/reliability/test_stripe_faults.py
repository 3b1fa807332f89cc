"""The 30-day backfill through a Stripe that fails: 429s, 500s, timeouts, dropped and
truncated connections, injected at random by a proxy in front of localstripe.

For each seed the backfill (one `run_backfill` call, as the connector makes it) must
finish, and the raw-event topic must hold every needed event of the fault-free listing
exactly once, untouched. Fault counts per kind are printed and recorded in
docs/reliability.md.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis
import stripe

from common.settings import Settings
from common.stripe_event_types import NEEDED_EVENT_TYPES
from common.topics import ensure_topics
from connectors.backfill import BackfillJob, BackfillOptions, read_progress, run_backfill
from connectors.sink import KafkaEventSink
from tests.integration.test_backfill import topic_contents
from tests.localstripe_server import running_localstripe
from tests.reliability.fault_proxy import FaultProxy
from tests.reliability.ledger import LEDGER
from tests.stripe_activity import flush, make_activity

pytestmark = pytest.mark.reliability

RATES = {"429": 0.08, "500": 0.08, "timeout": 0.03, "drop": 0.06, "truncate": 0.06}
OPTIONS = BackfillOptions(rate_per_s=500, settle_s=0, overlap_s=0, page_size=5, slice_cap=20,
                          max_in_flight=50, request_timeout_s=0.5)


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """stripe-python waits 0.5 s or more before each retry; a tenth of that keeps the
    same retry sequence (and the same number of faults met) in a test-sized time."""
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.05)
    monkeypatch.setattr(stripe.HTTPClient, "MAX_DELAY", 0.5)
TOTALS: Counter[str] = Counter()


@pytest.fixture(scope="module")
def stripe_events() -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """localstripe with one account's activity; the needed events as listed without faults."""
    key = LEDGER.api_key()
    with running_localstripe() as base:
        flush(base)
        client = stripe.StripeClient(key, base_addresses={"api": base})
        make_activity(client, 10, tag="f")
        listing = client.v1.events.list(params={"limit": 100})
        events = [e.to_dict() for e in listing.auto_paging_iter()]
        yield base, key, [e for e in events if e["type"] in NEEDED_EVENT_TYPES]


@pytest.fixture
async def redis(redis: aioredis.Redis, settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """The suite's `redis`, and afterwards no stored value holds a secret in clear."""
    yield redis
    async for key in redis.scan_iter(match=f"{settings.topic_prefix}*"):
        LEDGER.check_bytes("redis value", await redis.dump(key))


OUTAGE = {fault: rate * 1.6 for fault, rate in RATES.items()}


@pytest.mark.parametrize(("seed", "in_a_row", "rates"),
                         [(1, 2, RATES), (2, 2, RATES), (3, 2, RATES), (4, 8, OUTAGE)])
async def test_backfill_through_faults_lands_every_event_once(
        settings: Settings, stripe_events: tuple[str, str, list[dict[str, Any]]],
        redis: aioredis.Redis, seed: int, in_a_row: int, rates: dict[str, float]) -> None:
    """Up to 2 faults in a row: the library's retries ride them out, one run finishes.
    Up to 8 in a row, half the requests failing (an outage): runs stop; each is resumed,
    as the connector does after a restart, and the cursor makes the runs together publish
    each event once."""
    base, key, expected = stripe_events
    proxy = FaultProxy(base, seed=seed, rates=rates, hold_s=0.8, max_faults_in_a_row=in_a_row)
    url = await proxy.start()
    stopped: list[str] = []
    try:
        settings = replace(settings, stripe_api_base=url)
        await ensure_topics(settings)
        job = BackfillJob(f"conn_{uuid.uuid4().hex[:24]}", "acme", key,
                          since=int(time.time()) - 3600)
        started = time.monotonic()
        async with KafkaEventSink(settings) as sink:
            for _ in range(20):
                try:
                    final = await run_backfill(job, settings=settings, sink=sink,
                                               redis=redis, options=OPTIONS)
                    break
                except stripe.StripeError as exc:
                    stopped.append(type(exc).__name__)
            else:
                pytest.fail(f"the backfill never finished: {stopped}")
        took = time.monotonic() - started
    finally:
        await proxy.stop()
    if in_a_row <= 2:
        assert stopped == [], "the library's retries must ride out short faults"

    assert final.state == "done", final
    produced = await topic_contents(settings)
    counts = Counter(e.event_id for e in produced)
    assert {i: n for i, n in counts.items() if n > 1} == {}, "produced more than once"
    assert set(counts) == {str(e["id"]) for e in expected}, "missing or extra events"
    by_id = {str(e["id"]): e for e in expected}
    assert all(e.event == by_id[e.event_id] for e in produced), "events must be untouched"
    stored = await read_progress(redis, settings, job.connection_id)
    assert stored is not None
    assert stored.events == len(expected)
    for event in produced:
        LEDGER.check_bytes("topic message", event.to_bytes())
    faults = {k: v for k, v in proxy.counts.items() if k not in ("requests", "forwarded")}
    TOTALS.update(proxy.counts)
    TOTALS["events"] += len(expected)
    TOTALS["runs"] += final.runs
    print(f"stripe faults seed {seed}: {proxy.counts['requests']} requests, faults {faults}, "
          f"{len(expected)} events once each, {final.runs} run(s) (stopped by {stopped}), "
          f"{took:.1f}s")


def test_zz_report_totals() -> None:
    print("stripe faults, all seeds:", dict(TOTALS))
