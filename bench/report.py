"""docs/benchmarks.md from the JSON report of `bench/run_all.py`."""

from __future__ import annotations

from typing import Any

Row = tuple[str, dict[str, Any] | None, str, str, str]  # figure, summary, unit, goal, met


def _num(value: float, unit: str) -> str:
    if unit in ("events/s", "facts/s", "MiB", "ms", "µs") and abs(value) >= 100:
        return f"{value:,.0f}"
    if unit == "count":
        return f"{value:,.0f}"
    if unit == "ratio":
        return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def _cell(summary: dict[str, Any] | None, unit: str) -> tuple[str, str, str]:
    if not summary:
        return ("n/a", "", "")
    return (_num(summary["median"], unit), _num(summary["min"], unit),
            _num(summary["max"], unit))


def _get(report: dict[str, Any], *path: str) -> Any:
    node: Any = report["benchmarks"]
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _met(summary: dict[str, Any] | None, ok: bool | None) -> str:
    if summary is None or ok is None:
        return ""
    return "yes" if ok else "**no**"


def _saved_row(found: dict[str, Any] | None) -> list[Row]:
    """The preview's count against the members the saved rule then produced."""
    if not found:
        return []
    n = found["saved_members"]
    return [(f"members of the saved rule (preview {found['preview_count']:,}, joins "
             f"{found['saved_joins']:,}, computed {found['computed']:,})",
             {"median": n, "min": n, "max": n}, "contacts", "= preview count",
             "yes" if found["equal"] else "**no**")]


def rows(report: dict[str, Any]) -> list[tuple[str, list[Row]]]:
    sections: list[tuple[str, list[Row]]] = []

    tp = _get(report, "throughput", "result", "summary") or {}
    cfg = _get(report, "throughput", "result", "config") or {}
    names = {"stream": "ours (stream worker)", "bare": "bare aiokafka consume + orjson parse",
             "quix": "Quix Streams peer", "faust": "Faust (faust-streaming) peer"}
    tp_rows: list[Row] = []
    for label, summary in (tp.get("events_per_s") or {}).items():
        system, guarantee = label.split("/")
        shown = names.get(system, system) + ("" if guarantee == "none" else f", {guarantee}")
        tp_rows.append((shown, summary, "events/s", "", ""))
    for label, summary in (tp.get("ratios") or {}).items():
        goal, met = "", ""
        if label.startswith("stream/exactly_once : bare"):
            goal, met = ">= 0.2", _met(summary, summary["median"] >= 0.2)
        elif label.startswith("stream/") and ": bare" not in label:
            goal, met = ">= 1.5", _met(summary, summary["median"] >= 1.5)
        tp_rows.append((f"ratio {label}", summary, "ratio", goal, met))
    for label, summary in (tp.get("rss_mib") or {}).items():
        tp_rows.append((f"RSS after the run, {label}", summary, "MiB", "", ""))
    if tp.get("bare_offered_s"):
        tp_rows.append(("the harness offering the input (its own ceiling)",
                        tp["bare_offered_s"], "s", "", ""))
    sections.append((
        f"End-to-end throughput, one process each, by one clock ({cfg.get('events', 0):,} "
        f"events for {cfg.get('contacts', 0):,} contacts, {cfg.get('rules', 0):,} rules over "
        f"{cfg.get('accounts', '?')} accounts; wall time from the first input offered to the "
        f"last output received by a read_committed consumer; runs interleaved)", tp_rows))

    c = _get(report, "classify", "result", "summary") or {}
    c_cfg = _get(report, "classify", "result", "config") or {}
    g = _get(report, "logic", "result", "summary") or {}
    sections.append((f"Classification alone, one worker, {c_cfg.get('guarantee', '')} "
                     f"({c_cfg.get('events', 0):,} events; the worker runs only that stage)", [
        ("classify stage", c.get("events_per_s"), "events/s", "", ""),
        ("facts written", c.get("facts_per_s"), "facts/s", "", ""),
        ("bare aiokafka consume + orjson parse, same messages", c.get("bare_events_per_s"),
         "events/s", "", ""),
        ("ratio classify / bare", c.get("ratio_to_bare"), "ratio", "", ""),
        ("our Python alone, no broker: classification per event",
         g.get("classify_us_per_event"), "µs", "", ""),
        ("our Python alone, no broker: membership per fact", g.get("membership_us_per_fact"),
         "µs", "", ""),
        ("hence at most (one core, no Kafka at all)", g.get("ceiling_events_per_s"),
         "events/s", "", ""),
    ]))

    lat = _get(report, "latency", "result", "summary") or {}
    lat_cfg = _get(report, "latency", "result", "config") or {}
    lat_rows: list[Row] = []
    for label, s in lat.items():
        goal, met = "", ""
        if s["rate"] >= 1000:  # #20: p99 < 100 ms at-least-once, < 300 ms exactly-once
            bound = 100 if s["guarantee"] == "at_least_once" else 300
            goal = f"p99 < {bound}"
            met = _met(s["p99_ms"], s["p99_ms"]["median"] < bound)
        sent = int(s["rate"] * lat_cfg.get("seconds", 0))
        lat_rows.append((f"{label}: p50", s["p50_ms"], "ms", "", ""))
        lat_rows.append((f"{label}: p99", s["p99_ms"], "ms", goal, met))
        lat_rows.append((f"{label}: POSTs refused (5xx or timeout), of {sent:,}",
                         s["http_errors"], "count", "", ""))
        lat_rows.append((f"{label}: accepted but never seen", s["missing"], "count", "", ""))
    sections.append(("Latency, webhook POST to membership event readable (read_committed "
                     "reader), open-loop offered load", lat_rows))

    r = _get(report, "rules", "result", "summary") or {}
    st = _get(report, "state", "result", "summary") or {}
    st_cfg = _get(report, "state", "result", "config") or {}
    ri, rr = r.get("index") or {}, r.get("route") or {}
    ns = ri.get("ns_per_fact") or {}
    per_account = ri.get("time_ratio_100_to_10_per_account")
    total = ri.get("throughput_ratio_100k_to_10")
    sections.append(("Rule-count scaling (`RuleIndex.matching`: the rules a fact satisfies) "
                     "and recompute", [
        ("per fact, 10 rules in total", ns.get("10 rules (1 account)"), "ns", "", ""),
        ("per fact, 100,000 rules, fact's account has 10",
         ns.get("100,000 rules, fact's account has 10"), "ns", "", ""),
        ("per fact, 100,000 rules, fact's account has 100",
         ns.get("100,000 rules, fact's account has 100"), "ns", "", ""),
        ("per fact, 100,000 rules, facts of all 1,000 accounts (cache-cold)",
         ns.get("100,000 rules, facts of all 1,000 accounts"), "ns", "", ""),
        ("time ratio 100 / 10 rules in the fact's account (same installation)", per_account,
         "ratio", "<= 2", _met(per_account, per_account["median"] <= 2 if per_account else None)),
        ("same, without the index (one evaluation per rule of the route)",
         rr.get("time_ratio_100_to_10_per_account"), "ratio", "", ""),
        ("throughput ratio 100,000 rules / 10 rules (fact's account has 10)", total, "ratio",
         ">= 0.9", _met(total, total["median"] >= 0.9 if total else None)),
        (f"recompute a new rule over {st_cfg.get('contacts', 0):,} contacts' histories "
         f"(joins published included)", st.get("recompute_s"), "s", "", ""),
    ]))

    so = _get(report, "scaleout", "result", "summary") or {}
    so_cfg = _get(report, "scaleout", "result", "config") or {}
    sections.append((f"Scale-out on {so_cfg.get('partitions', '?')} partitions "
                     f"({so_cfg.get('guarantee', '')}, `segments worker` processes, "
                     f"{so_cfg.get('events', 0):,} events)", [
        ("one worker", so.get("one_worker_events_per_s"), "events/s", "", ""),
        ("two workers", so.get("two_workers_events_per_s"), "events/s", "", ""),
        ("ratio two / one", so.get("ratio_two_to_one"), "ratio", "", ""),
    ]))

    sections.append((f"Memory ({st_cfg.get('facts', 0):,} facts of "
                     f"{st_cfg.get('contacts', 0):,} contacts' 30-day histories)", [
        ("worker RSS per 100,000 contacts with their histories",
         st.get("rss_per_100k_contacts_mib"), "MiB", "<= 400",
         _met(st.get("rss_per_100k_contacts_mib"),
              st.get("rss_per_100k_contacts_mib", {}).get("median", 1e9) <= 400)),
        ("building the histories (membership stream)", st.get("build_facts_per_s"),
         "facts/s", "", ""),
    ]))

    b = _get(report, "backfill", "result", "summary") or {}
    bounds = b.get("bounds", {})
    sections.append(("Backfill from localstripe to stripe.events (acks=all)", [
        ("paced at 20 requests/s (default), 100 events a page",
         (b.get("paced") or {}).get("events_per_s"), "events/s", "<= 2,000 (the pacing)", ""),
        ("unpaced", (b.get("unpaced") or {}).get("events_per_s"), "events/s", "", ""),
        ("unpaced, one publish at a time", (b.get("sequential") or {}).get("events_per_s"),
         "events/s", "", ""),
        ("bound set by Stripe's live rate limit (100 requests/s x 100 events)",
         {"median": bounds.get("live_events_per_s", 10_000),
          "min": bounds.get("live_events_per_s", 10_000),
          "max": bounds.get("live_events_per_s", 10_000)}, "events/s", "", ""),
    ]))

    pv = _get(report, "preview", "result", "summary") or {}
    pv_cfg = _get(report, "preview", "result", "config") or {}
    p99, e99 = pv.get("preview_p99_ms"), pv.get("explain_p99_ms")
    sections.append((f"Preview and explain ({pv_cfg.get('contacts', 0):,} contacts, "
                     f"{pv_cfg.get('partitions', '?')} partitions, 2 workers, through the "
                     "query API)", [
        ("preview p50", pv.get("preview_p50_ms"), "ms", "", ""),
        ("preview p99", p99, "ms", "< 1,000", _met(p99, p99 and p99["median"] < 1000)),
        ("explain p50", pv.get("explain_p50_ms"), "ms", "", ""),
        ("explain p99", e99, "ms", "< 200", _met(e99, e99 and e99["median"] < 200)),
        *_saved_row(_get(report, "preview", "result", "verify_saved")),
    ]))

    for key in ("takeover", "takeover_1m"):
        if _get(report, key, "result", "summary"):
            sections.append(_takeover_section(report, key))
    return sections


def _takeover_section(report: dict[str, Any], key: str) -> tuple[str, list[Any]]:
    tk = _get(report, key, "result", "summary") or {}
    contacts = (_get(report, key, "result", "config") or {}).get("contacts", 0)
    took, mem = tk.get("takeover_s"), tk.get("rss_per_100k_contacts_mib")
    # The < 10 s goal is for 100,000 contacts; larger states are reported, not judged.
    judged = contacts == 100_000
    return (f"Takeover: a new worker process taking over every partition of "
            f"{contacts:,} contacts (exactly_once, old worker stopped with SIGTERM)", [
        ("old worker gone to every partition serving again", took, "s",
         "< 10" if judged else "report",
         _met(took, took and took["median"] < 10) if judged else ""),
        ("worker RSS per 100,000 contacts, recovered from the changelogs", mem, "MiB",
         "<= 400", _met(mem, mem and mem["median"] <= 400)),
    ])


PEER_DIFFERENCES = [
    "## How the peers differ from our pipeline", "",
    "Both peers (`bench/peer_quix.py`, `bench/peer_faust.py`) run the same pure code as we do "
    "(`stream.classify.classify`, `rules.is_member`) in two stages with a repartition "
    "topic between them, on the same broker and data; what they lack, they lack because a "
    "user of that framework would have to build it:", "",
    "| ours | Quix Streams peer | Faust peer |", "|---|---|---|",
    "| rules from the `segments.rules` topic, changes applied live and recomputed | rules "
    "read once from a file at start | same as Quix |",
    "| timers: relative windows leave on time (`next_change`) | none: a contact leaves "
    "only when a new fact arrives | none |",
    "| history horizon and cap (`prune`, `hold`) | facts kept for ever | facts kept for "
    "ever |",
    "| email-less facts parked until the customer's email is known | dropped | dropped |",
    "| dead letters for undecodable or unclassifiable events | skipped | skipped |",
    "| members topic / read model records (`segments.membership` with cause, time) | a "
    "smaller change record on `quix.membership` | same on `faust.membership` |",
    "| fact ids deduplicated per contact, facts compacted to a changelog | per customer "
    "(state key per fact id) | per customer (a list in the table value) |",
    "| state: memory:// tables with changelogs (benchmark worker) | RocksDB with changelog "
    "topics (Quix's default) | memory:// tables with changelogs (SPEC's note) |",
    "| guarantees: at-least-once and exactly-once | both (`exactly-once`) | both "
    "(`processing_guarantee=\"exactly_once\"`; open reports of ProducerFenced, issue 323) |",
    "| commit interval 0.1 s | 0.1 s (default 5 s) | 0.1 s (default 2.8 s); "
    "`stream_buffer_maxsize` 131072, agents at concurrency 1 |",
    "",
]


def notes_of(markdown: str) -> list[str]:
    """The quoted notes (`> ...` lines) under the title of an earlier report: how it was
    made, what changed since. A partial run (`--only`) keeps them, as the figures they
    describe stay in the report; a full run starts without them."""
    lines = markdown.splitlines()[2:]
    notes = []
    for line in lines:
        if not line.startswith(">"):
            break
        notes.append(line)
    return notes


def write_markdown(report: dict[str, Any], notes: list[str] | None = None) -> str:
    m = report["machine"]
    # One run: every benchmark at this run's commit, started after it began.
    one_run = all(e.get("git") == report["git"] and e.get("started", "") >= report["started"]
                  for e in report["benchmarks"].values())
    generated = (f"Generated by `{report['command']}` ({report['mode']} mode) at "
                 f"{report['started']} on commit {report['git']}, in "
                 f"{report.get('total_seconds', 0) / 60:.1f} minutes.")
    if not one_run:
        generated = (f"Last updated by `{report['command']}` at {report['started']} on commit "
                     f"{report['git']}; the other figures come from an earlier run of "
                     f"`make bench`. Each benchmark's time and commit are in the last table.")
    lines = [
        "# Benchmarks",
        "",
        *([*notes, ""] if notes else []),
        generated,
        "",
        f"Machine: {m['nproc']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, Python "
        f"{m['python']}, {m['platform']}. Kafka: a single-node KRaft broker started by "
        f"`segments/stack` on the same machine ({report.get('kafka', 'localhost:9092')}); "
        f"topics have {report['partitions']} partitions. The machine is shared: other work "
        f"ran beside the benchmarks, so each benchmark's load average is in the last table. "
        f"Load average at the start: {report['load_average_start']}.",
        "",
        "Every figure is the median of the runs, with the min and max; the JSON beside this "
        "file (`docs/benchmarks.json`) has each run. Each benchmark's own command reproduces "
        "it alone (see the last table).",
        "",
    ]
    for title, section in rows(report):
        lines += [f"## {title}", "", "| figure | median | min | max | unit | goal | met |",
                  "|---|---:|---:|---:|---|---|---|"]
        for figure, summary, unit, goal, met in section:
            median, low, high = _cell(summary, unit)
            lines.append(f"| {figure} | {median} | {low} | {high} | {unit} | {goal} | {met} |")
        lines.append("")
    profile = _get(report, "profile", "result") or {}
    for name, data in profile.items():
        if not name.startswith("throughput-"):
            continue
        lines += [f"## Profile of the worker's event loop ({name[len('throughput-'):]}, "
                  f"py-spy, {data['samples']:,} samples)", "",
                  "Self time by where the innermost frame is:", "",
                  "| share | where |", "|---:|---|"]
        lines += [f"| {pct:.1f}% | {group} |" for group, pct in
                  data["by_group_self_pct"].items()]
        lines += ["", "Top functions (self and inclusive share):", "",
                  "| self | inclusive | function |", "|---:|---:|---|"]
        lines += [f"| {e['self_pct']:.1f}% | {e['total_pct']:.1f}% | `{e['function']}` |"
                  for e in data["top_self"][:15]]
        lines.append("")
    lines += PEER_DIFFERENCES
    lines += ["## Commands", "",
              "| benchmark | command | run at, commit | minutes | load avg before → after |",
              "|---|---|---|---:|---|"]
    for name, entry in report["benchmarks"].items():
        status = f" (failed: {entry['error']})" if "error" in entry else ""
        when = f"{entry.get('started', report['started'])}, {entry.get('git', report['git'])}"
        lines.append(f"| {name} | `{entry['command']}`{status} | {when} | "
                     f"{entry['seconds'] / 60:.1f} | "
                     f"{entry['load_average_before']} → {entry['load_average_after']} |")
    lines.append("")
    return "\n".join(lines)
