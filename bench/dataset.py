"""The benchmark's data: accounts, contacts with 30-day Stripe histories, and rules.

Events come from `BenchActivity` (a frozen copy of the first `segments.demo.feed` generator, so
the benchmark's data does not move with the demo: Stripe-shaped charges, refunds and
subscriptions spread over the last 30 days, one story per contact), wrapped in the
raw-event envelope exactly as the connector writes them. Contacts are spread evenly
over the accounts; every account has its own connection. Rules use the same realistic
mix as `bench/bench_rules.py` (an amount, a currency, a relative window, extras per
filter), rotating over the six filters.

Everything is deterministic for a given seed and `now`. No event is dated after `now`: the
worker dead-letters events dated more than a day ahead of its clock
(`stream.inputs.FutureEventError`), and a benchmark that fed it such events would time
dead letters and their log lines, not the work it means to measure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from connectors.contract import RawEvent
from rules import FILTERS
from segments.demo import feed as demo_feed
from stream.partitioning import partition_for

Message = tuple[bytes, bytes]  # (key, value)

CURRENCIES = (("usd", 1), ("eur", 1), ("jpy", 100))
PLANS = demo_feed.PLANS


class BenchActivity(demo_feed.DemoActivity):
    """The demo feed's Stripe object builders, with the benchmark's own customer story."""

    def customer_story(self, n: int) -> Iterator[dict[str, Any]]:
        """One customer's month: payments, maybe a failure, refund, subscription changes."""
        r = self.rand
        email = f"customer{n}@example.com"
        customer = self._id("cus")
        t = self.now - r.randint(1, 25) * 86400

        def later(t: int) -> int:
            # A story that starts a day or two ago would run past `now`: it stops there.
            return min(self.now, t + r.randint(600, 86400))

        yield self._event("customer.created", {"id": customer, "object": "customer",
                                               "email": email, "created": t}, t)
        currency, scale = r.choice(CURRENCIES)
        for _ in range(r.randint(1, 3)):
            t = later(t)
            amount = r.choice((900, 2900, 4999, 9900, 15000)) * scale // (100 if scale > 1 else 1)
            if r.random() < 0.25:
                yield self._event("charge.failed",
                                  self._charge(customer, email, amount, currency, t, True), t)
                continue
            charge = self._charge(customer, email, amount, currency, t, False)
            yield self._event("charge.succeeded", charge, t)
            if r.random() < 0.3:
                t = later(t)
                refund_amount = amount if r.random() < 0.5 else amount // 2
                refund = {"id": self._id("re"), "object": "refund", "amount": refund_amount,
                          "charge": charge["id"], "currency": currency, "created": t,
                          "status": "succeeded"}
                refunded = {**charge, "amount_refunded": refund_amount,
                            "refunded": refund_amount == amount,
                            "refunds": {**charge["refunds"], "data": [refund], "total_count": 1}}
                yield self._event("charge.refunded", refunded, t,
                                  previous={"amount_refunded": 0, "refunds": {"data": [],
                                                                              "total_count": 0}})
        if r.random() < 0.6:
            t = later(t)
            sub = self._subscription(customer, r.choice(PLANS), r.randint(1, 3), t)
            yield self._event("customer.subscription.created", sub, t)
            roll = r.random()
            t = later(t)
            if roll < 0.35:
                new_plan = r.choice(PLANS)
                changed = self._subscription(customer, new_plan, sub["quantity"] + 1, t)
                changed["id"], changed["start_date"] = sub["id"], sub["start_date"]
                yield self._event("customer.subscription.updated", changed, t,
                                  previous={"quantity": sub["quantity"], "plan": sub["plan"],
                                            "items": sub["items"]})
            elif roll < 0.6:
                ending = {**sub, "cancel_at_period_end": True, "canceled_at": t}
                yield self._event("customer.subscription.updated", ending, t,
                                  previous={"cancel_at_period_end": False, "canceled_at": None})
            elif roll < 0.75:
                gone = {**sub, "status": "canceled", "canceled_at": t, "ended_at": t}
                yield self._event("customer.subscription.deleted", gone, t)


SENTINEL_ACCOUNT = "bench-sentinel"
SENTINEL_RULE = "sentinel"


def account_name(number: int) -> str:
    return f"acct{number:04d}"


def connection_name(account: str) -> str:
    return f"conn_{account}"


def rule_doc(account: str, number: int) -> dict[str, Any]:
    """Rule `number` of an account: bench_rules' mix (amount, currency, window, extras)."""
    filter_id = FILTERS[number % len(FILTERS)]
    conditions: list[dict[str, Any]] = [
        {"field": "amount", "op": "gte", "value": str(10 + number % 90)},
        {"field": "currency", "op": "in", "value": ["usd", "eur", "jpy"][: 1 + number % 3]},
        {"field": "date", "op": "within_last",
         "value": {"count": 1 + number % 30, "unit": "days"}},
    ]
    if filter_id == "refunded":
        conditions.append({"field": "refund_amount", "op": "gt", "value": "5"})
    if filter_id.startswith("subscription_"):
        conditions = [c for c in conditions if c["field"] != "currency"]
        conditions.append({"field": "plan", "op": "in",
                           "value": ["price_basic", "price_pro", "price_team"][: 1 + number % 3]})
    if number % 4 == 0:
        conditions.append({"field": "date", "op": "after", "value": "2020-01-01"})
    return {"id": f"r{number}", "account_id": account, "name": f"rule {number}",
            "filter": filter_id, "conditions": conditions,
            "timezone": "Europe/Berlin" if number % 2 else "UTC"}


def rules_for(accounts: int, per_account: int) -> list[dict[str, Any]]:
    return [rule_doc(account_name(a), n) for a in range(accounts) for n in range(per_account)]


def sentinel_rule() -> dict[str, Any]:
    return {"id": SENTINEL_RULE, "account_id": SENTINEL_ACCOUNT, "name": "end of input",
            "filter": "charge_succeeded", "conditions": [], "timezone": "UTC"}


@dataclass
class Dataset:
    """Encoded raw events, ready to produce, plus what produced them."""

    messages: list[Message]
    contacts: int
    accounts: int

    @property
    def payload_bytes(self) -> int:
        return sum(len(k) + len(v) for k, v in self.messages)


#: The default seed of every generated dataset.
SEED = 7


def events(contacts: int, accounts: int, now: int, seed: int = SEED,
           account_offset: int = 0, per_contact: str = "story") -> Dataset:
    """Raw events for `contacts` contacts spread over `accounts` accounts.

    `per_contact="story"`: the contact's whole 30-day story (customer, charges, refunds,
    subscriptions; about 4.5 events). `"one"`: one event of that story per contact,
    taken round-robin over the story's payment and subscription events (so the mix of
    types stays), with the customer expanded on subscription events, as the email is
    then on the event itself rather than on an earlier `customer.created`.
    """
    feed = BenchActivity(seed, now)
    messages: list[Message] = []
    for n in range(contacts):
        account = account_name(account_offset + n % accounts)
        connection = connection_name(account)
        story = list(feed.customer_story(n))
        if per_contact == "one":
            customer = story[0]["data"]["object"]
            rest = story[1:]
            event = rest[n % len(rest)]
            obj = event["data"]["object"]
            if obj.get("object") == "subscription":
                obj["customer"] = {"id": customer["id"], "object": "customer",
                                   "email": customer["email"]}
            story = [event]
        for event in story:
            raw = RawEvent(connection, account, "webhook", now * 1000, event)
            messages.append((raw.key(), raw.to_bytes()))
    return Dataset(messages, contacts, accounts)


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as aiokafka and Java) picks."""
    return partition_for(key, partitions)


def _sentinel_event(n: str, customer: str, email: str, now: int) -> RawEvent:
    charge = {
        "id": f"ch_sentinel{n}", "object": "charge", "amount": 100, "amount_captured": 100,
        "amount_refunded": 0, "captured": True, "created": now, "currency": "usd",
        "customer": customer, "paid": True, "status": "succeeded", "refunded": False,
        "billing_details": {"email": email}, "receipt_email": None,
    }
    event = {"id": f"evt_sentinel{n}", "object": "event", "api_version": "2020-08-27",
             "created": now, "type": "charge.succeeded", "data": {"object": charge}}
    return RawEvent(connection_name(SENTINEL_ACCOUNT), SENTINEL_ACCOUNT, "webhook",
                    now * 1000, event)


def sentinels(partitions: int, now: int, tag: str = "end") -> list[Message]:
    """End-of-input markers: one event for every (event partition, fact partition) pair.

    Each is a charge of a sentinel contact whose raw event lands on one event partition
    and whose fact lands on one facts partition. Partitions are consumed in order, so once
    every sentinel has joined the sentinel rule's segment, every earlier event has been
    classified and every earlier fact applied: the end of the run, exactly. `tag` makes
    the contacts of one set distinct from another's (each contact joins only once).
    """
    wanted = {(event_partition, fact_partition) for event_partition in range(partitions)
              for fact_partition in range(partitions)}
    found: dict[tuple[int, int], Message] = {}
    for n in _counter():
        customer, email = f"cus_{tag}{n}", f"{tag}{n}@bench.invalid"
        raw = _sentinel_event(f"{tag}{n}", customer, email, now)
        key = raw.key()
        fact_key = f"{SENTINEL_ACCOUNT}\x1f{email}".encode()
        pair = (partition_of(key, partitions), partition_of(fact_key, partitions))
        if pair in wanted and pair not in found:
            found[pair] = (key, raw.to_bytes())
            if len(found) == len(wanted):
                break
    return [found[pair] for pair in sorted(found)]


def _counter() -> Iterator[int]:
    n = 0
    while True:
        yield n
        n += 1
