"""`make bench`: run every benchmark on the local broker, write docs/benchmarks.{md,json}.

    python bench/run_all.py [--quick] [--only NAME ...] [--out docs]

Needs the local stack (`segments stack up`: Kafka on 127.0.0.1:9092, Redis). Each
benchmark runs on its own fresh topic prefixes; one that fails is recorded with its
error and the others still run. `--quick` scales the data down (for a check that the
suite works, in about 4 minutes); the default sizes are the issue's (about 10 minutes).
`--profile` adds a py-spy profile of one throughput run to the report. `--only NAME`
re-runs those benchmarks and keeps the others' last results (each entry says when and
on which commit it ran).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.report import notes_of, write_markdown

log = common.log

PROFILE_DIR = "/tmp/segments-bench-profile"
FULL: dict[str, list[str]] = {
    "profile": ["--contacts", "100000", "--runs", "1", "--no-peer", "--profile", PROFILE_DIR],
    "throughput": ["--contacts", "100000", "--accounts", "100", "--rules-per-account", "10",
                   "--runs", "3", "--guarantee", "at_least_once", "exactly_once"],
    "classify": ["--contacts", "100000", "--runs", "3"],
    "logic": ["--contacts", "50000", "--runs", "3"],
    "latency": ["--rates", "1000", "250", "--seconds", "4", "--runs", "3",
                "--eos-commit-intervals", "0.1", "1.0"],
    "scaleout": ["--contacts", "6000", "--runs", "3"],
    "state": ["--contacts", "100000", "--facts-per-contact", "2", "--runs", "3"],
    "backfill": ["500", "--repeats", "3"],
    "rules": ["--runs", "9"],
    "preview": ["--contacts", "100000", "--partitions", "8", "--previews", "200",
                "--explains", "1000", "--runs", "3"],
    "takeover": ["--contacts", "100000", "--runs", "3"],
    # The 1,000,000-contact figure #20 asks to report (about 2 GiB of state; its
    # histories are generated while produced, so the bench process stays small).
    "takeover_1m": ["--contacts", "1000000", "--runs", "3"],
}
QUICK: dict[str, list[str]] = {
    "profile": ["--contacts", "5000", "--runs", "1", "--no-peer", "--profile", PROFILE_DIR],
    "throughput": ["--contacts", "2000", "--accounts", "100", "--rules-per-account", "10",
                   "--runs", "2", "--guarantee", "at_least_once", "exactly_once"],
    "classify": ["--contacts", "10000", "--runs", "3"],
    "logic": ["--contacts", "10000", "--runs", "3"],
    "latency": ["--rates", "1000", "250", "--seconds", "2", "--runs", "3",
                "--eos-commit-intervals", "0.1", "1.0"],
    "scaleout": ["--contacts", "3000", "--runs", "3"],
    "state": ["--contacts", "10000", "--facts-per-contact", "2", "--runs", "3"],
    "backfill": ["100", "--repeats", "3"],
    "rules": ["--runs", "3", "--facts", "30000"],
    "preview": ["--contacts", "10000", "--partitions", "8", "--previews", "50",
                "--explains", "200", "--runs", "3"],
    "takeover": ["--contacts", "10000", "--runs", "2"],
    "takeover_1m": ["--contacts", "20000", "--runs", "1"],
}
SCRIPTS = {"profile": "bench_throughput.py", "throughput": "bench_throughput.py",
           "classify": "bench_classify.py", "logic": "bench_logic.py",
           "latency": "bench_latency.py", "scaleout": "bench_scaleout.py",
           "state": "bench_state.py",
           "backfill": "bench_backfill.py", "rules": "bench_rules.py",
           "preview": "bench_preview.py", "takeover": "bench_takeover.py",
           "takeover_1m": "bench_takeover.py"}


def run_rules(argv: list[str]) -> dict[str, Any]:
    from bench import bench_rules

    runs = int(argv[argv.index("--runs") + 1])
    facts = int(argv[argv.index("--facts") + 1]) if "--facts" in argv else bench_rules.FACTS_PER_RUN
    rows = bench_rules.measure(runs, facts)
    return {"rows": rows, "facts_per_run": facts, "summary": bench_rules.summarise(rows)}


def run_backfill(argv: list[str]) -> dict[str, Any]:
    from bench import bench_backfill

    customers = int(argv[0])
    repeats = int(argv[argv.index("--repeats") + 1])
    runs = asyncio.run(bench_backfill.main(customers, repeats))
    summary = {name: {"events_per_s": common.summary([r["events_per_s"] for r in rows]),
                      "requests_per_s": common.summary([r["requests_per_s"] for r in rows]),
                      "events": rows[0]["events"]}
               for name, rows in runs.items()}
    events_per_page = 100
    summary["bounds"] = {"live_events_per_s": 100 * events_per_page,
                         "test_events_per_s": 25 * events_per_page,
                         "paced_default_events_per_s": 20 * events_per_page}
    return {"customers": customers, "summary": summary, "runs": runs}


def runners() -> dict[str, Callable[[list[str]], dict[str, Any]]]:
    from bench import (
        bench_classify,
        bench_latency,
        bench_logic,
        bench_preview,
        bench_scaleout,
        bench_state,
        bench_takeover,
        bench_throughput,
    )

    return {"rules": run_rules, "backfill": run_backfill, "profile": run_profile,
            "throughput": bench_throughput.main, "latency": bench_latency.main,
            "classify": bench_classify.main, "logic": bench_logic.main,
            "scaleout": bench_scaleout.main, "state": bench_state.main,
            "preview": bench_preview.main, "takeover": bench_takeover.main,
            "takeover_1m": bench_takeover.main}


def run_profile(argv: list[str]) -> dict[str, Any]:
    """One throughput run with py-spy on the worker: where the event loop's time goes."""
    from bench import bench_throughput, profiles

    if not profiles.available():
        raise RuntimeError("py-spy is not installed (pip install -e '.[bench]')")
    out = Path(argv[argv.index("--profile") + 1])
    result = bench_throughput.main(argv)
    profile: dict[str, Any] = {"throughput": result["summary"]}
    for path in sorted(out.glob("throughput-*.txt")):
        samples, own, inclusive = profiles.top(path, limit=20)
        profile[path.stem] = {
            "samples": samples, "by_group_self_pct": profiles.by_group(path),
            "top_self": [e.__dict__ for e in own], "top_inclusive": [e.__dict__ for e in inclusive]}
    return profile


async def delete_bench_topics() -> int:
    """Every topic this run's benchmarks created (theirs and the Quix peer's; Faust's
    start with the prefix too): a broker left with thousands of partitions (gigabytes)
    is slower for the next benchmark. Only this run's prefixes: another benchmark may
    be running on the same broker."""
    from common.topics import delete_topics_with_prefix

    prefixes = list(common.CREATED_PREFIXES)
    settings = common.fresh_settings()
    total = 0
    for prefix in prefixes:
        for name in (prefix, f"repartition__{prefix}", f"changelog__{prefix}"):
            total += await delete_topics_with_prefix(settings, name)
    return total


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=common.REPO).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True,
                               cwd=common.REPO).stdout.strip()
        return head + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data, same figures")
    parser.add_argument("--only", nargs="*", choices=sorted(SCRIPTS), default=None)
    parser.add_argument("--out", type=Path, default=common.REPO / "docs")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one throughput run with py-spy (shares in the report)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    names = args.only or [name for name in SCRIPTS if name != "profile" or args.profile]
    args.out.mkdir(parents=True, exist_ok=True)
    flags = " ".join(sys.argv[1:])
    command = "make bench" + (f" BENCH_ARGS='{flags}'" if flags else "")
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        command = f"KAFKA_BOOTSTRAP_SERVERS={os.environ['KAFKA_BOOTSTRAP_SERVERS']} {command}"
    report: dict[str, Any] = {
        "command": command, "mode": "quick" if args.quick else "full",
        "machine": common.machine(), "git": git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_average_start": load_average(),
        "partitions": common.PARTITIONS, "benchmarks": {},
        "kafka": os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "localhost:9092"}
    previous = args.out / "benchmarks.json"
    if args.only and previous.exists():
        kept = json.loads(previous.read_text()).get("benchmarks", {})
        report["benchmarks"] = {k: v for k, v in kept.items() if k not in names}
    started = time.perf_counter()
    for name in names:
        argv = plan[name]
        log(f"=== {name}: python bench/{SCRIPTS[name]} {' '.join(argv)}")
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"command": f"python bench/{SCRIPTS[name]} {' '.join(argv)}",
                                 "load_average_before": load_average(), "git": report["git"],
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            entry["result"] = runners()[name](list(argv))
        except Exception as exc:  # one failing benchmark must not hide the others
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()
            log(f"{name} failed: {entry['error']}")
        entry["seconds"] = time.perf_counter() - t0
        entry["load_average_after"] = load_average()
        report["benchmarks"][name] = entry
        (args.out / "benchmarks.json").write_text(json.dumps(report, indent=2))
    report["total_seconds"] = time.perf_counter() - started
    # At the end, not between benchmarks: the broker deletes the files a minute later
    # (file.delete.delay.ms), which would land in the middle of the next benchmark.
    log(f"deleted {asyncio.run(delete_bench_topics())} benchmark topics")
    (args.out / "benchmarks.json").write_text(json.dumps(report, indent=2))
    markdown = args.out / "benchmarks.md"
    notes = notes_of(markdown.read_text()) if args.only and markdown.exists() else []
    markdown.write_text(write_markdown(report, notes))
    log(f"wrote {args.out / 'benchmarks.md'} and benchmarks.json in "
        f"{report['total_seconds'] / 60:.1f} min")
    return 1 if any("error" in e for e in report["benchmarks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
