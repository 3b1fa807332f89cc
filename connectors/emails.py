"""Which email a Stripe customer has: a Redis cache, filled three ways, and an API look-up.

A contact is an email (SPEC, "Contacts"), but most payment events name only a customer
id. The stream asks `email_for(connection, customer)`; the answer comes from Redis, which
is filled by `customer.*` events (`remember`), by the backfill's Customers list (`warm`),
and, on a miss, by one `customers.retrieve` call, rate limited per connection so that a
burst of unknown customers cannot eat the account's Stripe rate limit.

A customer without an email is cached too (a *negative* entry, short-lived: the email may
be added any minute), so it is not looked up again for every event. Entries carry the
time they describe (`as_of`: the event's `created`, or the time of the API read), so an
old event arriving late cannot overwrite what a newer one said; the one exception is
that knowing an email always beats not knowing one.

Keys: `{prefix}email:{connection_id}:{customer_id}` -> `"{as_of}|{email}"` (empty email
for a negative entry). Each worker process has its own rate limit bucket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import stripe

from common.emails import normalize_email
from common.settings import Settings
from connectors.errors import ConnectorError
from connectors.stripe_client import AsyncStripe, RequestPacer

log = logging.getLogger(__name__)

POSITIVE_TTL_S = 30 * 24 * 3600
NEGATIVE_TTL_S = 10 * 60
DEFAULT_LOOKUP_RATE = 10.0

KeyProvider = Callable[[str], Awaitable[str | None]]

# KEYS[1] entry; ARGV: as_of, encoded value, "1" if it has an email, ttl seconds.
_REMEMBER = """
local current = redis.call('GET', KEYS[1])
if current then
  local sep = string.find(current, '|', 1, true)
  local current_as_of = tonumber(string.sub(current, 1, (sep or 1) - 1)) or 0
  local current_known = sep ~= nil and sep < string.len(current)
  local upgrade = ARGV[3] == '1' and not current_known
  if not upgrade and current_as_of > tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[4]))
return 1
"""


class EmailLookupError(ConnectorError, RuntimeError):
    """Stripe could not answer a look-up; nothing was cached.

    `retriable` is true for rate limits, network and server errors (ask again later),
    false when the connection's key is rejected (asking again will not help).
    """

    retriable = True

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


def _decode(raw: bytes | str) -> tuple[int, str | None]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    as_of, _, email = text.partition("|")
    return int(as_of or 0), (email or None)


class EmailResolver:
    """Customer id -> email for one deployment, shared by all connections.

    `key_provider(connection_id)` returns the connection's API key (or None for an
    unknown connection); it is only called on a cache miss.
    """

    def __init__(self, redis: aioredis.Redis, settings: Settings, key_provider: KeyProvider,
                 *, lookup_rate: float = DEFAULT_LOOKUP_RATE,
                 positive_ttl_s: int = POSITIVE_TTL_S, negative_ttl_s: int = NEGATIVE_TTL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.settings = settings
        self.key_provider = key_provider
        self.lookup_rate = lookup_rate
        self.positive_ttl_s = positive_ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.clock = clock
        #: Stripe `customers.retrieve` calls made (the cost a cache exists to avoid).
        self.lookups = 0
        self._remember = redis.register_script(_REMEMBER)
        self._pacers: dict[str, RequestPacer] = {}
        self._clients: dict[str, tuple[str, AsyncStripe]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[str | None]] = {}

    def cache_key(self, connection_id: str, customer_id: str) -> str:
        return f"{self.settings.topic_prefix}email:{connection_id}:{customer_id}"

    async def cached(self, connection_id: str, customer_id: str) -> tuple[bool, str | None]:
        """(hit, email) from the cache alone: (True, None) is a negative entry."""
        raw = await self.redis.get(self.cache_key(connection_id, customer_id))
        if raw is None:
            return False, None
        return True, _decode(raw)[1]

    async def remember(self, connection_id: str, customer_id: str, email: str | None,
                       *, as_of: int | None = None) -> bool:
        """Cache what an event or listing said; False if the cache knew something newer.

        `as_of` is when the information was true (the event's `created`); None means now.
        """
        return await self._remember_many(connection_id, [(customer_id, email)], as_of=as_of) > 0

    async def _remember_many(self, connection_id: str,
                             entries: list[tuple[str, str | None]],
                             *, as_of: int | None) -> int:
        stamp = int(self.clock()) if as_of is None else int(as_of)
        pipe = self.redis.pipeline(transaction=False)
        for customer_id, raw_email in entries:
            email = normalize_email(raw_email)
            ttl = self.positive_ttl_s if email else self.negative_ttl_s
            await self._remember(
                keys=[self.cache_key(connection_id, customer_id)],
                args=[stamp, f"{stamp}|{email or ''}", "1" if email else "0", ttl],
                client=pipe,
            )
        results = await pipe.execute()
        return sum(int(r) for r in results)

    async def email_for(self, connection_id: str, customer_id: str) -> str | None:
        """The customer's email, or None if it has none (or the connection is unknown).

        Raises `EmailLookupError` when the cache misses and Stripe cannot answer.
        """
        hit, email = await self.cached(connection_id, customer_id)
        if hit:
            return email
        # Concurrent misses for one customer share one look-up.
        flight = (connection_id, customer_id)
        pending = self._inflight.get(flight)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._inflight[flight] = future
        try:
            email = await self._look_up(connection_id, customer_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: waiters re-raise it, nobody else must
            raise
        else:
            future.set_result(email)
            return email
        finally:
            del self._inflight[flight]

    async def _look_up(self, connection_id: str, customer_id: str) -> str | None:
        api_key = await self.key_provider(connection_id)
        if api_key is None:
            log.warning("email look-up for unknown connection %s", connection_id)
            return None
        api = self._client(connection_id, api_key)
        self.lookups += 1
        read_at = int(self.clock())
        try:
            customer = await api.client.v1.customers.retrieve_async(customer_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status != 404:
                raise EmailLookupError(f"customer look-up refused: {exc.user_message}",
                                       retriable=False) from None
            email = None  # deleted long ago, or never existed: nobody to attribute to
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            raise EmailLookupError(
                f"connection {connection_id}: key rejected ({type(exc).__name__})",
                retriable=False) from None
        except stripe.StripeError as exc:
            raise EmailLookupError(f"customer look-up failed: {type(exc).__name__}",
                                   retriable=True) from None
        else:
            email = None if _field(customer, "deleted") else normalize_email(
                _field(customer, "email"))
        await self.remember(connection_id, customer_id, email, as_of=read_at)
        return email

    async def warm(self, connection_id: str, api_key: str, *,
                   client: stripe.StripeClient | None = None, page_size: int = 100) -> int:
        """Cache every customer of the account (Customers list); returns how many.

        The backfill passes its own paced `client` so both share one rate budget.
        """
        owned = None
        if client is None:
            owned = AsyncStripe(api_key, api_base=self.settings.stripe_api_base,
                                pacer=self._pacer(connection_id))
            client = owned.client
        seen = 0
        try:
            read_at = int(self.clock())
            listing = await client.v1.customers.list_async(params={"limit": page_size})
            batch: list[tuple[str, str | None]] = []
            async for customer in listing.auto_paging_iter():
                batch.append((str(customer["id"]), _field(customer, "email")))
                if len(batch) >= page_size:
                    await self._remember_many(connection_id, batch, as_of=read_at)
                    seen += len(batch)
                    batch = []
            if batch:
                await self._remember_many(connection_id, batch, as_of=read_at)
                seen += len(batch)
        finally:
            if owned is not None:
                await owned.aclose()
        return seen

    def _pacer(self, connection_id: str) -> RequestPacer:
        pacer = self._pacers.get(connection_id)
        if pacer is None:
            pacer = self._pacers[connection_id] = RequestPacer(
                self.lookup_rate, burst=self.lookup_rate)
        return pacer

    def _client(self, connection_id: str, api_key: str) -> AsyncStripe:
        known = self._clients.get(connection_id)
        if known is not None and known[0] == api_key:
            return known[1]
        if known is not None:  # the key was rotated: the old session goes
            task = asyncio.get_running_loop().create_task(known[1].aclose())
            task.add_done_callback(lambda t: t.exception())
        api = AsyncStripe(api_key, api_base=self.settings.stripe_api_base,
                          pacer=self._pacer(connection_id))
        self._clients[connection_id] = (api_key, api)
        return api

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for _, api in clients.values():
            await api.aclose()


def _field(obj: Any, name: str) -> Any:
    """A top-level field of a StripeObject (which is not a dict: no `.get`)."""
    try:
        return obj[name]
    except KeyError:
        return None
