"""Quotas of `POST /connections` per account on the real connector (Redis, Kafka and the
Stripe emulator): the connection cap and the hourly attempt limit answer 429 with
`Retry-After`, count per account (another account is not affected), and a deleted
connection frees its slot at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from common.settings import Settings
from connectors.quotas import (
    STALE_RESERVATION_S,
    ConnectionQuotas,
    QuotaExceeded,
    QuotaLimits,
)
from tests.connector_harness import Connector, running_connector
from tests.localstripe_server import running_localstripe
from tests.tokens import bearer

pytestmark = pytest.mark.integration

API_KEY = "sk_test_segments_quota_0123456789"


@pytest.fixture(scope="module")
def localstripe_url() -> Iterator[str]:
    with running_localstripe() as base:
        yield base


async def _connector(settings: Settings, base: str,
                     limits: QuotaLimits) -> AsyncIterator[Connector]:
    emulated = replace(settings, stripe_api_base=base)
    async with running_connector(emulated, registration="localstripe",
                                 limits=limits) as running:
        yield running


async def create(connector: Connector, account: str,
                 api_key: str = API_KEY) -> tuple[int, dict[str, str], dict[str, object]]:
    async with connector.http.post(
            f"{connector.admin_url}/connections", headers=bearer(account),
            json={"account_id": account, "api_key": api_key,
                  "webhook_secret": "whsec_quota_0123456789"}) as resp:
        return resp.status, dict(resp.headers), await resp.json()



async def test_connection_cap_per_account(settings: Settings, localstripe_url: str,
                                          redis: aioredis.Redis) -> None:
    async for connector in _connector(settings, localstripe_url, QuotaLimits(2, 100)):
        first = await create(connector, "acme")
        second = await create(connector, "acme")
        assert (first[0], second[0]) == (201, 201)
        status, headers, body = await create(connector, "acme")
        assert status == 429
        assert int(headers["Retry-After"]) > 0
        assert "at most 2 connections" in str(body)
        assert len(await connector.store.list_ids()) == 2
        # Another account has its own quota.
        assert (await create(connector, "globex"))[0] == 201
        # Deleting one frees its slot at once.
        async with connector.http.delete(
                f"{connector.admin_url}/connections/{first[2]['id']}",
                headers=bearer("acme")) as resp:
            assert resp.status == 200
        assert (await create(connector, "acme"))[0] == 201


async def test_hourly_attempts_are_not_refunded_by_deleting(settings: Settings,
                                                            localstripe_url: str,
                                                            redis: aioredis.Redis) -> None:
    async for connector in _connector(settings, localstripe_url, QuotaLimits(100, 3)):
        for _ in range(3):  # create and delete: each creation called Stripe
            status, _, body = await create(connector, "acme")
            assert status == 201
            async with connector.http.delete(
                    f"{connector.admin_url}/connections/{body['id']}",
                    headers=bearer("acme")) as resp:
                assert resp.status == 200
        status, headers, body = await create(connector, "acme")
        assert status == 429
        assert 3500 < int(headers["Retry-After"]) <= 3600
        assert "per hour" in str(body)
        assert await connector.store.list_ids() == []
        assert (await create(connector, "globex"))[0] == 201


async def test_concurrent_reservations_cannot_share_the_last_slot(
        redis: aioredis.Redis, topic_prefix: str) -> None:
    async def exists(connection_id: str) -> bool:
        return True

    quotas = ConnectionQuotas(redis, topic_prefix, QuotaLimits(3, 100), exists)
    outcomes = await asyncio.gather(*(quotas.reserve("acme", f"conn_{i}") for i in range(10)),
                                    return_exceptions=True)
    assert sum(o is None for o in outcomes) == 3
    assert all(isinstance(o, QuotaExceeded) for o in outcomes if o is not None)
    # A failed creation gives its slot back: release one of the three that won (which
    # ones win the race is up to the scheduler).
    winner = next(i for i, o in enumerate(outcomes) if o is None)
    await quotas.release("acme", f"conn_{winner}")
    await quotas.reserve("acme", "conn_10")


async def test_a_reservation_whose_connection_never_appeared_expires(
        redis: aioredis.Redis, topic_prefix: str) -> None:
    now = [1_000_000.0]
    live = {"conn_kept"}

    async def exists(connection_id: str) -> bool:
        return connection_id in live

    quotas = ConnectionQuotas(redis, topic_prefix, QuotaLimits(2, 100), exists,
                              clock=lambda: now[0])
    await quotas.reserve("acme", "conn_kept")
    await quotas.reserve("acme", "conn_crashed")  # the process died before storing it
    with pytest.raises(QuotaExceeded):
        await quotas.reserve("acme", "conn_new")
    now[0] += STALE_RESERVATION_S + 1
    await quotas.reserve("acme", "conn_new")  # the stale one no longer counts
    with pytest.raises(QuotaExceeded):
        await quotas.reserve("acme", "conn_newer")  # the live one still does
