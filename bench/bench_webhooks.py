"""Benchmark of the webhook path: signed Stripe event in, Kafka acks=all, 200 out.

Compares, in the same run on the same machine, the real connector (signature check,
Redis-backed connection lookup, publish to Kafka with acks=all before answering) with
a bare aiohttp handler that does nothing, both served from their own process on
loopback. The load is open-loop at a fixed offered rate: requests leave on schedule
whatever the answers, and latency is measured from the scheduled send time, so a
slow server cannot hide its queueing (no coordinated omission). Each target is run
`--repeats` times (median reported), alternating, after a warm-up.

    python bench/bench_webhooks.py [--rate 1000] [--seconds 5] [--repeats 3]

Needs the local Kafka and Redis (`segments stack up`, or KAFKA_BOOTSTRAP_SERVERS and
REDIS_URL). Topics and Redis keys use a fresh `bench…` prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.stripe_signing import sign  # noqa: E402

FIXTURE = REPO.parent / "shared" / "stripe-fixtures" / "events-stripe-cli-2020-08-27" / \
    "charge.succeeded.json"
SECRET = "whsec_bench_secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- servers, each in its own process ----------------------------------------------


def serve_bare(port: int, ready: Any) -> None:
    from aiohttp import web

    async def nothing(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b'{"received":true}', content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/webhooks/stripe/{connection_id}", nothing)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_connector(port: int, ready: Any, prefix: str, connection_id: str) -> None:
    import logging

    from aiohttp import web

    from common.settings import Settings
    from common.topics import ensure_topics
    from connectors.server import SINK, STORE, create_app

    logging.basicConfig(level=logging.WARNING)  # no per-request lines in the measurement
    settings = replace(Settings.from_env(), topic_prefix=prefix)
    if not settings.secret_key:
        from cryptography.fernet import Fernet

        settings = replace(settings, secret_key=Fernet.generate_key().decode())

    async def main() -> None:
        await ensure_topics(settings)
        app = create_app(settings, start_backfill=False)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        assert await app[SINK].wait_connected(30), "Kafka producer did not connect"
        # The store writes through a producer of its own (segments.connections).
        assert await app[STORE].wait_loaded(30), "segments.connections not loaded"
        await app[STORE].create(connection_id=connection_id, account_id="bench",
                                api_key="sk_test_bench", webhook_secret=SECRET,
                                registration="manual", webhook_endpoint_id=None)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


# --- open-loop load ------------------------------------------------------------------


@dataclass
class Result:
    offered_rps: float
    achieved_rps: float
    ok: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def bodies(count: int) -> list[tuple[bytes, str]]:
    template = json.loads(FIXTURE.read_text())
    out = []
    for i in range(count):
        template["id"] = f"evt_bench_{uuid.uuid4().hex[:12]}_{i}"
        template["data"]["object"]["customer"] = f"cus_bench_{i % 1000}"
        body = json.dumps(template).encode()
        out.append((body, sign(body, SECRET)))
    return out


async def offered_load(url: str, rate: float, seconds: float) -> Result:
    count = int(rate * seconds)
    payloads = bodies(count)
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(i: int, scheduled: float) -> None:
            nonlocal errors
            body, header = payloads[i]
            try:
                async with http.post(url, data=body, headers={
                        "Stripe-Signature": header, "Content-Type": "application/json"}) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                        return
            except aiohttp.ClientError:
                errors += 1
                return
            latencies.append(time.perf_counter() - scheduled)

        tasks = []
        start = time.perf_counter() + 0.05
        for i in range(count):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    latencies.sort()
    ms = [x * 1000 for x in latencies] or [float("nan")]
    return Result(
        offered_rps=rate,
        achieved_rps=len(latencies) / elapsed,
        ok=len(latencies),
        errors=errors,
        p50_ms=ms[len(ms) // 2],
        p99_ms=ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        max_ms=ms[-1],
    )


def median_result(results: list[Result]) -> dict[str, float]:
    keys = ("achieved_rps", "p50_ms", "p99_ms", "max_ms", "errors")
    return {k: statistics.median(getattr(r, k) for r in results) for k in keys}


def start(target: Any, *args: Any) -> tuple[Any, int]:
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    port = free_port()
    proc = ctx.Process(target=target, args=(port, ready, *args), daemon=True)
    proc.start()
    if not ready.wait(60):
        proc.terminate()
        raise SystemExit(f"{target.__name__} did not start")
    return proc, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="offered requests/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()

    os.environ.setdefault("SEGMENTS_LOG_LEVEL", "WARNING")
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    connection_id = f"conn_{uuid.uuid4().hex[:24]}"
    bare, bare_port = start(serve_bare)
    real, real_port = start(serve_connector, prefix, connection_id)
    targets = {
        "bare aiohttp": f"http://127.0.0.1:{bare_port}/webhooks/stripe/{connection_id}",
        "connector": f"http://127.0.0.1:{real_port}/webhooks/stripe/{connection_id}",
    }
    try:
        for url in targets.values():  # warm-up: connections, JIT-free but caches and pools
            asyncio.run(offered_load(url, min(args.rate, 200), 1.0))
        runs: dict[str, list[Result]] = {name: [] for name in targets}
        for _ in range(args.repeats):
            for name, url in targets.items():
                runs[name].append(asyncio.run(offered_load(url, args.rate, args.seconds)))
    finally:
        for proc in (bare, real):
            proc.terminate()
            proc.join(10)

    summary = {name: median_result(results) for name, results in runs.items()}
    base, conn = summary["bare aiohttp"], summary["connector"]
    summary["ratio connector/bare"] = {
        "achieved_rps": conn["achieved_rps"] / base["achieved_rps"],
        "p50_ms": conn["p50_ms"] / base["p50_ms"],
        "p99_ms": conn["p99_ms"] / base["p99_ms"],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"offered load {args.rate:.0f} req/s for {args.seconds:.0f}s, median of "
          f"{args.repeats} runs each (topic prefix {prefix})")
    print(f"{'target':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'errors':>8}")
    for name in targets:
        r = summary[name]
        print(f"{name:<22}{r['achieved_rps']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}"
              f"{r['max_ms']:>10.2f}{r['errors']:>8.0f}")
    ratio = summary["ratio connector/bare"]
    print(f"{'connector / bare':<22}{ratio['achieved_rps']:>10.2f}{ratio['p50_ms']:>10.1f}x"
          f"{ratio['p99_ms']:>9.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
