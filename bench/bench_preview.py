"""Preview and explain latency: the query API fanning out to two workers' query endpoints.

    python bench/bench_preview.py [--contacts 100000] [--partitions 8] [--previews 200]
        [--explains 1000] [--runs 3] [--json FILE]

On a fresh topic prefix with `--partitions` partitions: two `segments worker` processes
(at-least-once, each with its query endpoint on a free port, advertised in Redis), one
account holding every contact, two `charge_failed` facts per contact produced to
`stripe.facts` (the membership stream's input contract), and a saved rule (so explain
has a segment). The query API runs in this process. Once a preview answers the count
the data implies (every fact held by its owner), each run sends `--previews` previews
(a rule over every contact of the account: each worker evaluates it over all its
contacts) and `--explains` explanations of random contacts, one request at a time,
and records each latency end to end (HTTP included). Targets: preview p99 < 1 s,
explain p99 < 200 ms, for 100,000 contacts on 8 partitions and 2 workers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench import common
from common.auth import mint_token
from common.topics import FACTS_TOPIC
from segments.rules_admin import publish_rule
from serving.server import ApiProcess
from stream.facts import Fact

log = common.log
ACCOUNT = "bench-acct"
DAY = 86_400
RULE = {"name": "failed over $50 in usd, last 30 days", "filter": "charge_failed",
        "conditions": [{"field": "amount", "op": "gt", "value": "50"},
                       {"field": "currency", "op": "is", "value": "usd"},
                       {"field": "date", "op": "within_last",
                        "value": {"count": 30, "unit": "days"}}]}


def facts(contacts: int, now: int) -> tuple[list[tuple[bytes, bytes]], int]:
    """Two failed charges per contact; returns the messages and the rule's member count."""
    rng = random.Random(17)
    messages, members = [], 0
    for i in range(contacts):
        email = f"c{i:07d}@bench.example"
        qualifies = False
        for j in range(2):
            amount = rng.randrange(100, 10_000)
            currency = rng.choice(("usd", "eur"))
            fact = Fact(f"ch_{i}_{j}:failed", "charge_failed", ACCOUNT, "conn1", email,
                        now - rng.randrange(DAY, 20 * DAY), amount=amount,
                        currency=currency, source_event_id=f"evt_{i}_{j}",
                        source_event_type="charge.failed")
            qualifies |= amount > 5000 and currency == "usd"
            messages.append((fact.key(), fact.to_bytes()))
        members += qualifies
    return messages, members


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _timed(http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str],
                 **kw: Any) -> tuple[float, int, Any]:
    started = time.perf_counter()
    async with http.request(method, url, headers=headers, **kw) as resp:
        body = await resp.json()
        return time.perf_counter() - started, resp.status, body


async def measure(contacts: int, partitions: int, previews: int, explains: int,
                  runs: int) -> dict[str, Any]:
    secret = secrets.token_urlsafe(48)
    settings = replace(common.fresh_settings(partitions, "benchpv"), auth_secret=secret)
    await common.prepare_topics(settings)
    env = {**common.worker_env(settings), "SEGMENTS_AUTH_SECRET": secret}
    logdir = Path(tempfile.mkdtemp(prefix="bench-preview-"))
    cmd = [sys.executable, "-m", "segments.cli", "worker", "--at-least-once",
           "--no-email-lookup", "--query-port", "0"]
    workers = [common.start_process(cmd, env, logdir / f"worker{i}.log") for i in range(2)]
    headers = {"Authorization": f"Bearer {mint_token(secret, accounts=[ACCOUNT])}"}
    try:
        now = int(time.time())
        messages, expected = facts(contacts, now)
        t0 = time.perf_counter()
        await common.produce(settings, FACTS_TOPIC, messages)
        log(f"produced {len(messages):,} facts in {time.perf_counter() - t0:.1f}s; "
            f"{expected:,} members expected")
        await publish_rule(settings, {**RULE, "id": "big", "account_id": ACCOUNT})
        async with ApiProcess(settings, port=0) as api, aiohttp.ClientSession() as http:
            base = f"{api.url}/accounts/{ACCOUNT}/segments"
            deadline = time.monotonic() + 600
            while True:  # until both workers hold every fact and serve every partition
                _, status, body = await _timed(http, "POST", base + "/preview", headers,
                                               json=RULE)
                if status == 200 and body["count"] == expected:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"preview never reached {expected}: {status} {body}")
                if any(w.poll() is not None for w in workers):
                    raise RuntimeError(f"a worker exited; logs in {logdir}")
                await asyncio.sleep(1)
            log(f"state ready after {time.perf_counter() - t0:.1f}s")
            emails = [f"c{i:07d}@bench.example" for i in range(contacts)]
            while True:
                _, status, _ = await _timed(http, "GET", f"{base}/big/members/{emails[0]}",
                                            headers)
                if status == 200:
                    break
                await asyncio.sleep(0.5)
            rng = random.Random(1)
            preview_runs, explain_runs = [], []
            for run in range(runs):
                lat = []
                for _ in range(previews):
                    seconds, status, body = await _timed(http, "POST", base + "/preview",
                                                         headers, json=RULE)
                    if status != 200 or body["count"] != expected:
                        raise RuntimeError(f"preview answered {status} {body}")
                    lat.append(seconds)
                preview_runs.append(lat)
                lat = []
                for _ in range(explains):
                    email = rng.choice(emails)
                    seconds, status, _ = await _timed(
                        http, "GET", f"{base}/big/members/{email}", headers)
                    if status != 200:
                        raise RuntimeError(f"explain answered {status}")
                    lat.append(seconds)
                explain_runs.append(lat)
                log(f"run {run + 1}: preview p50 {percentile(preview_runs[-1], .5) * 1000:.1f} "
                    f"p99 {percentile(preview_runs[-1], .99) * 1000:.1f} ms; explain p50 "
                    f"{percentile(lat, .5) * 1000:.1f} p99 {percentile(lat, .99) * 1000:.1f} ms")
    finally:
        for w in workers:
            common.stop_process(w)

    def ms(runs_: list[list[float]], q: float) -> dict[str, Any]:
        return common.summary([percentile(r, q) * 1000 for r in runs_])

    return {
        "config": {"contacts": contacts, "partitions": partitions, "workers": 2,
                   "previews_per_run": previews, "explains_per_run": explains,
                   "members": expected, "runs": runs},
        "summary": {"preview_p50_ms": ms(preview_runs, .5),
                    "preview_p99_ms": ms(preview_runs, .99),
                    "explain_p50_ms": ms(explain_runs, .5),
                    "explain_p99_ms": ms(explain_runs, .99)},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--previews", type=int, default=200)
    parser.add_argument("--explains", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result: dict[str, Any] = asyncio.run(measure(args.contacts, args.partitions,
                                                 args.previews, args.explains, args.runs))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    print(json.dumps(main()["summary"], indent=2))
