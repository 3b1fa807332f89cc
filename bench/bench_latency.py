"""Latency: webhook POST to membership event readable, at a steady offered load.

    python bench/bench_latency.py [--rates 1000 250] [--seconds 8] [--runs 3]
        [--eos-commit-intervals 0.05 0.1 0.25 1.0] [--json FILE]

Per run and worker configuration (guarantee, commit interval), on a fresh topic prefix:
the real connector (`bench/bench_webhooks.py`'s server process: signature check, Redis
connection lookup, acks=all publish) and one worker process (`bench/worker.py`,
memory:// tables), with one rule that every charge satisfies; the configuration is
measured at each offered rate, lowest first. The load is open-loop: signed
`charge.succeeded` webhooks, each for a new contact, leave on schedule at the rate
whatever the answers; each one's latency runs from its scheduled send time (no
coordinated omission) until its `joined` change is read from `segments.membership` by
a read_committed consumer in the load process, so under exactly-once a change counts
only once its transaction committed. POSTs answered with an error are counted apart;
accepted events whose change never arrives within the drain time are `missing`. Each
result also splits the median latency by hop, from the records' own timestamps.

Configurations: at-least-once (the worker's default commit interval), and exactly-once
for each commit interval given. The lower rate shows the latency below saturation when
the higher one saturates this machine (connector, worker, broker and load generator
share its cores). Each is measured `--runs` times; p50/p99 are the medians of the
per-run percentiles, with min and max.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import orjson

from bench import common
from bench.bench_webhooks import SECRET, serve_connector, start
from common.topics import EVENTS_TOPIC, FACTS_TOPIC, MEMBERSHIP_TOPIC, RULES_TOPIC
from stream.changes import rule_key
from tests.stripe_signing import sign

log = common.log
ACCOUNT = "bench"


def webhook(email: str, now: int) -> bytes:
    charge = {"id": f"ch_{uuid.uuid4().hex[:20]}", "object": "charge", "amount": 2000,
              "amount_captured": 2000, "amount_refunded": 0, "captured": True,
              "created": now, "currency": "usd", "customer": None, "paid": True,
              "status": "succeeded", "refunded": False, "receipt_email": None,
              "billing_details": {"email": email}}
    event = {"id": f"evt_{uuid.uuid4().hex[:20]}", "object": "event",
             "api_version": "2020-08-27", "created": now, "type": "charge.succeeded",
             "livemode": False, "pending_webhooks": 1, "data": {"object": charge}}
    return orjson.dumps(event)


@dataclass
class Config:
    label: str
    guarantee: str
    commit_interval: float | None
    rate: float


async def offered_load(url: str, reader: common.TopicReader, rate: float, seconds: float,
                       drain: float, tag: str) -> dict[str, Any]:
    count = int(rate * seconds)
    now = int(time.time())
    emails = [f"{tag}{i}@bench.invalid" for i in range(count)]
    bodies = [webhook(email, now) for email in emails]
    scheduled: dict[str, float] = {}
    arrived: dict[str, float] = {}
    errors = 0
    expected = count  # lowered by every POST that failed: its change never comes
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set():
            for record in await reader.batch(timeout_ms=20):
                doc = orjson.loads(record.value)
                if doc.get("change") == "joined" and doc["email"] in scheduled:
                    arrived.setdefault(doc["email"], time.time())
            if len(arrived) >= expected:
                done.set()

    reading = asyncio.create_task(read())
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def post(i: int) -> None:
            nonlocal errors
            body = bodies[i]
            try:
                async with http.post(url, data=body, headers={
                        "Stripe-Signature": sign(body, SECRET),
                        "Content-Type": "application/json"}) as answer:
                    await answer.read()
                    if answer.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1

        tasks = []
        begin = time.time() + 0.05
        for i in range(count):
            at = begin + i / rate
            delay = at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            scheduled[emails[i]] = at
            tasks.append(asyncio.create_task(post(i)))
        await asyncio.gather(*tasks)
        sent_s = time.time() - begin
        expected = count - errors
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), drain)
    done.set()
    await reading
    latencies = sorted(1000 * (arrived[e] - scheduled[e]) for e in arrived)
    if not latencies:
        latencies = [float("nan")]
    stages = await stage_breakdown(reader.settings, scheduled, arrived)
    return {"stages_p50_ms": stages, "offered_per_s": rate, "sent_per_s": count / sent_s,
            "events": count,
            "http_errors": errors, "missing": count - errors - len(arrived),
            "p50_ms": latencies[len(latencies) // 2],
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "max_ms": latencies[-1]}


async def stamps(settings: Any, topic: str, path: tuple[str, ...],
                 wanted: dict[str, float]) -> dict[str, float]:
    """email -> record timestamp (epoch s) of the first record naming it on `topic`."""
    found: dict[str, float] = {}
    async with common.TopicReader(settings, topic) as reader:
        assert reader.consumer is not None
        tps = list(reader.consumer.assignment())
        ends = await reader.consumer.end_offsets(tps)
        while [tp for tp in tps if await reader.consumer.position(tp) < ends[tp]]:
            for record in await reader.batch():
                doc: Any = orjson.loads(record.value)
                for part in path:
                    doc = doc.get(part) if isinstance(doc, dict) else None
                if isinstance(doc, str) and doc in wanted:
                    found.setdefault(doc, record.timestamp / 1000)
    return found


async def stage_breakdown(settings: Any, scheduled: dict[str, float],
                          arrived: dict[str, float]) -> dict[str, float]:
    """Median (and p99) milliseconds spent in each hop, from the records' timestamps:
    POST→raw event appended (connector), →fact sent (classify), →change sent
    (membership), →change read (transaction commit and the reader)."""
    events = await stamps(settings, EVENTS_TOPIC,
                          ("event", "data", "object", "billing_details", "email"), scheduled)
    facts = await stamps(settings, FACTS_TOPIC, ("email",), scheduled)
    changes = await stamps(settings, MEMBERSHIP_TOPIC, ("email",), scheduled)
    hops = {"connector": (scheduled, events), "classify": (events, facts),
            "membership": (facts, changes), "visible": (changes, arrived)}
    out = {}
    for name, (before, after) in hops.items():
        spans = sorted(1000 * (after[e] - before[e]) for e in after if e in before)
        out[name] = spans[len(spans) // 2] if spans else float("nan")
        out[f"{name}_p99"] = spans[int(len(spans) * 0.99)] if spans else float("nan")
    return out


async def wait_ready(url: str, reader: common.TopicReader, timeout: float) -> None:
    """Warm up: send one event a second until a change comes back for any of them (the
    rule is applied and, under exactly-once, a transaction committed)."""
    deadline = time.monotonic() + timeout
    sent: set[str] = set()
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            email = f"warm{uuid.uuid4().hex[:8]}@bench.invalid"
            body = webhook(email, int(time.time()))
            sent.add(email)
            async with http.post(url, data=body, headers={
                    "Stripe-Signature": sign(body, SECRET),
                    "Content-Type": "application/json"}) as answer:
                await answer.read()
            until = time.monotonic() + 1.0
            while time.monotonic() < until:
                for record in await reader.batch(timeout_ms=100):
                    if orjson.loads(record.value).get("email") in sent:
                        return
    raise TimeoutError("the worker did not answer within the warm-up time")


async def one(group: list[Config], args: argparse.Namespace, n: int,
              workdir: Path) -> dict[str, Any]:
    """One worker configuration (guarantee, commit interval) on its own prefix, connector
    and worker, measured at each of its rates, lowest first (a worker of another
    guarantee never shares a consumer group or changelog with it)."""
    first = group[0]
    settings = common.fresh_settings()
    await common.prepare_topics(settings)
    rule = {"id": "paid", "account_id": ACCOUNT, "name": "paid", "filter": "charge_succeeded",
            "conditions": [], "timezone": "UTC"}
    await common.produce(settings, RULES_TOPIC, [(rule_key(ACCOUNT, "paid"),
                                                  orjson.dumps(rule))])
    connection_id = f"conn_{uuid.uuid4().hex[:24]}"
    server, port = start(serve_connector, settings.topic_prefix, connection_id)
    url = f"http://127.0.0.1:{port}/webhooks/stripe/{connection_id}"
    cmd = common.bench_worker_cmd(first.guarantee, first.commit_interval)
    proc = common.start_process(cmd, common.worker_env(settings), workdir / f"w{n}.log")
    results: dict[str, Any] = {}
    try:
        async with common.TopicReader(settings, MEMBERSHIP_TOPIC) as reader:
            await wait_ready(url, reader, 120)
            for i, config in enumerate(sorted(group, key=lambda c: c.rate)):
                # A short steady warm-up at the offered rate, then the measurement.
                await offered_load(url, reader, config.rate, 1.0, 10.0, f"pre{n}-{i}-")
                result = await offered_load(url, reader, config.rate, args.seconds,
                                            args.drain, f"m{n}-{i}-")
                result["prefix"] = settings.topic_prefix
                results[config.label] = result
    finally:
        common.stop_process(proc)
        server.terminate()
        server.join(10)
    return results


async def repeat(configs: list[Config], args: argparse.Namespace, run: int,
                 workdir: Path) -> dict[str, Any]:
    groups: dict[tuple[str, float | None], list[Config]] = {}
    for config in configs:
        groups.setdefault((config.guarantee, config.commit_interval), []).append(config)
    results: dict[str, Any] = {}
    for n, group in enumerate(groups.values()):
        measured = await one(group, args, run * 100 + n, workdir)
        results.update(measured)
        for label, result in measured.items():
            hops = result["stages_p50_ms"]
            stages = ", ".join(f"{k} p50 {hops[k]:.0f} p99 {hops[k + '_p99']:.0f}"
                               for k in hops if not k.endswith("_p99"))
            log(f"run {run} {label}: p50 {result['p50_ms']:.1f} ms, p99 "
                f"{result['p99_ms']:.1f} ms, sent {result['sent_per_s']:.0f}/s, missing "
                f"{result['missing']}, http errors {result['http_errors']} (by hop, ms: "
                f"{stages})")
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[1000.0, 250.0],
                        help="offered loads (events/s); every configuration runs at each")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--drain", type=float, default=30.0,
                        help="how long to wait for the last changes after the load")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--eos-commit-intervals", type=float, nargs="*",
                        default=[0.05, 0.1, 0.25, 1.0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    configs = [c for rate in args.rates for c in (
        [Config(f"at_least_once, {rate:g}/s", "at_least_once", None, rate)] + [
            Config(f"exactly_once commit {ci:g}s, {rate:g}/s", "exactly_once", ci, rate)
            for ci in args.eos_commit_intervals])]
    workdir = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    log(f"logs under {workdir}")
    runs = [asyncio.run(repeat(configs, args, run, workdir)) for run in range(args.runs)]
    summary: dict[str, Any] = {}
    for config in configs:
        rows = [r[config.label] for r in runs]
        summary[config.label] = {
            "guarantee": config.guarantee, "commit_interval_s": config.commit_interval,
            "rate": config.rate,
            **{key: common.summary([row[key] for row in rows])
               for key in ("p50_ms", "p99_ms", "max_ms", "sent_per_s", "missing",
                           "http_errors")}}
    result = {"config": {"rates": args.rates, "seconds": args.seconds, "runs": args.runs,
                         "partitions": common.PARTITIONS},
              "summary": summary, "runs": runs}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    for label, s in summary.items():
        print(f"{label:<36} p50 {s['p50_ms']['median']:8.1f} ms  p99 "
              f"{s['p99_ms']['median']:8.1f} ms  missing {s['missing']['median']:.0f}")
    return result


if __name__ == "__main__":
    main()
