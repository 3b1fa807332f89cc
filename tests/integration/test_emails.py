"""The email resolver against localstripe as a real server and the real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
import stripe

from common.settings import Settings
from connectors.emails import NEGATIVE_TTL_S, EmailLookupError, EmailResolver
from tests.localstripe_server import running_localstripe
from tests.stripe_activity import flush

pytestmark = pytest.mark.integration

KEY = "sk_test_emails_0123456789"
CONN = "conn_emails"


@pytest.fixture(scope="module")
def localstripe_base() -> Iterator[str]:
    with running_localstripe() as base:
        yield base


@pytest.fixture
def api(localstripe_base: str) -> stripe.StripeClient:
    flush(localstripe_base)
    return stripe.StripeClient(KEY, base_addresses={"api": localstripe_base})


@pytest.fixture
async def resolver(settings: Settings, redis: aioredis.Redis,
                   localstripe_base: str) -> AsyncIterator[EmailResolver]:
    async def keys(connection_id: str) -> str | None:
        return KEY if connection_id == CONN else None

    settings = Settings(**{**settings.__dict__, "stripe_api_base": localstripe_base})
    resolver = EmailResolver(redis, settings, keys)
    yield resolver
    await resolver.aclose()


async def test_miss_looks_up_once_then_the_cache_answers(
        api: stripe.StripeClient, resolver: EmailResolver, redis: aioredis.Redis) -> None:
    customer = api.v1.customers.create(params={"email": "  Ann.Lee@Example.COM "})
    assert await resolver.email_for(CONN, customer.id) == "ann.lee@example.com"
    assert await resolver.email_for(CONN, customer.id) == "ann.lee@example.com"
    assert resolver.lookups == 1
    key = resolver.cache_key(CONN, customer.id)
    assert key.startswith(resolver.settings.topic_prefix)
    assert await redis.ttl(key) > NEGATIVE_TTL_S  # a positive entry lives long


async def test_customer_without_email_is_negatively_cached_for_a_short_while(
        api: stripe.StripeClient, resolver: EmailResolver, redis: aioredis.Redis) -> None:
    customer = api.v1.customers.create(params={"name": "no email"})
    assert await resolver.email_for(CONN, customer.id) is None
    assert await resolver.email_for(CONN, customer.id) is None
    assert resolver.lookups == 1
    assert 0 < await redis.ttl(resolver.cache_key(CONN, customer.id)) <= NEGATIVE_TTL_S
    # The customer.updated event that adds the email replaces the negative entry.
    assert await resolver.remember(CONN, customer.id, "New@Example.com ",
                                   as_of=int(time.time()) - 5)
    assert await resolver.email_for(CONN, customer.id) == "new@example.com"
    assert resolver.lookups == 1


async def test_unknown_customer_and_unknown_connection(
        resolver: EmailResolver, redis: aioredis.Redis) -> None:
    assert await resolver.email_for(CONN, "cus_doesnotexist") is None  # 404: negative
    assert await resolver.email_for(CONN, "cus_doesnotexist") is None
    assert resolver.lookups == 1
    assert await resolver.email_for("conn_other", "cus_x") is None  # no key: no call
    assert resolver.lookups == 1
    assert await redis.get(resolver.cache_key("conn_other", "cus_x")) is None


async def test_remember_keeps_the_newest_and_prefers_knowing_an_email(
        resolver: EmailResolver) -> None:
    assert await resolver.remember(CONN, "cus_1", "b@x.com", as_of=200)
    assert not await resolver.remember(CONN, "cus_1", "a@x.com", as_of=100)  # older event
    assert not await resolver.remember(CONN, "cus_1", None, as_of=150)
    assert await resolver.cached(CONN, "cus_1") == (True, "b@x.com")
    assert await resolver.remember(CONN, "cus_1", None, as_of=300)  # email removed
    assert await resolver.cached(CONN, "cus_1") == (True, None)
    assert await resolver.remember(CONN, "cus_1", "c@x.com", as_of=250)  # knowing wins
    assert await resolver.email_for(CONN, "cus_1") == "c@x.com"
    assert resolver.lookups == 0


async def test_warm_lists_customers_so_later_look_ups_are_free(
        api: stripe.StripeClient, resolver: EmailResolver) -> None:
    made = {api.v1.customers.create(params={"email": f"U{i}@Example.com"}).id: f"u{i}@example.com"
            for i in range(23)}
    bare = api.v1.customers.create(params={"name": "bare"}).id
    assert await resolver.warm(CONN, KEY, page_size=10) == 24
    for customer, email in made.items():
        assert await resolver.email_for(CONN, customer) == email
    assert await resolver.email_for(CONN, bare) is None
    assert resolver.lookups == 0


async def test_concurrent_misses_share_one_look_up(
        api: stripe.StripeClient, resolver: EmailResolver) -> None:
    customer = api.v1.customers.create(params={"email": "same@example.com"})
    answers = await asyncio.gather(*(resolver.email_for(CONN, customer.id) for _ in range(8)))
    assert answers == ["same@example.com"] * 8
    assert resolver.lookups == 1


async def test_look_ups_are_rate_limited_per_connection(
        api: stripe.StripeClient, settings: Settings, redis: aioredis.Redis,
        localstripe_base: str) -> None:
    customers = [api.v1.customers.create(params={"email": f"r{i}@x.com"}).id for i in range(9)]

    async def keys(_connection_id: str) -> str | None:
        return KEY

    settings = Settings(**{**settings.__dict__, "stripe_api_base": localstripe_base})
    slow = EmailResolver(redis, settings, keys, lookup_rate=5)
    try:
        started = time.monotonic()
        await asyncio.gather(*(slow.email_for(CONN, c) for c in customers))
        elapsed = time.monotonic() - started
    finally:
        await slow.aclose()
    # A burst of 5, then 5 per second: the 9th look-up leaves 0.8 s after the first.
    assert elapsed >= 0.75
    assert slow.lookups == 9


async def test_a_rejected_key_is_an_error_not_a_cached_none(
        settings: Settings, redis: aioredis.Redis, localstripe_base: str) -> None:
    async def bad_key(_connection_id: str) -> str | None:
        return "not-a-key"

    settings = Settings(**{**settings.__dict__, "stripe_api_base": localstripe_base})
    resolver = EmailResolver(redis, settings, bad_key)
    try:
        with pytest.raises(EmailLookupError) as info:
            await resolver.email_for(CONN, "cus_1")
    finally:
        await resolver.aclose()
    assert not info.value.retriable
    assert "not-a-key" not in str(info.value)
    assert await resolver.cached(CONN, "cus_1") == (False, None)
