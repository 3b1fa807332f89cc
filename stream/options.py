"""How a worker runs: the options of `stream.app.create_app`, defaults for production."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from common.windows import HISTORY_FLOOR_SECONDS

Clock = Callable[[], int]
#: Kafka Streams' two guarantees; see README, "Delivery guarantees".
ProcessingGuarantee = Literal["exactly_once", "at_least_once"]
#: (connection id, Stripe customer id) -> the customer's email, None if it has none.
EmailLookup = Callable[[str, str], Awaitable[str | None]]
#: connection id -> the Center account it feeds, None if there is no such connection.
ConnectionAccount = Callable[[str], Awaitable[str | None]]



def system_clock() -> int:
    return int(time.time())


@dataclass(frozen=True, kw_only=True)
class StreamOptions:
    """How the worker runs; defaults are the production choices (see README)."""

    processing_guarantee: ProcessingGuarantee = "exactly_once"
    #: Longest a transaction stays open while records keep coming (seconds). An idle
    #: partition commits as soon as its batch is processed.
    commit_interval: float = 0.1
    tick_interval: float = 1.0
    #: How long the producer waits to fill a batch (milliseconds).
    linger_ms: int = 0
    clock: Clock = system_clock
    #: Asked when a fact's customer has no known email (a customer older than the
    #: backfill window has no customer.* event); None waits for such an event.
    email_lookup: EmailLookup | None = None
    #: Checks each raw event's envelope against its stored connection (`stream.envelopes`):
    #: a forged account or an unknown connection is dead-lettered. None trusts envelopes
    #: (tests and benchmarks that write raw events without a connector).
    connection_account: ConnectionAccount | None = None
    #: False runs classification alone (benchmarks of that stage).
    membership: bool = True
    #: History every contact keeps whatever the rules (`SEGMENTS_HISTORY_DAYS`); rules
    #: with longer windows lengthen it, and facts a rule still needs stay past it
    #: (`stream.membership`, "Retention").
    history_floor_s: int = HISTORY_FLOOR_SECONDS
    #: How long the group waits for a silent worker before giving its partitions away
    #: (seconds): what a `kill -9` costs before anyone takes over. Heartbeats run on
    #: the event loop, so a loop busy longer than this (a large recovery, a preview on a
    #: starved machine) gets a live worker thrown out and its partitions moved;
    #: `segments worker` defaults to 30 (`SEGMENTS_SESSION_TIMEOUT_S`).
    session_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.processing_guarantee not in ("exactly_once", "at_least_once"):
            raise ValueError(f"processing_guarantee must be exactly_once or at_least_once, "
                             f"not {self.processing_guarantee!r}")
        if self.commit_interval <= 0 or self.tick_interval <= 0:
            raise ValueError("commit_interval and tick_interval must be positive")
        if self.history_floor_s <= 0:
            raise ValueError("history_floor_s must be positive")
        if not 6 <= self.session_timeout_s <= 1800:  # the broker's default bounds
            raise ValueError("session_timeout_s must be between 6 and 1800 seconds")
