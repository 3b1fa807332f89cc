"""Raw events are only as trustworthy as their envelope: check it against the connection.

A record on `stripe.events` says which connection it came through and which Center
account that connection feeds. Anyone able to write to the topic could claim another
account (and have the worker look customers up with the victim connection's Stripe key,
filing them under the forged account), so before classifying an event the worker asks
the connector's store which account the connection belongs to: an envelope whose
`account_id` differs (`ForgedEnvelope`), or whose connection does not exist
(`UnknownConnection`), is dead-lettered with that reason and never processed. ACLs
(only the connector may write the topic) are the first line; this is the second.

A connection's account never changes, so answers are cached; a look-up that keeps
failing (Redis away) is not a verdict on the event: it fails the worker, which its
orchestrator restarts, and the batch is processed again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from connectors.contract import RawEvent
from stream.errors import StreamError
from stream.options import ConnectionAccount

#: How long a connection's account is trusted from the cache (a deleted connection's
#: events pass for at most this long after the deletion).
CACHE_SECONDS = 60.0
ATTEMPTS = 3


class EnvelopeRejected(StreamError, ValueError):
    """The envelope does not match the stored connection: a dead letter, not an input."""


class ForgedEnvelope(EnvelopeRejected):
    """The envelope's account is not the account of the connection it names."""


class UnknownConnection(EnvelopeRejected):
    """The envelope names a connection that does not exist (or no longer does)."""


def _shown(value: str, limit: int = 80) -> str:
    """An attacker-controlled value as a dead letter's reason shows it: bounded."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


class EnvelopeCheck:
    def __init__(self, lookup: ConnectionAccount, *, cache_seconds: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic, backoff: float = 0.5) -> None:
        self.lookup = lookup
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.backoff = backoff
        self._cache: dict[str, tuple[float, str]] = {}

    async def verify(self, raw: RawEvent) -> None:
        """Raise `EnvelopeRejected` unless `raw.account_id` is its connection's account."""
        account = await self.account_of(raw.connection_id)
        if account is None:
            raise UnknownConnection(f"no connection {_shown(raw.connection_id)}")
        if account != raw.account_id:
            raise ForgedEnvelope(f"account_id {_shown(raw.account_id)} is not the account "
                                 f"of connection {_shown(raw.connection_id)}")

    async def account_of(self, connection_id: str) -> str | None:
        now = self.clock()
        hit = self._cache.get(connection_id)
        if hit is not None and now - hit[0] < self.cache_seconds:
            return hit[1]
        for attempt in range(ATTEMPTS):
            try:
                account = await self.lookup(connection_id)
                break
            except Exception:
                if attempt == ATTEMPTS - 1:
                    raise
                await asyncio.sleep(self.backoff * 2 ** attempt)
        if account is not None:
            self._cache[connection_id] = (now, account)
        else:
            self._cache.pop(connection_id, None)
        return account
