"""The peer: the same classify + count pipeline, written plainly in Quix Streams.

    python bench/peer_quix.py --prefix PREFIX --rules RULES.json --state-dir DIR
        [--guarantee at-least-once|exactly-once] [--commit-interval 0.1]

What a user would write with quixstreams (3.x) on the same broker and data:

1. consume `{prefix}stripe.events` (JSON, keyed by connection + customer);
2. a stateful step per customer: remember the customer's email from `customer.*`
   events, classify with the project's pure `stream.classify.classify`, pick the email
   (the object's, else the customer's), drop fact ids already seen;
3. `group_by` the contact (account + email): Quix repartitions through a topic, as our
   stream does through `stripe.facts`;
4. a stateful step per contact: keep its facts, evaluate the account's rules for the
   fact's filter with `rules.is_member` (the "count": `occurrences` conditions included),
   and emit `joined`/`left` when membership flips, to `{prefix}quix.membership`.

Rules are loaded once from a file at start (a plain user has no rule topic), and there
are no timers, no history horizon and no parking of email-less facts: the peer does
strictly less work per event than our stream (docs/benchmarks.md lists every
difference). State is Quix's RocksDB with changelog topics (its defaults); the
processing guarantee is as asked (Quix's default is at-least-once), the commit interval
is ours (0.1 s; Quix's default is 5 s).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from quixstreams import Application, State

from rules import RuleIndex, is_member, parse_rule
from stream.classify import ClassifyError, classify, customer_email_update
from stream.facts import Fact


def build(prefix: str, rules_file: Path, state_dir: str, guarantee: str,
          commit_interval: float = 0.1) -> Application:
    index = RuleIndex([parse_rule(doc) for doc in orjson.loads(rules_file.read_bytes())])
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "localhost:9092"
    app = Application(broker_address=bootstrap, consumer_group=f"{prefix}quix",
                      auto_offset_reset="earliest", state_dir=state_dir,
                      processing_guarantee=guarantee,  # type: ignore[arg-type]
                      commit_interval=commit_interval,
                      loglevel=os.environ.get("QUIX_LOGLEVEL", "WARNING"),  # type: ignore[arg-type]
                      )
    events = app.topic(f"{prefix}stripe.events", key_deserializer="bytes",
                       value_deserializer="json")
    changes = app.topic(f"{prefix}quix.membership", key_serializer="string",
                        value_serializer="json")

    def to_facts(envelope: dict[str, Any], state: State[Any, Any]) -> list[dict[str, Any]]:
        event = envelope["event"]
        try:
            update = customer_email_update(event)
            if update is not None and update[1] is not None:
                state.set("email", update[1])
            occurrences = classify(event)
        except ClassifyError:
            return []
        facts = []
        for occ in occurrences:
            email = occ.email_candidates[0] if occ.email_candidates else state.get("email")
            if email is None or state.exists(occ.fact_id):
                continue
            state.set(occ.fact_id, 1)
            fact = occ.to_fact(envelope["account_id"], envelope["connection_id"], email)
            facts.append(fact.to_dict())
        return facts

    def membership(fact: dict[str, Any], state: State[Any, Any]) -> list[dict[str, Any]]:
        facts: dict[str, Any] = state.get("facts", {})
        facts[fact["fact_id"]] = fact
        state.set("facts", facts)
        members: list[str] = state.get("members", [])
        now = int(time.time())
        same_filter = [Fact.from_dict(f) for f in facts.values() if f["filter"] == fact["filter"]]
        out = []
        for rule in index.for_fact(fact["account_id"], fact["filter"]):
            member = is_member(rule, same_filter, now)
            if member != (rule.id in members):
                if member:
                    members.append(rule.id)
                else:
                    members.remove(rule.id)
                out.append({"account_id": fact["account_id"], "segment_id": rule.id,
                            "email": fact["email"], "change": "joined" if member else "left",
                            "fact_id": fact["fact_id"], "rule_version": rule.version})
        if out:
            state.set("members", members)
        return out

    sdf = app.dataframe(events)
    sdf = sdf.apply(to_facts, stateful=True, expand=True)
    sdf = sdf.group_by(lambda fact: f"{fact['account_id']}\x1f{fact['email']}",
                       name="contact", key_serializer="string", key_deserializer="string")
    sdf = sdf.apply(membership, stateful=True, expand=True)
    sdf.to_topic(changes)
    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--rules", type=Path, required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--guarantee", default="at-least-once",
                        choices=("at-least-once", "exactly-once"))
    parser.add_argument("--commit-interval", type=float, default=0.1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    build(args.prefix, args.rules, args.state_dir, args.guarantee, args.commit_interval).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
