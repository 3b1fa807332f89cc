"""The pipeline the runtime drives: decode, call a pure function, send.

Partition number p of every source topic is handled by one task (see
`stream.runtime`), which calls `process` with batches of one topic-partition:

- `stripe.events` → classification: facts to `stripe.facts` (keyed by contact, so all of
  one contact's facts meet on one partition), dead letters to `stripe.events.dlq`,
  charges' payers and refunds to `segments.by-charge` (keyed by charge);
- `segments.by-charge` → attribution (`stream.attribution`): each refund meets its
  charge's payer on the charge's partition, and its fact goes to `stripe.facts`;
- `segments.rules` (one partition) → one control message per partition, so every
  membership partition applies each rule change exactly once, in order with its facts;
- `stripe.facts` and `segments.control` → membership: changes to
  `segments.membership` and each member's state to `segments.members`;
- `tick` (every tick interval, per partition): timers of relative windows fire and old
  dedup entries are swept, inside the partition's transaction like everything else.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson

from common.keys import split
from common.settings import Settings
from common.topics import (
    BY_CHARGE_TOPIC,
    CONTROL_TOPIC,
    DLQ_TOPIC,
    EVENTS_TOPIC,
    FACTS_TOPIC,
    MEMBERS_TOPIC,
    MEMBERSHIP_TOPIC,
    RULES_TOPIC,
    state_topic,
)
from connectors.contract import ContractError, RawEvent
from rules import RuleError
from stream.attribution import ByChargeDecodeError, ChargeJoin, JoinTables, sweep_join
from stream.changes import MembershipChange, iso, member_key, member_state
from stream.classify import ClassifyError
from stream.contacts import ContactResolver, ContactTables, Outcome, sweep
from stream.erasure import FORGET, ForgetRequest, erase_classify_state
from stream.facts import Fact, FactDecodeError, contact_key
from stream.membership import (
    ContactState,
    hold,
    on_fact,
    on_rule,
    on_time,
    prune,
    too_old,
)
from stream.metrics import StreamMetrics
from stream.options import StreamOptions
from stream.partition_state import PartitionState, rule_from_doc
from stream.runtime import Outbox
from stream.state import JSON, RAW, Codec, State, compact, recover_all

log = logging.getLogger(__name__)
#: How often each classify partition forgets dedup entries past their window.
SWEEP_SECONDS = 60
CONTACT = Codec(ContactState.to_bytes, ContactState.from_bytes)
#: Errors of a malformed fact or control message: dead-lettered, never fatal.
BAD_INPUT = (FactDecodeError, orjson.JSONDecodeError, KeyError, TypeError, ValueError)


class Pipeline:
    """Classification and membership of the partitions this worker owns."""

    def __init__(self, settings: Settings, options: StreamOptions) -> None:
        self.settings = settings
        self.options = options
        self.clock = options.clock
        self.metrics = StreamMetrics()
        topic = settings.topic
        self.events_topic = topic(EVENTS_TOPIC)
        self.facts_topic = topic(FACTS_TOPIC)
        self.control_topic = topic(CONTROL_TOPIC)
        self.rules_topic = topic(RULES_TOPIC)
        self.dlq_topic = topic(DLQ_TOPIC)
        self.membership_topic = topic(MEMBERSHIP_TOPIC)
        self.members_topic = topic(MEMBERS_TOPIC)
        self.by_charge_topic = topic(BY_CHARGE_TOPIC)
        self.topics: Sequence[str] = [self.events_topic, self.by_charge_topic,
                                      self.rules_topic]
        if options.membership:
            self.topics = [*self.topics, self.facts_topic, self.control_topic]
        self.states: list[State] = []
        self.customers, self.charges = self._state("customers"), self._state("charges")
        self.seen, self.parked = self._state("seen"), self._state("parked")
        self.waiting = self._state("waiting")
        self.contacts = self._state("contacts", CONTACT)
        self.partition_rules = self._state("rules", RAW)
        self.partitions: dict[int, PartitionState] = {}
        self.last_sweep: dict[int, int] = {}
        self._changes: dict[tuple[str, str], Any] = {}

    def _state(self, name: str, codec: Codec = JSON) -> State:
        store = State(name, self.settings.topic(state_topic(name)),
                      self.settings.kafka_bootstrap_servers, codec)
        self.states.append(store)
        return store

    # -- the runtime's interface -----------------------------------------------------

    async def assigned(self, partitions: list[int]) -> None:
        await recover_all(self.states, partitions)
        self.adopt(partitions)

    def adopt(self, partitions: list[int]) -> None:
        """Index partitions whose state is loaded (recovered, or empty in unit tests)."""
        for p in partitions:
            for store in self.states:
                store.data.setdefault(p, {})
            self.partitions[p] = self._rebuild(p)

    def revoked(self, partitions: list[int]) -> None:
        for store in self.states:
            store.forget(partitions)
        for p in partitions:
            self.partitions.pop(p, None)
            self.last_sweep.pop(p, None)

    async def process(self, partition: int, topic: str, records: list[Any],
                      out: Outbox) -> None:
        if topic == self.events_topic:
            resolver = ContactResolver(self._tables(partition))
            for record in records:
                await self._classify(resolver, record, out)
        elif topic == self.by_charge_topic:
            join = ChargeJoin(self._join_tables(partition))
            for record in records:
                self._attribute(join, record, out)
        elif topic in (self.facts_topic, self.control_topic):
            ps = self.partitions[partition]
            handle = self._fact if topic == self.facts_topic else self._control
            for record in records:
                try:
                    handle(ps, record.value, out)
                except BAD_INPUT as exc:
                    self._dead_letter(record, f"{type(exc).__name__}: {exc}", out)
        elif topic == self.rules_topic:
            for record in records:
                self._fan_out_rule(record, out)

    async def tick(self, partition: int, out: Outbox) -> None:
        now = self.clock()
        self._maybe_sweep(partition, now)
        ps = self.partitions.get(partition)
        if ps is not None and self.options.membership:
            self._timers(ps, now, out)

    def state_writes(self, partition: int, out: Outbox) -> None:
        for store in self.states:
            for key, value in store.take(partition):
                out.send(store.topic, key, value, partition)

    # -- classification --------------------------------------------------------------

    def _tables(self, p: int) -> ContactTables:
        return ContactTables(customers=self.customers.view(p), seen=self.seen.view(p),
                             parked=self.parked.view(p))

    def _join_tables(self, p: int) -> JoinTables:
        return JoinTables(charges=self.charges.view(p), waiting=self.waiting.view(p),
                          seen=self.seen.view(p))

    async def _classify(self, resolver: ContactResolver, record: Any, out: Outbox) -> None:
        try:
            raw = RawEvent.from_bytes(record.value)
            outcome = resolver.handle(raw, self.clock())
            await self._look_up_emails(resolver, raw, outcome)
            self.metrics.record_outcome(raw.event_type, outcome)
            for fact in outcome.facts:
                out.send(self.facts_topic, fact.key(), fact.to_bytes())
            for key, value in outcome.by_charge:
                out.send(self.by_charge_topic, key, value)
        except (ContractError, ClassifyError) as exc:
            self._dead_letter(record, f"{type(exc).__name__}: {exc}", out)

    def _attribute(self, join: ChargeJoin, record: Any, out: Outbox) -> None:
        try:
            outcome = join.handle(record.key, record.value, self.clock())
        except ByChargeDecodeError as exc:
            self._dead_letter(record, f"{type(exc).__name__}: {exc}", out)
            return
        self.metrics.record_join(outcome)
        for fact in outcome.facts:
            out.send(self.facts_topic, fact.key(), fact.to_bytes())

    async def _look_up_emails(self, resolver: ContactResolver, raw: RawEvent,
                              outcome: Outcome) -> None:
        """Ask the injected look-up for customers nobody told us about; release facts."""
        lookup = self.options.email_lookup
        if lookup is None:
            return
        for customer_id in outcome.parked_customers:
            try:
                email = await lookup(raw.connection_id, customer_id)
            except Exception as exc:  # a failed look-up leaves the facts parked
                self.metrics.email_lookup_failures.inc()
                log.warning("email look-up failed for a customer of %s: %s",
                            raw.connection_id, type(exc).__name__)
                continue
            learned = resolver.learn(raw, customer_id, email, self.clock())
            outcome.facts.extend(learned.facts)
            outcome.by_charge.extend(learned.by_charge)
            outcome.released += learned.released

    def _maybe_sweep(self, p: int, now: int) -> None:
        """Once a minute per partition, drop dedup entries past their window."""
        if now - self.last_sweep.get(p, 0) < SWEEP_SECONDS or not self.seen.loaded(p):
            return
        self.last_sweep[p] = now
        removed, dropped = sweep(self._tables(p), now)
        payers, unattributed = sweep_join(self._join_tables(p), now)
        removed, dropped = removed + payers, dropped + unattributed
        self.metrics.no_email.inc(dropped)
        if removed or dropped:
            log.info("partition %d: swept %d expired entries, %d parked facts", p,
                     removed, dropped)

    def _dead_letter(self, record: Any, reason: str, out: Outbox) -> None:
        self.metrics.dead_letters.inc()
        # The reason's kind only: its text may quote the record (an email); the whole
        # reason travels with the record in the dead-letter topic's headers.
        log.warning("dead letter from %s[%d]@%d: %s", record.topic, record.partition,
                    record.offset, reason.partition(":")[0])
        out.send(self.dlq_topic, record.key, record.value, headers=[
            ("reason", reason.encode()), ("topic", record.topic.encode()),
            ("partition", str(record.partition).encode()),
            ("offset", str(record.offset).encode()),
        ])

    def _fan_out_rule(self, record: Any, out: Outbox) -> None:
        try:
            doc = orjson.loads(record.value) if record.value else None
        except orjson.JSONDecodeError as exc:
            self._dead_letter(record, f"JSONDecodeError: {exc}", out)
            return
        message = orjson.dumps({"k": "rule", "key": record.key.decode(), "doc": doc})
        for p in range(self.settings.partitions):
            out.send(self.control_topic, record.key, message, p)

    # -- membership ------------------------------------------------------------------

    def _rebuild(self, p: int) -> PartitionState:
        """Derive partition p's indexes from its recovered state."""
        state = PartitionState(p, floor=self.options.history_floor_s)
        state.add_rules(rule_from_doc(raw) for raw in self.partition_rules.view(p).values())
        for key, contact in self.contacts.view(p).items():
            state.track(key, contact)
        log.info("partition %d: %d rules, %d accounts with contacts", p, len(state.rules),
                 len(state.contacts_by_account))
        return state

    def _publish(self, changes: list[MembershipChange], out: Outbox) -> None:
        for change in changes:
            counter = self._changes.get((change.cause, change.change))
            if counter is None:
                counter = self._changes[(change.cause, change.change)] = (
                    self.metrics.changes.labels(cause=change.cause, change=change.change))
            counter.inc()
            out.send(self.membership_topic, change.key(), change.to_bytes())
            out.send(self.members_topic,
                     member_key(change.account_id, change.segment_id, change.email),
                     member_state(change))

    def _save(self, ps: PartitionState, key: str, contact: ContactState) -> None:
        self.contacts.view(ps.partition)[key] = contact
        ps.track(key, contact)

    def _fact(self, ps: PartitionState, raw: bytes, out: Outbox) -> None:
        fact = Fact.from_bytes(raw)
        now = self.clock()
        if too_old(fact, now, ps.horizon):
            self.metrics.beyond_horizon(fact.filter)
            return
        key = fact.key().decode()
        view = self.contacts.view(ps.partition)
        contact = view.get(key) or ContactState(fact.account_id, fact.email, ps.partition)
        # Housekeeping first; it changes no membership (see stream.membership, Retention).
        forgotten = prune(contact, now, ps.horizon,
                          ps.rules_of(contact.account_id, contact.facts))
        if forgotten:
            self.metrics.history_forgotten.inc(forgotten)
        rules = ps.rules.for_fact(fact.account_id, fact.filter)
        capped = hold(contact, fact, rules, now)
        if capped:
            self.metrics.history_dropped.inc(capped)
        changes = on_fact(contact, fact, rules, now)
        self._save(ps, key, contact)
        self._publish(changes, out)

    def _timers(self, ps: PartitionState, now: int, out: Outbox) -> None:
        view = self.contacts.view(ps.partition)
        for key in ps.due_contacts(now):
            contact = view.get(key)
            if contact is None:
                continue
            due = contact.next_due()
            if due is None or due > now:
                continue  # a stale heap entry: the contact was re-evaluated since
            self.metrics.timer_lag.observe(now - due)
            changes = on_time(contact, ps.rules_of(contact.account_id, contact.facts), now)
            self._save(ps, key, contact)
            self._publish(changes, out)

    def _control(self, ps: PartitionState, raw: bytes, out: Outbox) -> None:
        control = orjson.loads(raw)
        if control.get("k") == "rule":
            self._rule(ps, control["key"], control.get("doc"), out)
        elif control.get("k") == FORGET:
            self._forget(ps, ForgetRequest.from_control(control), out)
        # "tick" messages of earlier versions are ignored: the runtime ticks itself.

    def _forget(self, ps: PartitionState, request: ForgetRequest, out: Outbox) -> None:
        """Erase one person from this partition (stream.erasure), in its transaction."""
        p = ps.partition
        removed = erase_classify_state(request, self.customers.view(p), self.parked.view(p),
                                       self.charges.view(p))
        key = contact_key(request.account_id, request.email).decode()
        view = self.contacts.view(p)
        contact = view.get(key)
        if contact is not None:
            at = iso(self.clock())
            # `members` maps each segment to the rule version it was decided under.
            self._publish([MembershipChange(contact.account_id, segment_id, contact.email,
                                            "left", at, "erased", None, version)
                           for segment_id, version in sorted(contact.members.items())], out)
            del view[key]
            ps.untrack(key, contact)
            removed += 1
        log.info("partition %d: erased a contact of %s (%d entries)", p,
                 request.account_id, removed)

    def _rule(self, ps: PartitionState, rule_key: str, doc: Any, out: Outbox) -> None:
        account_id, rule_id = split(rule_key, 2)
        now = self.clock()
        new = None
        rules = self.partition_rules.view(ps.partition)
        if doc is not None:
            raw = compact(orjson.dumps(doc))  # kept per partition: exact size
            try:
                new = rule_from_doc(raw)
            except RuleError as exc:
                log.error("ignoring invalid rule %s: %s", rule_key, exc)
                return
            old = ps.add_rule(new)
            rules[rule_key] = raw
        else:
            old = ps.remove_rule(account_id, rule_id)
            rules.pop(rule_key, None)
        view = self.contacts.view(ps.partition)
        for key in sorted(ps.contacts_by_account.get(account_id, ())):
            contact = view.get(key)
            if contact is None:
                continue
            before = (dict(contact.members), dict(contact.due))
            changes = on_rule(contact, old, new, now)
            if (contact.members, contact.due) != before:
                self._save(ps, key, contact)
            self._publish(changes, out)
