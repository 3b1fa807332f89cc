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
  `segments.membership` and each member's state to `segments.members`; once a
  partition has applied a rule change, its marker to `segments.status` (stream.status);
- `tick` (every tick interval, per partition): timers of relative windows fire and old
  dedup entries are swept, inside the partition's transaction like everything else.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson

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
    STATUS_TOPIC,
    state_topic,
)
from connectors.contract import ContractError, RawEvent
from rules import Rule
from stream.attribution import ByChargeDecodeError, ChargeJoin, JoinTables, sweep_join
from stream.changes import MembershipChange, iso, member_key, member_record, member_state
from stream.changes import rule_key_text as rule_state_key
from stream.classify import ClassifyError, classify_event
from stream.contacts import ContactResolver, ContactTables, Outcome, sweep
from stream.envelopes import EnvelopeCheck, EnvelopeRejected
from stream.erasure import ForgetRequest, erase_classify_state
from stream.facts import Fact, contact_key
from stream.inputs import (
    INPUT_ERRORS,
    FutureEventError,
    InvalidRuleError,
    RuleChange,
    check_future,
    checked_rule,
    decode_control,
    decode_fact,
)
from stream.membership import (
    ContactState,
    hold_affected,
    on_fact,
    on_retract,
    on_rule,
    on_time,
    prunable,
    prune,
    too_old,
)
from stream.metrics import StreamMetrics
from stream.options import StreamOptions
from stream.outbox import Outbox, Written
from stream.partition_state import PartitionState, rule_from_doc
from stream.state import JSON, RAW, Codec, PartitionView, State, recover_all
from stream.status import StatusMarker

log = logging.getLogger(__name__)
#: How often each classify partition forgets dedup entries past their window.
SWEEP_SECONDS = 60
#: Contacts each membership partition prunes (and deletes if empty) per tick; a round
#: over all of them starts at most every `SWEEP_SECONDS`.
CONTACT_SWEEP_BATCH = 1000
CONTACT = Codec(ContactState.to_bytes_kept, ContactState.from_bytes)
#: Errors of input that breaks its contract (`stream.inputs`): dead-lettered, never
#: fatal. Anything else raised while processing is a bug: it stops the worker.
BAD_INPUT = INPUT_ERRORS


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
        self.status_topic = topic(STATUS_TOPIC)
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
        #: rule key -> when its version in force came into force (`at` of `fact` changes).
        self.rule_times = self._state("rule_times")
        self.partitions: dict[int, PartitionState] = {}
        #: Indexes of partitions given up cleanly, in case they come back unchanged.
        self.kept: dict[int, PartitionState] = {}
        self.last_sweep: dict[int, int] = {}
        #: partition -> (contact keys left in this sweep round, when the round started)
        self.contact_sweep: dict[int, tuple[list[str], int]] = {}
        self._changes: dict[tuple[str, str], Any] = {}
        lookup = options.connection_account
        self.envelopes = None if lookup is None else EnvelopeCheck(lookup)

    def _state(self, name: str, codec: Codec = JSON) -> State:
        store = State(name, self.settings.topic(state_topic(name)), self.settings, codec)
        self.states.append(store)
        return store

    # -- the runtime's interface -----------------------------------------------------

    async def assigned(self, partitions: list[int]) -> None:
        changed = await recover_all(self.states, partitions)
        kept = {partition: self.kept.pop(partition) for partition in partitions
                if partition in self.kept and partition not in changed}
        self.adopt([partition for partition in partitions if partition not in kept])
        self.partitions.update(kept)
        if kept:
            log.info("partitions %s: state kept since the last rebalance", sorted(kept))

    def adopt(self, partitions: list[int]) -> None:
        """Index partitions whose state is loaded (recovered, or empty in unit tests)."""
        for partition in partitions:
            self.kept.pop(partition, None)
            for store in self.states:
                store.data.setdefault(partition, {})
            self.partitions[partition] = self._rebuild(partition)

    def suspended(self, partitions: list[int], written: Written) -> None:
        for partition in partitions:
            for store in self.states:
                store.suspend(partition, written.get((store.topic, partition)))
            if (partition_state := self.partitions.pop(partition, None)) is not None:
                self.kept[partition] = partition_state

    def revoked(self, partitions: list[int]) -> None:
        for store in self.states:
            store.forget(partitions)
        for partition in partitions:
            self.partitions.pop(partition, None)
            self.kept.pop(partition, None)
            self.last_sweep.pop(partition, None)
            self.contact_sweep.pop(partition, None)

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
            partition_state = self.partitions[partition]
            is_fact = topic == self.facts_topic
            for record in records:
                # Decided before any state is touched: only input errors are bad input.
                try:
                    decoded = (decode_fact(record.value, self.clock()) if is_fact
                               else decode_control(record.value))
                except BAD_INPUT as exc:
                    self._dead_letter(record, f"{type(exc).__name__}: {exc}", out)
                    continue
                if isinstance(decoded, Fact):
                    self._fact(partition_state, decoded, out)
                elif isinstance(decoded, ForgetRequest):
                    self._forget(partition_state, decoded, out)
                elif decoded is not None:
                    self._rule(partition_state, decoded.key, decoded, out)
        elif topic == self.rules_topic:
            for record in records:
                self._fan_out_rule(record, out)

    async def tick(self, partition: int, out: Outbox) -> None:
        now = self.clock()
        self._maybe_sweep(partition, now)
        partition_state = self.partitions.get(partition)
        if partition_state is not None and self.options.membership:
            self._timers(partition_state, now, out)
            self._sweep_contacts(partition_state, now)

    def state_writes(self, partition: int, out: Outbox) -> None:
        for store in self.states:
            out.send_all(store.topic, store.take(partition), partition)

    # -- classification --------------------------------------------------------------

    def _tables(self, partition: int) -> ContactTables:
        return ContactTables(customers=self.customers.view(partition),
                             seen=self.seen.view(partition),
                             parked=self.parked.view(partition))

    def _join_tables(self, partition: int) -> JoinTables:
        return JoinTables(charges=self.charges.view(partition),
                          waiting=self.waiting.view(partition),
                          seen=self.seen.view(partition))

    async def _classify(self, resolver: ContactResolver, record: Any, out: Outbox) -> None:
        try:
            raw = RawEvent.from_bytes(record.value)
            check_future(raw.event.get("created"), self.clock(), f"event {raw.event_id}")
            if self.envelopes is not None:
                await self.envelopes.verify(raw)
            outcome = resolver.handle(raw, classify_event(raw.event), self.clock())
            await self._look_up_emails(resolver, raw, outcome)
            self.metrics.record_outcome(raw.event_type, outcome)
            for fact in outcome.facts:
                out.send(self.facts_topic, fact.key(), fact.to_bytes())
            for key, value in outcome.by_charge:
                out.send(self.by_charge_topic, key, value)
        except (ContractError, ClassifyError, EnvelopeRejected, FutureEventError) as exc:
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

    def _maybe_sweep(self, partition: int, now: int) -> None:
        """Once a minute per partition, drop dedup entries past their window."""
        if (now - self.last_sweep.get(partition, 0) < SWEEP_SECONDS
                or not self.seen.loaded(partition)):
            return
        self.last_sweep[partition] = now
        removed, dropped = sweep(self._tables(partition), now)
        payers, unattributed = sweep_join(self._join_tables(partition), now)
        removed, dropped = removed + payers, dropped + unattributed
        self.metrics.no_email.inc(dropped)
        if removed or dropped:
            log.info("partition %d: swept %d expired entries, %d parked facts", partition,
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
        """A rule that fails validation is dead-lettered here, once, with its reasons,
        and never reaches a partition: the version in force stays in force."""
        try:
            key = record.key.decode() if record.key is not None else ""
            doc = orjson.loads(record.value) if record.value else None
            checked_rule(key, doc)
        except BAD_INPUT as exc:
            if isinstance(exc, InvalidRuleError):
                self.metrics.invalid_rules.inc()
            self._dead_letter(record, f"{type(exc).__name__}: {exc}", out)
            return
        # `at`: when the rule changed, one instant for every partition (SPEC, `at`).
        message = orjson.dumps({"k": "rule", "key": key, "doc": doc, "at": self.clock()})
        for partition in range(self.settings.partitions):
            out.send(self.control_topic, record.key, message, partition)

    # -- membership ------------------------------------------------------------------

    def _rebuild(self, partition: int) -> PartitionState:
        """Derive partition p's indexes from its recovered state."""
        state = PartitionState(partition, floor=self.options.history_floor_s)
        state.add_rules(rule_from_doc(raw) for raw in self.partition_rules.view(partition).values())
        for key, contact in self.contacts.view(partition).items():
            state.track(key, contact)
        log.info("partition %d: %d rules, %d accounts with contacts", partition, len(state.rules),
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

    def _save(self, partition_state: PartitionState, key: str, contact: ContactState) -> None:
        view = self.contacts.view(partition_state.partition)
        if contact.empty():  # deleted, with a tombstone on its changelog
            if key in view:
                del view[key]
                self.metrics.contacts_deleted.inc()
            partition_state.untrack(key, contact.account_id)
            return
        view[key] = contact
        partition_state.track(key, contact)

    def _sweep_contacts(self, partition_state: PartitionState, now: int) -> None:
        """Prune contacts that get no new fact, a batch per tick, and delete those left
        empty (every fact aged out and no rule needs it, nothing due, no membership).
        Pruning changes no membership (`stream.membership`, "Retention")."""
        keys, started = self.contact_sweep.get(partition_state.partition) or ([], 0)
        if not keys:
            if now - started < SWEEP_SECONDS:
                return
            keys, started = list(self.contacts.view(partition_state.partition)), now
            self.contact_sweep[partition_state.partition] = (keys, started)
        view = self.contacts.view(partition_state.partition)
        for _ in range(min(CONTACT_SWEEP_BATCH, len(keys))):
            key = keys.pop()
            contact = view.get(key)
            if contact is None:
                continue
            raw = contact.raw
            forgotten = prune(contact, now, partition_state.horizon,
                              partition_state.rules_of(contact.account_id, contact.facts))
            self.metrics.history_forgotten.inc(forgotten)
            if forgotten or contact.empty():
                self._save(partition_state, key, contact)
            else:  # read, not changed: its facts go back to their encoded form
                contact.encoded_again(raw)

    def _fact(self, partition_state: PartitionState, fact: Fact, out: Outbox) -> None:
        now = self.clock()
        if too_old(fact, now, partition_state.horizon):
            self.metrics.beyond_horizon(fact.filter)
            return
        key = fact.key().decode()
        view = self.contacts.view(partition_state.partition)
        contact = view.get(key) or ContactState(fact.account_id, fact.email,
                                                partition_state.partition)
        # Housekeeping first; it changes no membership (see stream.membership, Retention).
        if prunable(contact, now, partition_state.horizon):
            forgotten = prune(contact, now, partition_state.horizon,
                              partition_state.rules_of(contact.account_id, contact.facts))
            if forgotten:
                self.metrics.history_forgotten.inc(forgotten)
        times = self.rule_times.view(partition_state.partition)
        if fact.retracted:
            rules = partition_state.rules.for_fact(fact.account_id, fact.filter)
            changes = on_retract(contact, fact, rules, now, self._since(times, rules))
        else:
            # Only the rules the fact can affect are re-decided (`hold_affected`): the
            # cost per fact follows them, not every rule of its account and filter.
            rules, capped = hold_affected(contact, fact, partition_state.rules, now)
            if capped:
                self.metrics.history_dropped.inc(capped)
            changes = on_fact(contact, fact, rules, now, self._since(times, rules))
        self._save(partition_state, key, contact)
        self._publish(changes, out)

    @staticmethod
    def _since(times: PartitionView, rules: Sequence[Rule]) -> dict[str, int]:
        """Rule id -> when its version in force came into force (`fact_at`)."""
        return {rule.id: times.get(rule_state_key(rule.account_id, rule.id), 0)
                for rule in rules}

    def _timers(self, partition_state: PartitionState, now: int, out: Outbox) -> None:
        view = self.contacts.view(partition_state.partition)
        for key in partition_state.due_contacts(now):
            contact = view.get(key)
            if contact is None:
                continue
            due = contact.next_due()
            if due is None or due > now:
                continue  # a stale heap entry: the contact was re-evaluated since
            self.metrics.timer_lag.observe(now - due)
            rules = partition_state.rules_of(contact.account_id, contact.facts)
            changes = on_time(contact, rules, now)
            self._save(partition_state, key, contact)
            self._publish(changes, out)

    def _forget(self, partition_state: PartitionState, request: ForgetRequest, out: Outbox) -> None:
        """Erase one person (or, with no email, every contact of the account) from this
        partition (stream.erasure), in its transaction."""
        partition = partition_state.partition
        removed = erase_classify_state(request, self.customers.view(partition),
                                       self.parked.view(partition),
                                       self.charges.view(partition))
        if request.email is None:
            keys = sorted(partition_state.contacts_by_account.get(request.account_id, ()))
        else:
            keys = [contact_key(request.account_id, request.email).decode()]
        view = self.contacts.view(partition)
        now = iso(self.clock())
        for key in keys:
            contact = view.get(key)
            if contact is None:
                continue
            # `members` maps each segment to the rule version it was decided under.
            self._publish([MembershipChange(contact.account_id, segment_id, contact.email,
                                            "left", now, "erased", None, version, now)
                           for segment_id, version in sorted(contact.members.items())], out)
            del view[key]
            partition_state.untrack(key, contact.account_id)
            removed += 1
        log.info("partition %d: erased %s of %s (%d entries)", partition,
                 "a contact" if request.email else "every contact", request.account_id,
                 removed)

    def _rule(self, partition_state: PartitionState, rule_key: str, change: RuleChange,
              out: Outbox) -> None:
        """A rule change, decoded and validated (`stream.inputs.decode_control`)."""
        account_id, rule_id = change.account_id, change.rule_id
        now = self.clock()
        at = now if change.at is None else change.at
        new = change.rule
        version = new.version if new is not None else None
        rules = self.partition_rules.view(partition_state.partition)
        if new is not None and change.raw is not None:
            old = partition_state.add_rule(new)
            rules[rule_key] = change.raw  # kept per partition: exact size
            self.rule_times.view(partition_state.partition)[rule_key] = at
        else:
            self.rule_times.view(partition_state.partition).pop(rule_key, None)
            old = partition_state.remove_rule(account_id, rule_id)
            rules.pop(rule_key, None)
        view = self.contacts.view(partition_state.partition)
        for key in sorted(partition_state.contacts_by_account.get(account_id, ())):
            contact = view.get(key)
            if contact is None:
                continue
            before, raw = (dict(contact.members), dict(contact.due)), contact.raw
            changes = on_rule(contact, old, new, now, at)
            if (contact.members, contact.due) != before:
                self._save(partition_state, key, contact)
            else:
                contact.encoded_again(raw)
            self._publish(changes, out)
            if new is not None and not changes:
                self._restate(contact, new.id, before[0].get(new.id), at, out)
        # This partition has computed the rule from its history: say so, in the same
        # transaction as the changes above (the segment's `status`, stream.status).
        marker = StatusMarker(account_id, rule_id, partition_state.partition, version, iso(now))
        out.send(self.status_topic, marker.key(), marker.to_bytes(), 0)

    def _restate(self, contact: ContactState, segment_id: str, was: int | None, at: int,
                 out: Outbox) -> None:
        """A rule edit kept a member: its members record states the new rule version
        (same `since` and fact id; no membership event, nobody joined or left)."""
        version = contact.members.get(segment_id)
        if version is None or was is None or was == version:
            return
        # A member of an earlier release has no recorded `since`: the edit's instant.
        since, fact_id = contact.since.get(segment_id) or (iso(at), None)
        out.send(self.members_topic, member_key(contact.account_id, segment_id,
                                                contact.email),
                 member_record(contact.account_id, segment_id, contact.email, since,
                               fact_id, version))
