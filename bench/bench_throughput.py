"""End-to-end throughput: ours, the bare consume loop and two peers, by one clock.

    python bench/bench_throughput.py [--contacts 100000] [--accounts 100]
        [--rules-per-account 10] [--runs 3] [--per-contact one|story]
        [--guarantee at_least_once [exactly_once]] [--systems stream bare quix faust]
        [--profile DIR] [--json FILE]

Every system is timed the same way, by this process's wall clock: from the first input
record offered to `stripe.events` to the moment a read_committed consumer of the
system's output topic has received the last end-of-input sentinel's membership change
(the bare loop has no output: to the moment it parsed the last record). Per system and
run, on a fresh topic prefix:

1. the system is started (ours: `bench/worker.py`, memory:// tables, the rules published
   to its rule topic; the peers: the rules from a file) and warmed: a first set of
   sentinels goes through it, so startup, rebalancing and rule loading are not timed;
2. the clock starts; the events (one per contact by default, or each contact's 30-day
   story with `--per-contact story`) and the end sentinels are produced, batched (the
   time this takes is reported: the harness's own ceiling);
3. the clock stops when every end sentinel has joined on the output topic.

Systems: `stream` (ours), `bare` (`bench/bare_consume.py`: aiokafka consume + orjson
parse, nothing else), `quix` (`bench/peer_quix.py`, Quix Streams) and `faust`
(`bench/peer_faust.py`, faust-streaming), each under every guarantee asked for (the bare
loop has none). Runs are interleaved: run k of every system back to back, the order
rotated from run to run, so the machine's noise hits all alike; ratios are taken within
a run (side by side), then the median over runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench import common, dataset, profiles
from common.settings import Settings
from common.topics import EVENTS_TOPIC, MEMBERSHIP_TOPIC, RULES_TOPIC
from stream.changes import rule_key

log = common.log

SYSTEMS = ("stream", "bare", "quix", "faust")
#: The output topic of each system, under its run's prefix.
OUTPUT = {"stream": MEMBERSHIP_TOPIC, "quix": "quix.membership", "faust": "faust.membership"}


def rule_messages(docs: list[dict[str, Any]]) -> list[dataset.Message]:
    return [(rule_key(doc["account_id"], doc["id"]), orjson.dumps(doc)) for doc in docs]


def sentinel_keys(messages: list[dataset.Message]) -> set[bytes]:
    keys = set()
    for _, value in messages:
        event = orjson.loads(value)["event"]
        email = event["data"]["object"]["billing_details"]["email"]
        keys.add(f"{dataset.SENTINEL_ACCOUNT}\x1f{email}".encode())
    return keys


def _command(system: str, guarantee: str, settings: Settings, here: Path) -> list[str]:
    rules_file = str(here / "rules.json")
    state = str(here / f"{system}-state")
    if system == "stream":
        return common.bench_worker_cmd(guarantee)
    if system == "quix":
        return [sys.executable, str(common.REPO / "bench" / "peer_quix.py"),
                "--prefix", settings.topic_prefix, "--rules", rules_file, "--state-dir", state,
                "--guarantee", guarantee.replace("_", "-")]
    return [sys.executable, str(common.REPO / "bench" / "peer_faust.py"),
            "--prefix", settings.topic_prefix, "--rules", rules_file, "--state-dir", state,
            "--guarantee", guarantee]


async def _offer_and_wait(settings: Settings, output: str, messages: list[dataset.Message],
                          expected: set[bytes], start: dict[int, int] | None, timeout: float,
                          alive: Any) -> dict[str, float]:
    """Offer `messages` and wait for every expected sentinel's join on `output`; wall
    seconds from the first record offered to the last join received (read_committed)."""
    seen: set[bytes] = set()
    async with common.TopicReader(settings, output, start) as reader:
        t0 = time.time()
        producing = asyncio.create_task(common.produce(settings, EVENTS_TOPIC, messages))
        deadline = time.monotonic() + timeout
        while seen < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(expected - seen)} of {len(expected)} sentinels not "
                                   f"seen on {output} within {timeout:.0f}s")
            if not alive():
                raise RuntimeError(f"the process under test exited (output {output})")
            for record in await reader.batch(timeout_ms=50):
                if record.key in expected and common.is_sentinel_join(record):
                    seen.add(record.key)
            if producing.done() and producing.exception() is not None:
                raise producing.exception()  # type: ignore[misc]
        t1 = time.time()
        await producing
    return {"seconds": t1 - t0}


async def measure(system: str, guarantee: str, rules: list[dict[str, Any]],
                  data: dataset.Dataset, here: Path, timeout: float,
                  profile: Path | None = None) -> dict[str, Any]:
    settings = common.fresh_settings()
    here.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (before the timing)
    await common.prepare_topics(settings)
    end = dataset.sentinels(settings.partitions, int(time.time()), tag="end")
    messages = [*data.messages, *end]
    if system == "bare":
        return await _bare(settings, messages, here, timeout)
    (here / "rules.json").write_bytes(orjson.dumps([*rules, dataset.sentinel_rule()]))
    if system == "stream":
        await common.produce(settings, RULES_TOPIC,
                             rule_messages([*rules, dataset.sentinel_rule()]))
    proc = common.start_process(_command(system, guarantee, settings, here),
                                common.worker_env(settings), here / f"{system}.log")
    alive = lambda: proc.poll() is None  # noqa: E731
    profiler = None
    try:
        started = time.perf_counter()
        warm = dataset.sentinels(settings.partitions, int(time.time()), tag="warm")
        await common.produce(settings, EVENTS_TOPIC, warm)
        await common.wait_for_sentinels(settings, OUTPUT[system], sentinel_keys(warm), timeout,
                                        alive=alive)
        ready_s = time.perf_counter() - started
        start = await common.end_offsets(settings, OUTPUT[system])
        if profile is not None:
            profiler = profiles.Profiler(proc.pid, profile)
        timed = await _offer_and_wait(settings, OUTPUT[system], messages, sentinel_keys(end),
                                      start, timeout, alive)
        rss = common.rss_bytes(proc.pid)
    finally:
        if profiler is not None:
            profiler.stop()
        common.stop_process(proc)
    if system == "stream":
        await common.require_no_dead_letters(settings)
    return {"events": len(messages), "seconds": timed["seconds"],
            "events_per_s": len(messages) / timed["seconds"], "ready_s": ready_s,
            "rss_bytes": rss, "prefix": settings.topic_prefix}


async def _bare(settings: Settings, messages: list[dataset.Message], here: Path,
                timeout: float) -> dict[str, Any]:
    ready = here / "bare.ready"
    cmd = [sys.executable, str(common.REPO / "bench" / "bare_consume.py"),
           "--topic", settings.topic(EVENTS_TOPIC), "--count", str(len(messages)),
           "--timeout", str(timeout), "--ready-file", str(ready)]
    proc = subprocess.Popen(cmd, env=common.worker_env(settings),  # noqa: ASYNC220
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("bare_consume did not get ready")
            await asyncio.sleep(0.05)
        t0 = time.time()
        offered = await common.produce(settings, EVENTS_TOPIC, messages)
        offered_s = time.time() - t0
        out, _ = await asyncio.to_thread(proc.communicate, timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = json.loads(out.strip().splitlines()[-1])
    seconds = result["last_epoch"] - t0
    return {"events": offered, "seconds": seconds, "events_per_s": offered / seconds,
            "offered_s": offered_s, "prefix": settings.topic_prefix}


def bare(settings: Settings, count: int, timeout: float) -> dict[str, Any]:
    """The bare loop over the first `count` records already on `stripe.events`, timed by
    itself (first record received to last parsed): for bench_classify."""
    out = subprocess.run(
        [sys.executable, str(common.REPO / "bench" / "bare_consume.py"),
         "--topic", settings.topic(EVENTS_TOPIC), "--count", str(count),
         "--timeout", str(timeout)],
        env=common.worker_env(settings), capture_output=True, check=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def labels(systems: list[str], guarantees: list[str]) -> list[tuple[str, str]]:
    out = []
    for system in systems:
        for guarantee in (["none"] if system == "bare" else guarantees):
            out.append((system, guarantee))
    return out


async def one_run(args: argparse.Namespace, rules: list[dict[str, Any]],
                  data: dataset.Dataset, run: int, workdir: Path) -> dict[str, Any]:
    plan = labels(args.systems, args.guarantee)
    shift = run % len(plan)
    result: dict[str, Any] = {"order": []}
    for system, guarantee in plan[shift:] + plan[:shift]:
        label = f"{system}/{guarantee}"
        profile = None
        if args.profile is not None and run == 0 and system == "stream":
            profile = args.profile / f"throughput-{guarantee}.txt"
        entry = await measure(system, guarantee, rules, data,
                              workdir / f"run{run}-{system}-{guarantee}", args.timeout, profile)
        result[label] = entry
        result["order"].append(label)
        log(f"run {run} {label}: {entry['events_per_s']:,.0f} events/s "
            f"({entry['seconds']:.2f} s)")
    return result


def summarise(runs: list[dict[str, Any]], systems: list[str],
              guarantees: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"events_per_s": {}, "ratios": {}}
    for system, guarantee in labels(systems, guarantees):
        label = f"{system}/{guarantee}"
        out["events_per_s"][label] = common.summary([r[label]["events_per_s"] for r in runs])
        if system != "bare":
            out.setdefault("rss_mib", {})[label] = common.summary(
                [r[label]["rss_bytes"] / 2**20 for r in runs])
            out.setdefault("ready_s", {})[label] = common.summary(
                [r[label]["ready_s"] for r in runs])
    if "stream" in systems:
        for guarantee in guarantees:
            ours = f"stream/{guarantee}"
            for other in labels([s for s in systems if s != "stream"], [guarantee]):
                theirs = f"{other[0]}/{other[1]}"
                out["ratios"][f"{ours} : {theirs}"] = common.summary(
                    [r[ours]["events_per_s"] / r[theirs]["events_per_s"] for r in runs])
    if "bare" in systems:
        out["bare_offered_s"] = common.summary([r["bare/none"]["offered_s"] for r in runs])
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--rules-per-account", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--per-contact", choices=("one", "story"), default="one",
                        help="events per contact: one (default) or its whole 30-day story")
    parser.add_argument("--guarantee", nargs="+", default=["at_least_once"],
                        choices=("exactly_once", "at_least_once"))
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--no-peer", dest="systems", action="store_const",
                        const=["stream", "bare"], help="only ours and the bare loop")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy our worker during the first run; raw stacks go here")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)

    now = int(time.time())
    data = dataset.events(args.contacts, args.accounts, now, per_contact=args.per_contact)
    rules = dataset.rules_for(args.accounts, args.rules_per_account)
    log(f"dataset: {len(data.messages):,} events for {args.contacts:,} contacts in "
        f"{args.accounts} accounts, {len(rules):,} rules, "
        f"{data.payload_bytes / len(data.messages):.0f} bytes/event; systems "
        f"{', '.join(args.systems)}; guarantees {', '.join(args.guarantee)}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    log(f"logs and state under {workdir}")
    runs = [asyncio.run(one_run(args, rules, data, run, workdir)) for run in range(args.runs)]
    result: dict[str, Any] = {
        "config": {"contacts": args.contacts, "accounts": args.accounts,
                   "rules": len(rules), "events": len(data.messages),
                   "bytes_per_event": data.payload_bytes / len(data.messages),
                   "partitions": common.PARTITIONS, "runs": args.runs,
                   "systems": args.systems, "guarantees": args.guarantee,
                   "clock": "wall time, first input offered to last output received by a "
                            "read_committed consumer"},
        "summary": summarise(runs, args.systems, args.guarantee),
        "runs": runs,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    summary = result["summary"]
    for label, s in summary["events_per_s"].items():
        print(f"{label:28} {s['median']:>10,.0f} events/s (min {s['min']:,.0f}, "
              f"max {s['max']:,.0f})")
    for label, s in summary["ratios"].items():
        print(f"{label:50} {s['median']:.3f} (min {s['min']:.3f}, max {s['max']:.3f})")
    if "bare_offered_s" in summary:
        print(f"input offered in {statistics.median(summary['bare_offered_s']['runs']):.2f} s "
              f"(median; the harness's producer)")
    return result


if __name__ == "__main__":
    main()
