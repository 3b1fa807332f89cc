"""Connecting a Stripe account end to end, against localstripe run as a real server.

The connector checks the key and registers its webhook with localstripe
(SEGMENTS_WEBHOOK_REGISTRATION=localstripe); then customers, payments (Stripe's test
cards 4242... and the decline card 4000000000000341), subscriptions and a
cancellation are made through the official library, localstripe posts signed webhooks
to the running connector, and the events must arrive on the real broker topic.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import stripe

from common.settings import Settings
from connectors.backfill import BackfillOptions
from connectors.contract import RawEvent
from tests.connector_harness import Connector, read_events, running_connector
from tests.localstripe_server import REPO, running_localstripe
from tests.tokens import ADMIN, TEST_AUTH_SECRET, token
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration

API_KEY = "sk_test_segments_0123456789abcdef"
#: localstripe runs on this host's clock and lists at once: no settle delay, no overlap.
LOCAL_BACKFILL = BackfillOptions(rate_per_s=200, settle_s=0, overlap_s=0)


@pytest.fixture(scope="module")
def localstripe_url() -> Iterator[str]:
    with running_localstripe() as base:
        yield base


@pytest.fixture
async def connector(settings: Settings, localstripe_url: str) -> AsyncIterator[Connector]:
    emulated = replace(settings, stripe_api_base=localstripe_url)
    async with running_connector(emulated, registration="localstripe") as running:
        yield running


def make_activity(base: str, email: str) -> dict[str, Any]:
    """Real Stripe API calls through the official library; returns the ids created."""
    client = stripe.StripeClient(API_KEY, base_addresses={"api": base})

    def card(number: str) -> Any:
        return {"type": "card",
                "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}

    customer = client.v1.customers.create({"email": email})
    good = client.v1.payment_methods.create(card("4242424242424242"))
    client.v1.payment_methods.attach(good.id, {"customer": customer.id})
    paid = client.v1.payment_intents.create({
        "amount": 5000, "currency": "usd", "customer": customer.id,
        "payment_method": good.id, "confirm": True})
    assert paid.status == "succeeded"
    bad = client.v1.payment_methods.create(card("4000000000000341"))
    client.v1.payment_methods.attach(bad.id, {"customer": customer.id})
    with pytest.raises(stripe.CardError):
        client.v1.payment_intents.create({
            "amount": 7000, "currency": "usd", "customer": customer.id,
            "payment_method": bad.id, "confirm": True})
    product = client.v1.products.create({"name": "Pro"})
    plan = client.v1.plans.create(
        {"amount": 1500, "currency": "usd", "interval": "month", "product": product.id})
    client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": good.id}})
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"plan": plan.id}]})
    client.v1.subscriptions.cancel(subscription.id)
    return {"customer": customer.id, "subscription": subscription.id}


EXPECTED_TYPES = {
    "customer.created",
    "customer.updated",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "invoice.payment_succeeded",
    "customer.subscription.created",
    "customer.subscription.deleted",
}


async def events_of_types(settings: Settings, types: set[str]) -> list[RawEvent]:
    """Read the topic until every type in `types` is there (localstripe posts after 1 s)."""
    seen: list[RawEvent] = []

    async def all_there() -> bool:
        seen[:] = await read_events(settings, expect=len(types), timeout=2, quiet=0.2)
        return {e.event_type for e in seen} >= types

    await async_wait_for(all_there, 60, interval=0.2, what=f"events of types {sorted(types)}")
    return seen


async def connect(connector: Connector, **extra: str) -> tuple[int, dict[str, Any]]:
    doc = {"account_id": "acme", "api_key": API_KEY, **extra}
    return await connector.request("POST", "/connections", json=doc)


async def test_connect_then_stripe_activity_arrives_on_the_topic(
    connector: Connector, settings: Settings, localstripe_url: str
) -> None:
    status, created = await connect(connector)
    assert status == 201, created
    connection_id = created["id"]
    assert created["account_id"] == "acme"
    assert created["status"] == "active"
    assert created["webhook_endpoint_id"] == connection_id  # localstripe's hook id

    ids = await asyncio.to_thread(make_activity, localstripe_url, "ann@example.com")

    events = await events_of_types(settings, EXPECTED_TYPES)
    # Only the types we registered for: no product.created, plan.created, invoice.created.
    allowed = EXPECTED_TYPES | {"invoice.paid", "invoice.payment_failed"}
    assert {e.event_type for e in events} <= allowed
    for event in events:
        assert (event.connection_id, event.account_id, event.source) == (
            connection_id, "acme", "webhook")
    subs = [e for e in events if e.event_type.startswith("customer.subscription.")]
    assert {e.event["data"]["object"]["id"] for e in subs} == {ids["subscription"]}
    failed = next(e for e in events if e.event_type == "payment_intent.payment_failed")
    assert failed.event["data"]["object"]["customer"] == ids["customer"]


async def test_show_and_delete_a_connection(
    connector: Connector, settings: Settings, redis_url: str
) -> None:
    status, created = await connect(connector, webhook_secret="whsec_registered_by_hand_42")
    assert status == 201
    assert "webhook_endpoint_id" not in created  # manual: we created no endpoint
    connection_id = created["id"]

    redis = aioredis.Redis.from_url(redis_url)
    try:
        progress = {"status": "running", "events": 12, "pages": 1}
        await redis.set(f"{settings.topic_prefix}backfill:{connection_id}", orjson.dumps(progress))
        status, shown = await connector.request("GET", f"/connections/{connection_id}")
        assert status == 200
        assert shown["id"] == connection_id
        assert shown["account_id"] == "acme"
        assert shown["status"] == "active"
        assert shown["webhook_registration"] == "manual"
        assert shown["backfill"] == progress
        assert "api_key" not in shown
        assert "webhook_secret" not in str(shown)

        status, deleted = await connector.request("DELETE", f"/connections/{connection_id}")
        assert (status, deleted["deleted"]) == (200, True)
        assert not await redis.exists(f"{settings.topic_prefix}connection:{connection_id}")
        assert (await connector.request("GET", f"/connections/{connection_id}"))[0] == 404
        assert (await connector.request("DELETE", f"/connections/{connection_id}"))[0] == 404
        status, _ = await connector.post_webhook(connection_id, b"{}", {"Stripe-Signature": "x"})
        assert status == 404
    finally:
        await redis.aclose()


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"api_key": API_KEY}, "account_id"),
        ({"account_id": "acme"}, "api_key"),
        ({"account_id": "acme", "api_key": "pk_test_abcdef"}, "api_key"),
        ({"account_id": "acme", "api_key": "sk_test_a b"}, "api_key"),
        ({"account_id": "acme", "api_key": API_KEY, "webhook_secret": "nope"}, "webhook_secret"),
        ({"account_id": "acme", "api_key": API_KEY, "extra": 1}, "extra"),
        ({"account_id": "", "api_key": API_KEY}, "account_id"),
        # Issue 14: ids the rules and the read model refuse were accepted here, so such
        # an account connected and never got a segment (`common.ids`).
        ({"account_id": "acme:eu", "api_key": API_KEY}, "account_id"),
        ({"account_id": "ann@acme", "api_key": API_KEY}, "account_id"),
        ({"account_id": "a\x1fb", "api_key": API_KEY}, "account_id"),
        ({"account_id": "a" * 129, "api_key": API_KEY}, "account_id"),
    ],
)
async def test_invalid_connect_requests_name_the_field(
    connector: Connector, doc: dict[str, Any], field: str
) -> None:
    status, answer = await connector.request("POST", "/connections", json=doc)
    assert status == 400
    assert answer["error"]["field"] == field
    assert answer["error"]["reason"]
    assert await connector.store.list_ids() == []


async def test_no_key_or_secret_in_any_log_or_response(
    connector: Connector, settings: Settings, localstripe_url: str,
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    responses: list[str] = []

    async def call(method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with connector.http.request(method, f"{connector.admin_url}{path}",
                                          headers=ADMIN, **kw) as resp:
            text = await resp.text()
            responses.append(f"{resp.status} {dict(resp.headers)} {text}")
            return resp.status, orjson.loads(text) if text.startswith(("{", "[")) else text

    status, created = await call("POST", "/connections",
                                 json={"account_id": "acme", "api_key": API_KEY})
    assert status == 201
    connection_id = created["id"]
    found = await connector.store.webhook_secrets(connection_id)
    assert found is not None
    webhook_secret = found[1][0]
    assert webhook_secret.startswith("whsec_")

    await asyncio.to_thread(make_activity, localstripe_url, "bob@example.com")
    await events_of_types(settings, EXPECTED_TYPES)
    await call("GET", f"/connections/{connection_id}")
    await call("POST", "/connections", json={"account_id": "acme", "api_key": "sk_test_x y"})
    await call("GET", "/healthz")
    await call("GET", "/metrics")
    await call("DELETE", f"/connections/{connection_id}")

    # Encrypted at rest too: Redis holds no plaintext.
    raw = await connector.store.redis.hgetall(
        f"{settings.topic_prefix}connection:{connection_id}")
    assert raw == {}  # deleted; checked at rest in test_store_encrypts_at_rest

    captured = capfd.readouterr()
    haystack = "\n".join([caplog.text, captured.out, captured.err, *responses,
                          *(str(r.__dict__) for r in caplog.records)])
    assert len(caplog.records) > 5
    assert connection_id in haystack  # the search does look at the right material
    bearer_token = ADMIN["Authorization"].removeprefix("Bearer ")
    for secret in (API_KEY, webhook_secret, API_KEY[8:], webhook_secret[6:], bearer_token,
                   bearer_token.rsplit(".", 1)[1]):
        assert secret not in haystack


async def test_store_encrypts_at_rest(connector: Connector, settings: Settings) -> None:
    status, created = await connect(connector, webhook_secret="whsec_at_rest_check_77")
    assert status == 201
    raw = await connector.store.redis.hgetall(
        f"{settings.topic_prefix}connection:{created['id']}")
    blob = " ".join(f"{k!r}={v!r}" for k, v in raw.items())
    assert raw
    assert API_KEY not in blob
    assert "whsec_at_rest_check_77" not in blob
    conn = await connector.store.get(created["id"])
    assert conn is not None
    assert connector.store.api_key(conn) == API_KEY
    assert API_KEY not in repr(conn)


async def _backfill_state(connector: Connector, connection_id: str) -> Any:
    status, shown = await connector.request("GET", f"/connections/{connection_id}")
    assert status == 200
    backfill = shown.get("backfill")
    return backfill.get("state") if isinstance(backfill, dict) else None


async def test_connect_starts_the_backfill_and_show_reports_its_progress(
    settings: Settings, localstripe_url: str
) -> None:
    emulated = replace(settings, stripe_api_base=localstripe_url)
    async with running_connector(emulated, registration="localstripe", start_backfill=True,
                                 backfill_options=LOCAL_BACKFILL) as connector:
        status, created = await connect(connector)
        assert (status, created["backfill"]) == (201, "started")

        async def finished() -> bool:
            return bool(await _backfill_state(connector, created["id"]) == "done")

        await async_wait_for(finished, 60, interval=0.3, what="the backfill to finish")
        status, shown = await connector.request("GET", f"/connections/{created['id']}")
        assert status == 200
        # The window ends where webhooks begin: the instant the connection (and its
        # endpoint) exists, and that second was read.
        backfill = shown["backfill"]
        assert backfill["target"] == shown["created_at"] == backfill["until"]
        assert backfill["since"] == shown["created_at"] - 30 * 86400
        assert (backfill["phase"], backfill["phase_text"]) == ("done", "done")


async def test_unfinished_backfills_resume_when_the_connector_starts(
    settings: Settings, localstripe_url: str
) -> None:
    emulated = replace(settings, stripe_api_base=localstripe_url)
    async with running_connector(emulated, registration="localstripe") as connector:
        status, created = await connect(connector)  # backfill not started: "a crash"
        assert (status, created["backfill"]) == (201, "not_started")
        assert await _backfill_state(connector, created["id"]) is None
    async with running_connector(emulated, registration="localstripe", declare_topics=False,
                                 start_backfill=True,
                                 backfill_options=LOCAL_BACKFILL) as restarted:

        async def finished() -> bool:
            return bool(await _backfill_state(restarted, created["id"]) == "done")

        await async_wait_for(finished, 60, interval=0.3, what="the resumed backfill")


async def test_segments_connect_reads_the_key_from_stdin(
    connector: Connector, tmp_path: Any
) -> None:
    argv = [sys.executable, "-m", "segments.cli", "connect", "--account", "acme-cli",
            "--connector-url", connector.admin_url]
    # The token is signed by the command with the secret the connector verifies with.
    env = {**os.environ, "SEGMENTS_AUTH_SECRET": TEST_AUTH_SECRET}
    env.pop("SEGMENTS_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=REPO, env=env)
    out, err = await asyncio.wait_for(proc.communicate(API_KEY.encode() + b"\n"), 60)
    assert proc.returncode == 0, err.decode()
    connection_id = out.decode().strip()
    conn = await connector.store.get(connection_id)
    assert conn is not None
    assert conn.account_id == "acme-cli"
    assert API_KEY not in out.decode() + err.decode()

    # A key file works too; a rejected request says which field and why.
    key_file = tmp_path / "key.txt"
    key_file.write_text("pk_test_publishable\n")
    # A token given in SEGMENTS_TOKEN (as from an identity provider) is sent as it is.
    given = {**os.environ, "SEGMENTS_TOKEN": token("acme-cli")}
    given.pop("SEGMENTS_AUTH_SECRET", None)
    proc = await asyncio.create_subprocess_exec(
        *argv, "--key-file", str(key_file), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL, cwd=REPO, env=given)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert "api_key: a publishable key cannot read account data" in err.decode()
    assert "pk_test_publishable" not in err.decode()
