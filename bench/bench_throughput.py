"""End-to-end throughput: stripe.events to membership output, against its limit and a peer.

    python bench/bench_throughput.py [--contacts 100000] [--accounts 100]
        [--rules-per-account 10] [--runs 3] [--per-contact one|story]
        [--guarantee at_least_once [exactly_once]] [--no-peer] [--profile DIR] [--json FILE]

Per run, on a fresh topic prefix:

1. the rules (default 1,000: 10 for each of 100 accounts) are published, a worker
   (`bench/worker.py`, one process, memory:// tables) applies them, and stops;
2. the events are produced to `stripe.events`: one event per contact (default 100,000
   contacts, so 100,000 events: charges, failures, refunds, subscription changes), or
   with `--per-contact story` each contact's whole 30-day story (about 4.5 events), then
   the end-of-input sentinels;
3. the worker is started again and timed from its first fact (record timestamp on
   `stripe.facts`) to the last sentinel's membership change (record timestamp on
   `segments.membership`): every event classified, every fact applied, every change
   published;
4. the physical limit, in the same run over the same messages: `bench/bare_consume.py`
   (aiokafka consume + orjson parse, nothing else);
5. the peer: `bench/peer_quix.py`, the same classify + count pipeline in Quix Streams,
   timed the same way (first record on its repartition topic to its last sentinel).

Figures are events/s and the ratios stream/bare and stream/peer, median of the runs.
Repeated for each processing guarantee asked for (default at-least-once, the peer's
default too; the peer runs once per run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench import common, dataset, profiles
from common.settings import Settings
from common.topics import EVENTS_TOPIC, FACTS_TOPIC, MEMBERSHIP_TOPIC, RULES_TOPIC
from stream.changes import rule_key

log = common.log


def rule_messages(docs: list[dict[str, Any]]) -> list[dataset.Message]:
    return [(rule_key(doc["account_id"], doc["id"]), orjson.dumps(doc)) for doc in docs]


def sentinel_keys(messages: list[dataset.Message]) -> set[bytes]:
    keys = set()
    for _, value in messages:
        event = orjson.loads(value)["event"]
        email = event["data"]["object"]["billing_details"]["email"]
        keys.add(f"{dataset.SENTINEL_ACCOUNT}\x1f{email}".encode())
    return keys


class StreamRun:
    """One prefix: rules applied by a first worker, then events timed through a second."""

    def __init__(self, settings: Settings, workdir: Path, guarantee: str,
                 extra_env: dict[str, str]) -> None:
        self.settings = settings
        self.workdir = workdir
        self.guarantee = guarantee
        self.datadir = workdir / "worker"
        self.env = {**common.worker_env(settings), **extra_env}

    def _worker(self, name: str) -> Any:
        cmd = common.bench_worker_cmd(self.guarantee)
        return common.start_process(cmd, self.env, self.workdir / f"{name}.log")

    async def load_rules(self, rules: list[dict[str, Any]], timeout: float) -> float:
        """Publish the rules, let a worker apply them; returns the seconds it took."""
        s = self.settings
        warm = dataset.sentinels(s.partitions, int(time.time()), tag="warm")
        await common.prepare_topics(s)
        started = time.perf_counter()
        await common.produce(s, RULES_TOPIC, rule_messages([*rules, dataset.sentinel_rule()]))
        await common.produce(s, EVENTS_TOPIC, warm)
        proc = self._worker("rules")
        try:
            await common.wait_for_sentinels(s, MEMBERSHIP_TOPIC, sentinel_keys(warm), timeout,
                                            alive=lambda: proc.poll() is None)
            elapsed = time.perf_counter() - started
        finally:
            common.stop_process(proc)
        return elapsed

    async def measure(self, messages: list[dataset.Message], timeout: float,
                      profile: Path | None = None) -> dict[str, Any]:
        s = self.settings
        end = dataset.sentinels(s.partitions, int(time.time()), tag="end")
        facts_start = await common.end_offsets(s, FACTS_TOPIC)
        members_start = await common.end_offsets(s, MEMBERSHIP_TOPIC)
        produced = await common.produce(s, EVENTS_TOPIC, [*messages, *end])
        proc = self._worker("measure")
        profiler = profiles.Profiler(proc.pid, profile) if profile is not None else None
        try:
            t1 = await common.wait_for_sentinels(s, MEMBERSHIP_TOPIC, sentinel_keys(end),
                                                 timeout, start=members_start,
                                                 alive=lambda: proc.poll() is None)
            rss = common.rss_bytes(proc.pid)
        finally:
            if profiler is not None:
                profiler.stop()
            common.stop_process(proc)
        t0 = await common.first_timestamp(s, FACTS_TOPIC, facts_start)
        return {"events": produced, "seconds": t1 - t0, "events_per_s": produced / (t1 - t0),
                "rss_bytes": rss}


def bare(settings: Settings, count: int, timeout: float) -> dict[str, Any]:
    import subprocess

    out = subprocess.run(
        [sys.executable, str(common.REPO / "bench" / "bare_consume.py"),
         "--topic", settings.topic(EVENTS_TOPIC), "--count", str(count),
         "--timeout", str(timeout)],
        env=common.worker_env(settings), capture_output=True, check=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


async def peer(settings: Settings, workdir: Path, rules: list[dict[str, Any]],
               keys: set[bytes], count: int, timeout: float) -> dict[str, Any]:
    rules_file = workdir / "rules.json"
    rules_file.write_bytes(orjson.dumps([*rules, dataset.sentinel_rule()]))
    cmd = [sys.executable, str(common.REPO / "bench" / "peer_quix.py"),
           "--prefix", settings.topic_prefix, "--rules", str(rules_file),
           "--state-dir", str(workdir / "quix-state")]
    proc = common.start_process(cmd, common.worker_env(settings), workdir / "quix.log")
    try:
        # The output topic appears once Quix has declared it.
        t1 = await common.wait_for_sentinels(settings, "quix.membership", keys, timeout,
                                             alive=lambda: proc.poll() is None)
    finally:
        common.stop_process(proc)
    repartition = await common.topics_like(settings, f"repartition__{settings.topic_prefix}quix")
    t0 = min([await common.first_timestamp_of(settings, name) for name in repartition])
    return {"events": count, "seconds": t1 - t0, "events_per_s": count / (t1 - t0)}


async def one_run(args: argparse.Namespace, rules: list[dict[str, Any]],
                  data: dataset.Dataset, run: int, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    last_settings: Settings | None = None
    total = 0
    for guarantee in args.guarantee:
        settings = common.fresh_settings()
        last_settings = settings
        here = workdir / f"run{run}-{guarantee}"
        here.mkdir(parents=True)
        stream = StreamRun(settings, here, guarantee, dict(args.worker_env))
        load_s = await stream.load_rules(rules, args.timeout)
        profile = None
        if args.profile is not None and run == 0:
            profile = args.profile / f"throughput-{guarantee}.txt"
        ours = await stream.measure(data.messages, args.timeout, profile)
        total = ours["events"] + settings.partitions ** 2  # + the warm-up sentinels
        base = bare(settings, total, args.timeout)
        result[guarantee] = {"rules_load_s": load_s, "stream": ours, "bare": base,
                             "ratio_bare": ours["events_per_s"] / base["events_per_s"],
                             "prefix": settings.topic_prefix}
        log(f"run {run} {guarantee}: stream {ours['events_per_s']:,.0f}/s, bare "
            f"{base['events_per_s']:,.0f}/s (ratio {result[guarantee]['ratio_bare']:.3f}), "
            f"rules applied in {load_s:.1f}s")
    if args.peer and last_settings is not None:
        keys = set()
        for tag in ("warm", "end"):
            keys |= sentinel_keys(dataset.sentinels(last_settings.partitions, 0, tag=tag))
        quix = await peer(last_settings, workdir / f"run{run}-{args.guarantee[-1]}", rules,
                          keys, total, args.timeout)
        result["peer"] = quix
        log(f"run {run} quix: {quix['events_per_s']:,.0f}/s")
    return result


def summarise(runs: list[dict[str, Any]], guarantees: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for g in guarantees:
        out[g] = {
            "stream_events_per_s": common.summary([r[g]["stream"]["events_per_s"] for r in runs]),
            "bare_events_per_s": common.summary([r[g]["bare"]["events_per_s"] for r in runs]),
            "ratio_to_bare": common.summary([r[g]["ratio_bare"] for r in runs]),
            "rules_load_s": common.summary([r[g]["rules_load_s"] for r in runs]),
            "worker_rss_mib": common.summary([r[g]["stream"]["rss_bytes"] / 2**20
                                              for r in runs]),
        }
        if all("peer" in r for r in runs):
            out[g]["ratio_to_peer"] = common.summary(
                [r[g]["stream"]["events_per_s"] / r["peer"]["events_per_s"] for r in runs])
    if all("peer" in r for r in runs):
        out["peer_events_per_s"] = common.summary([r["peer"]["events_per_s"] for r in runs])
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
    parser.add_argument("--no-peer", dest="peer", action="store_false")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy the worker during the first run; raw stacks go here")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                        type=lambda text: tuple(text.split("=", 1)),
                        help="extra environment of the worker (experiments, e.g. "
                             "BENCH_GC_STATS=1); not used by `make bench`")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)

    now = int(time.time())
    data = dataset.events(args.contacts, args.accounts, now, per_contact=args.per_contact)
    rules = dataset.rules_for(args.accounts, args.rules_per_account)
    log(f"dataset: {len(data.messages):,} events for {args.contacts:,} contacts in "
        f"{args.accounts} accounts, {len(rules):,} rules, "
        f"{data.payload_bytes / len(data.messages):.0f} bytes/event")
    runs = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    log(f"logs and state under {workdir}")
    for run in range(args.runs):
        runs.append(asyncio.run(one_run(args, rules, data, run, workdir)))
    result: dict[str, Any] = {
        "config": {"contacts": args.contacts, "accounts": args.accounts,
                   "rules": len(rules), "events": len(data.messages),
                   "bytes_per_event": data.payload_bytes / len(data.messages),
                   "partitions": common.PARTITIONS, "runs": args.runs, "store": "memory://"},
        "summary": summarise(runs, args.guarantee),
        "runs": runs,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    for g in args.guarantee:
        s = result["summary"][g]
        print(f"{g}: stream {statistics.median(s['stream_events_per_s']['runs']):,.0f} events/s,"
              f" bare {s['bare_events_per_s']['median']:,.0f}, ratio "
              f"{s['ratio_to_bare']['median']:.3f}"
              + (f", vs quix {s['ratio_to_peer']['median']:.2f}" if "ratio_to_peer" in s
                 else ""))
    return result


if __name__ == "__main__":
    main()
