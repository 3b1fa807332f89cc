"""The agents: thin loops that decode, call a pure function, and send.

- `classify`: stripe.events → stripe.facts (dead letters to stripe.events.dlq).
- `rules`: segments.rules → one control message per membership partition, so every
  partition applies each rule change exactly once, in order with its facts.
- `membership`: stripe.facts + segments.control → segments.membership/members.
- a timer sends each assigned membership partition a clock tick, so relative windows
  open and close on time even when no fact arrives.

Each agent processes one event at a time inside `eos.processing`, which keeps a commit
from splitting an event's output (see stream/eos.py).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from connectors.contract import DLQ_TOPIC, EVENTS_TOPIC, ContractError, RawEvent
from rules import RuleError
from segments.settings import Settings
from stream import eos

# Faust ships no type information: its decorators are untyped by nature.
# mypy: disable-error-code="untyped-decorator"
from stream.app import CONTROL_TOPIC, StreamOptions
from stream.changes import MEMBERS_TOPIC, MEMBERSHIP_TOPIC, RULES_TOPIC, member_key, member_state
from stream.classify import ClassifyError
from stream.contacts import ContactResolver, ContactTables, Outcome, sweep
from stream.facts import FACTS_TOPIC, Fact, FactDecodeError
from stream.membership import (
    ContactState,
    on_fact,
    on_horizon,
    on_rule,
    on_time,
    prune,
    too_old,
)
from stream.metrics import StreamMetrics
from stream.partition_state import PartitionState, rule_from_doc
from stream.state import Codec, State, recover_all, state_topic

log = logging.getLogger("segments.stream")
#: How often each classify partition forgets dedup entries past their window.
SWEEP_SECONDS = 60


def wire(app: Any, settings: Settings, options: StreamOptions) -> None:
    clock = options.clock
    n = settings.partitions
    metrics = StreamMetrics()
    app.segments_metrics = metrics

    def topic(*names: str, **kw: Any) -> Any:
        return app.topic(*(settings.topic(name) for name in names), key_serializer="raw",
                         value_serializer="raw", **kw)

    raw_events = topic(EVENTS_TOPIC, partitions=n)
    dead_letters = topic(DLQ_TOPIC)
    facts_out = topic(FACTS_TOPIC, partitions=n)
    control_out = topic(CONTROL_TOPIC, partitions=n, retention=24 * 3600.0)
    membership_in = topic(FACTS_TOPIC, CONTROL_TOPIC, partitions=n)
    rules_in = topic(RULES_TOPIC, partitions=1)
    membership_out = topic(MEMBERSHIP_TOPIC)
    members_out = topic(MEMBERS_TOPIC)

    def state(name: str, codec: Codec = "json") -> State:
        store = State(name, settings.topic(state_topic(name)),
                      settings.kafka_bootstrap_servers, codec)
        store.changelog = topic(state_topic(name))
        states.append(store)
        return store

    states: list[State] = []
    customers, charges = state("customers"), state("charges")
    seen, parked = state("seen"), state("parked")
    contacts, partition_rules = state("contacts", "raw"), state("rules", "raw")
    partitions: dict[int, PartitionState] = {}

    async def ready(p: int, source_topic: str, *stores: State) -> None:
        """Recover partition p of `stores` on its first event after an assignment,
        together with every other assigned partition of `source_topic` not loaded yet."""
        if all(store.loaded(p) for store in stores):
            return
        assigned = {tp.partition for tp in app.assignor.assigned_actives()
                    if tp.topic == source_topic} | {p}
        missing = sorted(q for q in assigned if not all(s.loaded(q) for s in stores))
        await recover_all(list(stores), missing)

    async def flush_states() -> None:
        for store in states:
            await store.flush()

    async def dead_letter(event: Any, reason: str) -> None:
        metrics.dead_letters.inc()
        log.warning("dead letter: %s", reason)
        message = event.message
        await dead_letters.send(key=message.key, value=message.value, force=True, headers=[
            ("reason", reason.encode()), ("topic", message.topic.encode()),
            ("partition", str(message.partition).encode()),
            ("offset", str(message.offset).encode()),
        ])

    last_sweep: dict[int, int] = {}

    def maybe_sweep(p: int, tables: ContactTables) -> None:
        """Once a minute per partition, drop dedup entries past their window."""
        now = clock()
        if now - last_sweep.get(p, 0) < SWEEP_SECONDS:
            return
        last_sweep[p] = now
        removed, dropped = sweep(tables, now)
        metrics.no_email.inc(dropped)
        if removed or dropped:
            log.info("partition %d: swept %d expired entries, %d parked facts", p,
                     removed, dropped)

    async def look_up_emails(resolver: ContactResolver, raw: RawEvent, outcome: Outcome) -> None:
        """Ask the injected look-up for customers nobody told us about; release facts."""
        lookup = options.email_lookup
        if lookup is None:
            return
        for customer_id in outcome.parked_customers:
            try:
                email = await lookup(raw.connection_id, customer_id)
            except Exception as exc:  # a failed look-up leaves the facts parked
                metrics.email_lookup_failures.inc()
                log.warning("email look-up failed for a customer of %s: %s",
                            raw.connection_id, type(exc).__name__)
                continue
            learned = resolver.learn(raw, customer_id, email, clock())
            outcome.facts.extend(learned.facts)
            outcome.released += learned.released

    @app.agent(raw_events, name="classify", concurrency=1)
    async def classify(stream: Any) -> None:
        async for event in stream.events():
            async with eos.processing(app):
                p = event.message.partition
                await ready(p, settings.topic(EVENTS_TOPIC), customers, charges, seen, parked)
                tables = ContactTables(customers=customers.view(p), charges=charges.view(p),
                                       seen=seen.view(p), parked=parked.view(p))
                resolver = ContactResolver(tables)
                maybe_sweep(p, tables)
                try:
                    raw = RawEvent.from_bytes(event.value)
                    outcome = resolver.handle(raw, clock())
                    await look_up_emails(resolver, raw, outcome)
                    metrics.record_outcome(raw.event_type, outcome)
                    for fact in outcome.facts:
                        await facts_out.send(key=fact.key(), value=fact.to_bytes(), force=True)
                except (ContractError, ClassifyError) as exc:
                    await dead_letter(event, f"{type(exc).__name__}: {exc}")
                finally:
                    await flush_states()

    @app.agent(rules_in, name="rules", concurrency=1)
    async def fan_out_rules(stream: Any) -> None:
        async for event in stream.events():
            async with eos.processing(app):
                doc = orjson.loads(event.value) if event.value else None
                message = orjson.dumps({"k": "rule", "key": event.key.decode(), "doc": doc})
                for p in range(n):
                    await control_out.send(key=event.key, value=message, partition=p, force=True)


    async def partition_state(p: int) -> PartitionState:
        ps = partitions.get(p)
        if ps is None:
            await ready(p, settings.topic(FACTS_TOPIC), contacts, partition_rules)
            ps = partitions[p] = rebuild(p)
        return ps

    def rebuild(p: int) -> PartitionState:
        """Derive partition p's indexes from its recovered state."""
        state = PartitionState(p)
        for raw in partition_rules.view(p).values():
            state.add_rule(rule_from_doc(raw))
        for key, raw in contacts.view(p).items():
            state.track(key, ContactState.from_bytes(raw))
        log.info("partition %d: %d rules, %d accounts with contacts", p, len(state.rules),
                 len(state.contacts_by_account))
        return state

    @app.on_partitions_revoked.connect
    async def forget(app_: Any, revoked: Any, **kwargs: Any) -> None:
        partitions.clear()
        for store in states:
            store.forget()

    async def publish(changes: list[Any]) -> None:
        for change in changes:
            metrics.changes.labels(cause=change.cause, change=change.change).inc()
            await membership_out.send(key=change.key(), value=change.to_bytes(), force=True)
            await members_out.send(
                key=member_key(change.account_id, change.segment_id, change.email),
                value=member_state(change), force=True,
            )

    def save(key: str, contact: ContactState, ps: PartitionState) -> None:
        contacts.view(ps.partition)[key] = contact.to_bytes()
        ps.track(key, contact)

    def load(ps: PartitionState, key: str) -> ContactState | None:
        stored = contacts.view(ps.partition).get(key)
        return None if stored is None else ContactState.from_bytes(stored)

    async def handle_fact(ps: PartitionState, raw: bytes) -> None:
        fact = Fact.from_bytes(raw)
        now = clock()
        if too_old(fact, now, ps.horizon):
            metrics.history_dropped.inc()
            return
        key = fact.key().decode()
        contact = load(ps, key) or ContactState(fact.account_id, fact.email, ps.partition)
        aged = prune(contact, now, ps.horizon)
        changes = on_horizon(contact, aged, ps.rules_of(contact.account_id, aged), now)
        changes += on_fact(contact, fact, ps.rules.for_fact(fact.account_id, fact.filter), now)
        save(key, contact, ps)
        await publish(changes)

    async def handle_tick(ps: PartitionState, now: int) -> None:
        for key in ps.due_contacts(now):
            contact = load(ps, key)
            if contact is None:
                continue
            due = contact.next_due()
            if due is None or due > now:
                continue  # a stale heap entry: the contact was re-evaluated since
            lag = now - due
            metrics.timer_lag.observe(lag)
            changes = on_time(contact, ps.rules_of(contact.account_id, contact.facts), now)
            save(key, contact, ps)
            await publish(changes)

    async def handle_rule(ps: PartitionState, rule_key: str, doc: Any) -> None:
        account_id, rule_id = rule_key.split("\x1f", 1)
        now = clock()
        new = None
        if doc is not None:
            raw = orjson.dumps(doc)
            try:
                new = rule_from_doc(raw)
            except RuleError as exc:
                log.error("ignoring invalid rule %s: %s", rule_key, exc)
                return
            old = ps.add_rule(new)
            partition_rules.view(ps.partition)[rule_key] = raw
        else:
            old = ps.remove_rule(account_id, rule_id)
            partition_rules.view(ps.partition).pop(rule_key, None)
        for key in sorted(ps.contacts_by_account.get(account_id, ())):
            contact = load(ps, key)
            if contact is None:
                continue
            before = (dict(contact.members), dict(contact.due))
            changes = on_rule(contact, old, new, now)
            if (contact.members, contact.due) != before:
                save(key, contact, ps)
            await publish(changes)

    @app.agent(membership_in, name="membership", concurrency=1)
    async def membership(stream: Any) -> None:
        async for event in stream.events():
            async with eos.processing(app):
                message = event.message
                ps = await partition_state(message.partition)
                try:
                    if message.topic == settings.topic(FACTS_TOPIC):
                        await handle_fact(ps, event.value)
                        continue
                    control = orjson.loads(event.value)
                    if control.get("k") == "tick":
                        await handle_tick(ps, int(control["now"]))
                    elif control.get("k") == "rule":
                        await handle_rule(ps, control["key"], control.get("doc"))
                except (FactDecodeError, orjson.JSONDecodeError, KeyError, TypeError,
                        ValueError) as exc:
                    await dead_letter(event, f"{type(exc).__name__}: {exc}")
                finally:
                    await flush_states()

    @app.timer(interval=options.tick_interval)
    async def tick() -> None:
        facts_topic = settings.topic(FACTS_TOPIC)
        value = orjson.dumps({"k": "tick", "now": clock()})
        for tp in app.assignor.assigned_actives():
            if tp.topic == facts_topic:
                await control_out.send(value=value, partition=tp.partition)
