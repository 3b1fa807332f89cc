"""How fast does the backfill move events from the Events API onto Kafka?

Seeds localstripe (run as a real server on loopback) with real activity through the
official library, then runs `run_backfill` onto a fresh prefixed `stripe.events` topic
on the local Kafka (acks=all), with:

* the default pacing (20 requests/s) and 100 events a page: what a test-mode account
  sees, bounded by 20 x 100 = 2,000 events/s;
* pacing lifted (1,000 requests/s): the engine's own ceiling here (localstripe's
  listing, JSON, Kafka acks);
* the same, publishing strictly one event at a time (`max_in_flight=1`), which is what
  per-key concurrency buys.

Stripe's own limits bound a real backfill: live mode ~100 requests/s x 100 events a
page = 10,000 events/s; test mode 25 x 100 = 2,500 events/s (we pace at 20: 2,000).
localstripe lists every event type (it refuses `types[]`), so its pages carry events we
drop; the figures count only the events produced.

Run: `segments stack up` (Kafka and Redis), then `python bench/bench_backfill.py
[customers] [--repeats N] [--json FILE]` (default 250 customers, about 1,100 produced
events; each configuration is run N times over the same seeded localstripe).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis
import stripe

from common.settings import Settings
from common.topics import ensure_topics
from connectors.backfill import BackfillJob, BackfillOptions, run_backfill
from connectors.sink import KafkaEventSink
from tests.localstripe_server import running_localstripe
from tests.stripe_activity import make_activity

KEY = "sk_test_bench_0123456789"


async def one_run(base: str, label: str, options: BackfillOptions) -> dict[str, float]:
    env = Settings.from_env()
    settings = Settings(**{**env.__dict__, "stripe_api_base": base,
                           "topic_prefix": f"bench{uuid.uuid4().hex[:8]}."})
    await ensure_topics(settings)
    redis = aioredis.from_url(settings.redis_url)
    job = BackfillJob(f"conn_{uuid.uuid4().hex[:24]}", "bench", KEY,
                      since=int(time.time()) - 3600)
    try:
        async with KafkaEventSink(settings) as sink:
            started = time.perf_counter()
            final = await run_backfill(job, settings=settings, sink=sink, redis=redis,
                                       options=options)
            elapsed = time.perf_counter() - started
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{settings.topic_prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
    print(f"{label:<44} {final.events:>6} events {final.pages:>5} pages "
          f"{elapsed:>7.2f} s {final.events / elapsed:>9,.0f} events/s "
          f"{final.pages / elapsed:>6.1f} req/s", flush=True)
    return {"events": final.events, "pages": final.pages, "seconds": elapsed,
            "events_per_s": final.events / elapsed, "requests_per_s": final.pages / elapsed}


CONFIGS = {
    "paced": ("paced 20 req/s (default), 100/page", {}),
    "unpaced": ("unpaced (1000 req/s), 100/page", {"rate_per_s": 1000}),
    "sequential": ("unpaced, strictly sequential publish",
                   {"rate_per_s": 1000, "max_in_flight": 1}),
}


async def main(customers: int, repeats: int = 1) -> dict[str, list[dict[str, float]]]:
    with running_localstripe() as base:
        client = stripe.StripeClient(KEY, base_addresses={"api": base})
        started = time.perf_counter()
        make_activity(client, customers)
        listed = sum(1 for _ in client.v1.events.list(params={"limit": 100})
                     .auto_paging_iter())
        print(f"seeded {customers} customers, {listed} events in localstripe "
              f"({time.perf_counter() - started:.1f} s)")
        base_options: dict[str, Any] = {"settle_s": 0, "overlap_s": 0, "warm_customers": False}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
        for _ in range(repeats):
            for name, (label, options) in CONFIGS.items():
                results[name].append(await one_run(
                    base, label, BackfillOptions(**{**base_options, **options})))
    print("bounds from Stripe's limits: live 100 req/s x 100 = 10,000 events/s; "
          "test 25 x 100 = 2,500 (paced at 20: 2,000)")
    return results


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("customers", type=int, nargs="?", default=250)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    out = asyncio.run(main(args.customers, args.repeats))
    if args.json is not None:
        args.json.write_text(json.dumps({"customers": args.customers, "runs": out}, indent=2))
