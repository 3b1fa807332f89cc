"""An independent model of the chaos run's rules: what `segments.membership` and
`segments.members` must hold, computed from the generated charges alone (no code of
`rules/` or `stream/`).

Rules (account `acme`), published before the first event:
- `recent`: a successful charge created within the last 7 days (a relative window);
- `twice-failed`: at least 2 failed charges (an `occurrences` condition);
- `big`: version 1, a successful charge of at least 90 USD; changed between phase A
  and phase B (version 2) to a successful charge of at least 50 and under 100 USD, so
  some members leave and some contacts join at the change.

Generated charges are created 2 days or 20 days ago, far from the 7-day boundary (no
window closes while the test runs) and inside the stream's 33-day history floor (facts
past it are pruned by design, `stream/membership.py`, which this model leaves out).
Every condition is monotone in the facts within a phase, so each (segment, contact)
has one exact sequence of changes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DAY = 24 * 3600
AMOUNTS = (2_000, 6_000, 9_000, 15_000)  # minor units (USD cents)


@dataclass(frozen=True)
class Charge:
    email: str
    amount: int  # minor units
    failed: bool
    created: int
    phase: str  # "A" (before the rule change) or "B" (after)


def generate(rng: random.Random, contacts: int, events: int, now: int) -> list[Charge]:
    """`events` charges over `contacts` contacts (each has at least one), shuffled; the
    first half is phase A."""
    emails = [f"chaos{c}@example.com" for c in range(contacts)]
    owners = emails + [rng.choice(emails) for _ in range(events - contacts)]
    rng.shuffle(owners)
    charges = []
    for i, email in enumerate(owners):
        charges.append(Charge(
            email=email, amount=rng.choice(AMOUNTS), failed=rng.random() < 0.3,
            created=now - (20 if rng.random() < 0.2 else 2) * DAY,
            phase="A" if i < events // 2 else "B"))
    return charges


def _big_v1(amount: int) -> bool:
    return amount >= 9_000


def _big_v2(amount: int) -> bool:
    return 5_000 <= amount < 10_000


def expected(charges: list[Charge], now: int) -> dict[tuple[str, str], list[str]]:
    """(segment, email) -> the exact sequence of changes ("joined"/"left")."""
    by_email: dict[str, list[Charge]] = {}
    for ch in charges:
        by_email.setdefault(ch.email, []).append(ch)
    out: dict[tuple[str, str], list[str]] = {}
    for email, mine in by_email.items():
        paid = [ch for ch in mine if not ch.failed]
        if any(ch.created >= now - 7 * DAY for ch in paid):
            out[("recent", email)] = ["joined"]
        if sum(ch.failed for ch in mine) >= 2:
            out[("twice-failed", email)] = ["joined"]
        seq: list[str] = []
        member = any(_big_v1(ch.amount) for ch in paid if ch.phase == "A")
        if member:
            seq.append("joined")
        after_change = any(_big_v2(ch.amount) for ch in paid if ch.phase == "A")
        if member != after_change:
            seq.append("joined" if after_change else "left")
        if not after_change and any(_big_v2(ch.amount) for ch in paid):
            seq.append("joined")
        if seq:
            out[("big", email)] = seq
    return out


def changes_at_rule_change(charges: list[Charge]) -> int:
    """How many membership changes the switch of `big` to version 2 causes."""
    by_email: dict[str, list[int]] = {}
    for ch in charges:
        if ch.phase == "A" and not ch.failed:
            by_email.setdefault(ch.email, []).append(ch.amount)
    return sum(any(map(_big_v1, a)) != any(map(_big_v2, a)) for a in by_email.values())


def final_members(sequences: dict[tuple[str, str], list[str]]) -> set[tuple[str, str]]:
    return {key for key, seq in sequences.items() if seq[-1] == "joined"}
