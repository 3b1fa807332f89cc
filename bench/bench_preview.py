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

Then (unless `--no-verify-saved`) the previewed rule is saved through the API (`PUT`,
as a new segment), and once its status is `ready` and the workers have processed their
inputs to the end offsets, the members it produced are read from the compacted
`segments.members` and from the joins on `segments.membership` (each read to its end
offsets). The preview's count must equal both and the count this script computes from
the data it produced, and every sample email must be a member; the process exits 1
otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
from common.settings import Settings
from common.topics import (
    CONTROL_TOPIC,
    FACTS_TOPIC,
    MEMBERS_TOPIC,
    MEMBERSHIP_TOPIC,
    RULES_TOPIC,
    delete_topics_with_prefix,
)
from segments.rules_admin import publish_rule
from serving.server import ApiProcess
from stream.app import group_id
from stream.facts import Fact
from tests.drain import read_to_end, wait_processed

log = common.log
ACCOUNT = "bench-acct"
#: The segment the verification saves the previewed rule as.
SAVED = "saved"
QS = (("p50", .5), ("p95", .95), ("p99", .99))
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


def _qs(values: list[float]) -> str:
    return "/".join(f"{percentile(values, q) * 1000:.1f}" for _, q in QS)


async def _timed(http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str],
                 **kw: Any) -> tuple[float, int, Any]:
    started = time.perf_counter()
    async with http.request(method, url, headers=headers, **kw) as resp:
        body = await resp.json()
        return time.perf_counter() - started, resp.status, body


async def saved_members(settings: Settings, segment_id: str) -> tuple[set[str], set[str]]:
    """Members of `segment_id` by the compacted `segments.members` (latest record per key,
    tombstones removed) and by the joins and leaves on `segments.membership`, both read to
    their end offsets."""
    current: dict[bytes, bytes | None] = {}
    for record in await read_to_end(settings, settings.topic(MEMBERS_TOPIC), timeout=900):
        current[record.key] = record.value
    members = set()
    for value in current.values():
        if value is None:
            continue
        doc = json.loads(value)
        if (doc["account_id"], doc["segment_id"]) == (ACCOUNT, segment_id):
            members.add(doc["email"])
    joined: set[str] = set()
    for record in await read_to_end(settings, settings.topic(MEMBERSHIP_TOPIC), timeout=900):
        change = json.loads(record.value)
        if (change["account_id"], change["segment_id"]) == (ACCOUNT, segment_id):
            (joined.add if change["change"] == "joined" else joined.discard)(change["email"])
    return members, joined


async def verify_saved(settings: Settings, http: aiohttp.ClientSession, base: str,
                       headers: dict[str, str], expected: int) -> dict[str, Any]:
    """Save the previewed rule through the API and compare what it produces with the
    preview taken just before (and with the count computed from the data)."""
    _, status, preview = await _timed(http, "POST", base + "/preview", headers, json=RULE)
    if status != 200:
        raise RuntimeError(f"preview answered {status} {preview}")
    t0 = time.perf_counter()
    _, status, body = await _timed(http, "PUT", f"{base}/{SAVED}", headers, json=RULE)
    if status not in (200, 201):
        raise RuntimeError(f"PUT answered {status} {body}")
    deadline = time.monotonic() + 1800
    while True:  # the read model has the rule and every partition computed it
        _, status, doc = await _timed(http, "GET", f"{base}/{SAVED}", headers)
        if status == 200 and doc.get("status") == "ready":
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"segment never ready: {status} {doc}")
        await asyncio.sleep(0.5)
    ready_s = time.perf_counter() - t0
    log(f"saved segment ready {ready_s:.1f}s after the PUT")
    # At-least-once: the group commits once what its inputs caused is written.
    await wait_processed(settings, group_id(settings),
                         [settings.topic(t) for t in (RULES_TOPIC, CONTROL_TOPIC, FACTS_TOPIC)],
                         timeout=900)
    members, joined = await saved_members(settings, SAVED)
    missing = sorted(set(preview["sample"]) - members)
    ok = preview["count"] == len(members) == len(joined) == expected and not missing
    log(f"preview count {preview['count']:,}; saved rule's members {len(members):,} "
        f"(segments.members), {len(joined):,} (joins on segments.membership); "
        f"computed {expected:,}; sample {len(preview['sample'])} emails, "
        f"{len(missing)} not members: {'OK' if ok else 'MISMATCH'}")
    return {"preview_count": preview["count"], "saved_members": len(members),
            "saved_joins": len(joined), "computed": expected,
            "sample_size": len(preview["sample"]), "sample_not_members": missing,
            "read_model_member_count": doc.get("member_count"),
            "ready_after_put_s": round(ready_s, 1), "equal": ok}


async def measure(contacts: int, partitions: int, previews: int, explains: int,
                  runs: int, verify: bool = True) -> dict[str, Any]:
    secret = secrets.token_urlsafe(48)
    # Not "bench…": `bench/run_all.py` deletes every bench* topic when it starts and ends,
    # which on a shared broker pulls the partitions from under a long run; this run
    # deletes its own topics when it ends instead.
    settings = replace(common.fresh_settings(partitions, "pvbench"), auth_secret=secret)
    await common.prepare_topics(settings)
    env = {**common.worker_env(settings), "SEGMENTS_AUTH_SECRET": secret}
    logdir = Path(tempfile.mkdtemp(prefix="bench-preview-"))
    cmd = [sys.executable, "-m", "segments.cli", "worker", "--at-least-once",
           "--no-email-lookup", "--query-port", "0"]
    workers = [common.start_process(cmd, env, logdir / f"worker{i}.log") for i in range(2)]
    token = mint_token(secret, accounts=[ACCOUNT], ttl_s=12 * 3600)  # a long run outlives 1 h
    headers = {"Authorization": f"Bearer {token}"}
    verified: dict[str, Any] | None = None
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
            deadline = time.monotonic() + 600
            while True:
                _, status, body = await _timed(http, "GET", f"{base}/big/members/{emails[0]}",
                                               headers)
                if status == 200:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"explain never answered: {status} {body}")
                if any(w.poll() is not None for w in workers):
                    raise RuntimeError(f"a worker exited; logs in {logdir}")
                await asyncio.sleep(0.5)
            rng = random.Random(1)
            preview_runs, explain_runs = [], []
            loads: list[dict[str, Any]] = []
            for run in range(runs):
                load_before = os.getloadavg()
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
                loads.append({"run": run + 1, "before": load_before, "after": os.getloadavg()})
                log(f"run {run + 1}: preview p50/p95/p99 "
                    f"{_qs(preview_runs[-1])} ms; explain p50/p95/p99 {_qs(lat)} ms; "
                    f"load {load_before} -> {os.getloadavg()}")
            if verify:
                if any(w.poll() is not None for w in workers):
                    raise RuntimeError(f"a worker exited; logs in {logdir}")
                verified = await verify_saved(settings, http, base, headers, expected)
    finally:
        for w in workers:
            common.stop_process(w)
        await delete_topics_with_prefix(settings, settings.topic_prefix)

    def ms(runs_: list[list[float]], q: float) -> dict[str, Any]:
        return common.summary([percentile(r, q) * 1000 for r in runs_])

    result: dict[str, Any] = {
        "config": {"contacts": contacts, "partitions": partitions, "workers": 2,
                   "previews_per_run": previews, "explains_per_run": explains,
                   "members": expected, "runs": runs},
        "load_average": loads,
        "per_run_ms": [{"preview": {q: percentile(p, v) * 1000 for q, v in QS},
                        "explain": {q: percentile(e, v) * 1000 for q, v in QS}}
                       for p, e in zip(preview_runs, explain_runs, strict=True)],
        "summary": {"preview_p50_ms": ms(preview_runs, .5),
                    "preview_p99_ms": ms(preview_runs, .99),
                    "explain_p50_ms": ms(explain_runs, .5),
                    "preview_p95_ms": ms(preview_runs, .95),
                    "explain_p99_ms": ms(explain_runs, .99),
                    "explain_p95_ms": ms(explain_runs, .95)},
    }
    if verified is not None:
        result["verify_saved"] = verified
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--previews", type=int, default=200)
    parser.add_argument("--explains", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--verify-saved", action=argparse.BooleanOptionalAction, default=True,
                        help="save the rule afterwards and check preview == its members")
    args = parser.parse_args(argv)
    result: dict[str, Any] = asyncio.run(measure(args.contacts, args.partitions,
                                                 args.previews, args.explains, args.runs,
                                                 args.verify_saved))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    outcome = main()
    print(json.dumps({k: outcome[k] for k in ("summary", "verify_saved") if k in outcome},
                     indent=2))
    if not outcome.get("verify_saved", {"equal": True})["equal"]:
        sys.exit(1)
