"""Takeover: how long partitions holding N contacts are out of service when their worker
goes, and the memory their state takes.

    python bench/bench_takeover.py [--contacts 100000] [--facts-per-contact 2] [--runs 3]
        [--json FILE]

On a fresh topic prefix (`BENCH_PARTITIONS`, default 4), one exactly-once worker
(`bench/worker.py`) builds the state of N contacts, each with a 30-day history
(`bench_state.iter_histories`: the facts the classify stage would publish, generated
while they are produced), and 10 rules.
Then, `--runs` times, the worker holding every partition is stopped (SIGTERM: it
commits and leaves the group at once) and a new worker process is started in its
place: it joins, recovers every partition's state from the changelogs and serves. The
takeover time runs from the moment the old process has exited to the moment the last
of one sentinel per partition, produced at that same moment, has joined its segment
(read by a `read_committed` consumer; timestamps from this machine's clock): process
start, group join, recovery and processing included, the session timeout not (a
`kill -9` adds it, 10 s by default, before anyone takes over).

The new worker's RSS once it serves, minus the RSS of a worker serving an empty
state (measured first, on its own topics), scaled to 100,000 contacts, is the memory
figure: each run is an independent process that built its state from the changelogs.

Targets (#20): serving again in < 10 s for 100,000 contacts; <= 400 MiB per 100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, dataset
from bench.bench_state import ACCOUNT, iter_histories
from bench.bench_throughput import rule_messages, sentinel_keys
from common.settings import Settings
from common.topics import EVENTS_TOPIC, FACTS_TOPIC, MEMBERSHIP_TOPIC, RULES_TOPIC

log = common.log


async def serving(settings: Settings, tag: str, timeout: float, alive: Any) -> float:
    """Produce one sentinel per partition now; when the last one has joined (epoch s)."""
    start = await common.end_offsets(settings, MEMBERSHIP_TOPIC)
    marks = dataset.sentinels(settings.partitions, int(time.time()), tag=tag)
    await common.produce(settings, EVENTS_TOPIC, marks)
    return await common.wait_for_sentinels(settings, MEMBERSHIP_TOPIC, sentinel_keys(marks),
                                           timeout, start=start, alive=alive)


async def empty_baseline(workdir: Path, timeout: float) -> int:
    """RSS of a worker serving its rules and no contacts."""
    settings = common.fresh_settings(label="bench-takeover-empty")
    await common.prepare_topics(settings)
    rules = [dataset.rule_doc(ACCOUNT, n) for n in range(10)]
    await common.produce(settings, RULES_TOPIC, rule_messages([*rules, dataset.sentinel_rule()]))
    proc = common.start_process(common.bench_worker_cmd("exactly_once"),
                                common.worker_env(settings), workdir / "empty.log")
    try:
        await serving(settings, "empty-", timeout, lambda: proc.poll() is None)
        await asyncio.sleep(2)
        return common.rss_bytes(proc.pid)
    finally:
        common.stop_process(proc)


async def takeovers(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    baseline = await empty_baseline(workdir, args.timeout)
    settings = common.fresh_settings(label="bench-takeover")
    await common.prepare_topics(settings)
    rules = [dataset.rule_doc(ACCOUNT, n) for n in range(10)]
    await common.produce(settings, RULES_TOPIC, rule_messages([*rules, dataset.sentinel_rule()]))
    env = common.worker_env(settings)
    proc = common.start_process(common.bench_worker_cmd("exactly_once"), env,
                                workdir / "build.log")
    started = time.perf_counter()
    # Generated while produced: 1,000,000 contacts' facts are not held at once.
    facts = await common.produce(settings, FACTS_TOPIC, iter_histories(
        args.contacts, args.facts_per_contact, int(time.time())))
    await serving(settings, "built-", args.timeout, lambda: proc.poll() is None)
    log(f"state of {args.contacts:,} contacts ({facts:,} facts) built in "
        f"{time.perf_counter() - started:.1f}s")
    runs = []
    try:
        for run in range(args.runs):
            common.stop_process(proc)
            left = time.time()
            # INFO: its few start-up lines say where the time went (see `phases`).
            proc = common.start_process(
                [*common.bench_worker_cmd("exactly_once"), "--loglevel", "info"], env,
                workdir / f"run{run}.log")
            last = await serving(settings, f"run{run}-", args.timeout,
                                 lambda p=proc: p.poll() is None)  # type: ignore[misc]
            await asyncio.sleep(2)
            rss = common.rss_bytes(proc.pid)
            runs.append({"takeover_s": last - left, "rss_bytes": rss,
                         "phases": phases(workdir / f"run{run}.log", left),
                         "rss_per_100k_contacts_bytes":
                             (rss - baseline) * 100_000 / args.contacts})
            log(f"run {run}: serving again {last - left:.2f}s after the old worker left; "
                f"RSS {rss / 2**20:.0f} MiB (empty {baseline / 2**20:.0f} MiB)")
    finally:
        common.stop_process(proc)
    return {"prefix": settings.topic_prefix, "facts": facts,
            "rss_baseline_bytes": baseline, "runs": runs}


def phases(logfile: Path, left: float) -> dict[str, float]:
    """Seconds after the old worker left at which the new one's start-up steps ended,
    from its log lines (`asctime` to the millisecond, this machine's clock)."""
    marks = {"recovered": "recovered ", "assigned": "assigned partitions "}
    found: dict[str, float] = {}
    for line in logfile.read_text(errors="replace").splitlines():
        for name, needle in marks.items():
            if needle in line and name not in found:
                stamp = line[:23]
                try:
                    at = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S"))
                except ValueError:
                    continue
                found[name] = at + int(stamp[20:23]) / 1000 - left
    return found


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--facts-per-contact", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-takeover-"))
    log(f"takeover: {args.contacts:,} contacts, {common.PARTITIONS} partitions; "
        f"logs under {workdir}")
    run = asyncio.run(takeovers(args, workdir))
    runs = run["runs"]
    summary = {
        "takeover_s": common.summary([r["takeover_s"] for r in runs]),
        "rss_per_100k_contacts_mib": common.summary(
            [r["rss_per_100k_contacts_bytes"] / 2**20 for r in runs]),
    }
    result = {"config": {"contacts": args.contacts, "facts": run["facts"],
                         "partitions": common.PARTITIONS, "runs": args.runs,
                         "guarantee": "exactly_once"},
              "summary": summary, "run": run}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    print(f"takeover of {args.contacts:,} contacts: {summary['takeover_s']['median']:.2f}s; "
          f"RSS per 100,000 contacts {summary['rss_per_100k_contacts_mib']['median']:.0f} MiB")
    return result


if __name__ == "__main__":
    main()
