"""A peer: the same classify + count pipeline, written plainly in Faust (faust-streaming).

    python bench/peer_faust.py --prefix PREFIX --rules RULES.json --state-dir DIR
        [--guarantee at_least_once|exactly_once] [--commit-interval 0.1]

What a user would write with faust-streaming (>= 0.15.2) on the same broker and data:

1. an agent on `{prefix}stripe.events` (raw bytes, keyed by connection + customer):
   a table per customer remembers the email from `customer.*` events and the fact ids
   already emitted; it classifies with the project's pure `stream.classify.classify`
   and picks the email (the object's, else the customer's);
2. each fact goes to `{prefix}faust.facts` keyed by contact (account + email): Faust
   repartitions through a topic, as our stream does through `stripe.facts`;
3. an agent on that topic: a table per contact keeps its facts and memberships,
   evaluates the account's rules for the fact's filter with `rules.is_member` (the
   "count": `occurrences` conditions included) and sends `joined`/`left` to
   `{prefix}faust.membership` when membership flips.

Settings, following SPEC's notes on Faust: agents at concurrency 1 (higher can commit
past a message still in flight), `stream_buffer_maxsize` 131072 (the docs' figure for
~30k events/s; the default is 4096), the commit interval set to ours (0.1 s; Faust's
default is 2.8 s), `store="memory://"` (tables rebuilt from their changelog topics at
start, like our benchmark worker's memory tables), `processing_guarantee` as asked.
Rules are loaded once from a file at start: no rule topic, no timers, no history
horizon, no parking of email-less facts, no dead letters (docs/benchmarks.md lists
every difference).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faust
import orjson

from rules import RuleIndex, is_member, parse_rule
from stream.classify import ClassifyError, classify, customer_email_update
from stream.facts import Fact


def build(prefix: str, rules_file: Path, state_dir: str, guarantee: str,
          commit_interval: float, partitions: int) -> faust.App:
    index = RuleIndex([parse_rule(doc) for doc in orjson.loads(rules_file.read_bytes())])
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "localhost:9092"
    app = faust.App(
        f"{prefix}faust", broker=f"kafka://{bootstrap}", store="memory://",
        processing_guarantee=guarantee, stream_buffer_maxsize=131072,
        broker_commit_interval=commit_interval, topic_partitions=partitions,
        topic_replication_factor=1, datadir=state_dir, web_enabled=False,
        consumer_auto_offset_reset="earliest", key_serializer="raw", value_serializer="json")
    events = app.topic(f"{prefix}stripe.events", key_serializer="raw", value_serializer="raw")
    facts_topic = app.topic(f"{prefix}faust.facts", key_serializer="raw",
                            value_serializer="raw", partitions=partitions, internal=True)
    changes = app.topic(f"{prefix}faust.membership", key_serializer="raw",
                        value_serializer="raw", partitions=partitions, internal=True)
    # Tables: keys raw bytes, values JSON (the app's serializers).
    customers = app.Table("customers", default=dict, partitions=partitions)
    contacts = app.Table("contacts", default=dict, partitions=partitions)

    @app.task
    async def declare_output() -> None:  # no agent reads it, so Faust would not create it
        await changes.maybe_declare()

    @app.agent(events, concurrency=1)
    async def to_facts(stream: Any) -> None:
        async for key, value in stream.items():
            envelope = orjson.loads(value)
            event = envelope["event"]
            state = customers[key]
            try:
                update = customer_email_update(event)
                occurrences = classify(event)
            except ClassifyError:
                continue
            changed = False
            if update is not None and update[1] is not None:
                state["email"] = update[1]
                changed = True
            seen = state.setdefault("seen", [])
            for occ in occurrences:
                email = occ.email_candidates[0] if occ.email_candidates else state.get("email")
                if email is None or occ.fact_id in seen:
                    continue
                seen.append(occ.fact_id)
                changed = True
                fact = occ.to_fact(envelope["account_id"], envelope["connection_id"], email)
                contact = f"{fact.account_id}\x1f{fact.email}".encode()
                await facts_topic.send(key=contact, value=orjson.dumps(fact.to_dict()))
            if changed:
                customers[key] = state

    @app.agent(facts_topic, concurrency=1)
    async def membership(stream: Any) -> None:
        async for key, value in stream.items():
            fact = orjson.loads(value)
            state = contacts[key]
            facts: dict[str, Any] = state.setdefault("facts", {})
            facts[fact["fact_id"]] = fact
            members: list[str] = state.setdefault("members", [])
            now = int(time.time())
            same_filter = [Fact.from_dict(f) for f in facts.values()
                           if f["filter"] == fact["filter"]]
            for rule in index.for_fact(fact["account_id"], fact["filter"]):
                member = is_member(rule, same_filter, now)
                if member == (rule.id in members):
                    continue
                if member:
                    members.append(rule.id)
                else:
                    members.remove(rule.id)
                change = {"account_id": fact["account_id"], "segment_id": rule.id,
                          "email": fact["email"], "change": "joined" if member else "left",
                          "fact_id": fact["fact_id"], "rule_version": rule.version}
                await changes.send(key=key, value=orjson.dumps(change))
            contacts[key] = state

    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--rules", type=Path, required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--guarantee", default="at_least_once",
                        choices=("at_least_once", "exactly_once"))
    parser.add_argument("--commit-interval", type=float, default=0.1)
    args = parser.parse_args()
    partitions = int(os.environ.get("SEGMENTS_PARTITIONS", "4"))
    app = build(args.prefix, args.rules, args.state_dir, args.guarantee,
                args.commit_interval, partitions)
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
