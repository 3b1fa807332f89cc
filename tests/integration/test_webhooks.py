"""The webhook receiver against the real broker and Redis: what goes in, what comes out.

Bodies are Stripe's own published event payloads (../shared/stripe-fixtures), signed
like Stripe signs them. Every refusal is checked twice: the status code, and that the
raw-event topic is still empty (end offsets, then a read from the beginning).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from common.logs import record_fields
from common.settings import Settings
from connectors.contract import message_key
from connectors.store import new_connection_id
from tests.connector_harness import (
    Connector,
    end_offsets_total,
    read_events,
    running_connector,
)
from tests.stripe_signing import sign

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "stripe-fixtures"
SECRET = "whsec_test_current_0123456789"
OLD_SECRET = "whsec_test_previous_9876543210"


def fixture_bodies() -> list[bytes]:
    files = sorted((FIXTURES / "events-stripe-cli-2020-08-27").glob("*.json"))
    files += sorted((FIXTURES / "events-stripe-java-legacy").glob("*.json"))
    assert len(files) == 16, f"stripe fixtures not found under {FIXTURES}"
    bodies = [f.read_bytes() for f in files]
    # Stripe published no full refund.created event: wrap its refund object in one.
    refund = json.loads((FIXTURES / "object.refund.json").read_text())
    bodies.append(json.dumps({
        "id": "evt_refund_created_1", "object": "event", "type": "refund.created",
        "api_version": "2024-06-20", "created": 1721948530, "livemode": False,
        "data": {"object": refund}, "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
    }, indent=2).encode())
    return bodies


@pytest.fixture
async def connector(settings: Settings) -> AsyncIterator[Connector]:
    async with running_connector(settings) as running:
        yield running


async def add_connection(connector: Connector, secret: str = SECRET) -> str:
    connection_id = new_connection_id()
    await connector.store.create(
        connection_id=connection_id, account_id="acme", api_key="sk_test_not_used",
        webhook_secret=secret, registration="manual", webhook_endpoint_id=None,
    )
    return connection_id


async def assert_nothing_produced(settings: Settings) -> None:
    assert await end_offsets_total(settings) == 0
    assert await read_events(settings, quiet=0.5) == []


async def test_signed_stripe_events_land_on_the_topic_untouched(
    connector: Connector, settings: Settings
) -> None:
    connection_id = await add_connection(connector)
    bodies = fixture_bodies()
    before_ms = int(time.time() * 1000)
    for body in bodies:
        status, answer = await connector.post_webhook(
            connection_id, body, {"Stripe-Signature": sign(body, SECRET),
                                  "Content-Type": "application/json"})
        assert (status, answer) == (200, {"received": True})

    events = await read_events(settings, expect=len(bodies))
    assert len(events) == len(bodies)
    sent = sorted(orjson.dumps(json.loads(b), option=orjson.OPT_SORT_KEYS) for b in bodies)
    got = sorted(orjson.dumps(e.event, option=orjson.OPT_SORT_KEYS) for e in events)
    assert got == sent  # the Stripe event exactly as sent, nothing added or dropped
    for event in events:
        assert event.source == "webhook"
        assert (event.connection_id, event.account_id) == (connection_id, "acme")
        assert before_ms <= event.received_at_ms <= int(time.time() * 1000)
        assert event.key() == message_key(connection_id, event.event)


def _case(name: str, body: bytes, header: str | None, status: int) -> object:
    return pytest.param(body, header, status, id=name)


GOOD = (FIXTURES / "events-stripe-cli-2020-08-27" / "charge.refunded.json").read_bytes()
NOW = int(time.time())


@pytest.mark.parametrize(
    ("body", "header", "status"),
    [
        _case("missing-signature", GOOD, None, 400),
        _case("empty-signature", GOOD, "", 400),
        _case("unparseable-signature", GOOD, "nonsense", 400),
        _case("no-v1-scheme", GOOD, sign(GOOD, SECRET).replace("v1=", "v0="), 400),
        _case("wrong-secret", GOOD, sign(GOOD, "whsec_someone_else"), 400),
        _case("tampered-body", GOOD.replace(b"\"amount\": 100", b"\"amount\": 999"),
              sign(GOOD, SECRET), 400),
        _case("stale-timestamp", GOOD, sign(GOOD, SECRET, NOW - 301), 400),
        _case("malformed-json", b"{\"id\": \"evt_1\", \"type\":",
              sign(b"{\"id\": \"evt_1\", \"type\":", SECRET), 400),
        _case("json-array", b"[1, 2]", sign(b"[1, 2]", SECRET), 400),
        _case("json-string", b"\"charge.refunded\"", sign(b"\"charge.refunded\"", SECRET), 400),
        _case("object-without-type", b"{\"id\": \"evt_1\"}", sign(b"{\"id\": \"evt_1\"}", SECRET),
              400),
        _case("not-utf8", b"\xff\xfe{}", None, 400),
    ],
)
async def test_bad_input_gets_4xx_and_produces_nothing(
    connector: Connector, settings: Settings, body: bytes, header: str | None, status: int
) -> None:
    connection_id = await add_connection(connector)
    headers = {} if header is None else {"Stripe-Signature": header}
    got, answer = await connector.post_webhook(connection_id, body, headers)
    assert got == status
    assert "error" in answer
    await assert_nothing_produced(settings)


async def test_non_utf8_body_with_a_valid_signature_is_refused(
    connector: Connector, settings: Settings
) -> None:
    connection_id = await add_connection(connector)
    body = b"\xff\xfe{}"
    t = int(time.time())
    import hashlib
    import hmac

    mac = hmac.new(SECRET.encode(), b"%d." % t + body, hashlib.sha256).hexdigest()
    status, _ = await connector.post_webhook(connection_id, body,
                                             {"Stripe-Signature": f"t={t},v1={mac}"})
    assert status == 400
    await assert_nothing_produced(settings)


async def test_oversized_body_is_refused_on_content_length(
    connector: Connector, settings: Settings
) -> None:
    connection_id = await add_connection(connector)
    event = json.loads(GOOD)
    event["data"]["object"]["metadata"] = {"pad": "x" * (1 << 20)}
    body = json.dumps(event).encode()
    status, answer = await connector.post_webhook(connection_id, body,
                                                  {"Stripe-Signature": sign(body, SECRET)})
    assert status == 413
    assert answer == {"error": "request body exceeds 1 MiB"}
    await assert_nothing_produced(settings)


async def test_oversized_chunked_body_is_refused_while_reading(
    connector: Connector, settings: Settings
) -> None:
    """No Content-Length to trust: the read itself stops at the cap."""
    connection_id = await add_connection(connector)
    chunk = b"x" * 65536
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < 4 << 20:  # 4 MiB offered; the server must stop long before
            sent += len(chunk)
            yield chunk

    url = f"{connector.url}/webhooks/stripe/{connection_id}"
    async with connector.http.post(url, data=endless(),
                                   headers={"Stripe-Signature": sign(b"", SECRET)}) as resp:
        assert resp.status == 413
    await assert_nothing_produced(settings)


@pytest.mark.parametrize("connection_id", ["conn_0123456789abcdef01234567", "nope", "conn_*"])
async def test_unknown_connection_is_404_like_any_unknown_path(
    connector: Connector, settings: Settings, connection_id: str
) -> None:
    await add_connection(connector)  # another account exists; it must not show
    status, answer = await connector.post_webhook(
        connection_id, GOOD, {"Stripe-Signature": sign(GOOD, SECRET)})
    assert (status, answer) == (404, {"error": "not found"})
    unknown_path = await connector.request("POST", f"/webhooks/strype/{connection_id}", data=GOOD)
    assert unknown_path == (status, answer)
    await assert_nothing_produced(settings)


async def test_event_types_not_used_get_2xx_and_are_dropped(
    connector: Connector, settings: Settings
) -> None:
    connection_id = await add_connection(connector)
    body = (FIXTURES / "object.event.json").read_bytes()  # a plan.created event
    status, answer = await connector.post_webhook(connection_id, body,
                                                  {"Stripe-Signature": sign(body, SECRET)})
    assert (status, answer) == (200, {"received": True, "ignored": True})
    await assert_nothing_produced(settings)


async def test_secret_rotation(connector: Connector, settings: Settings) -> None:
    """Stripe signs with old and new secrets during a roll; both stored secrets verify."""
    connection_id = await add_connection(connector, secret=OLD_SECRET)
    body = GOOD
    # Stripe rolled the secret: the header carries a v1 per secret, ours matches one.
    status, _ = await connector.post_webhook(
        connection_id, body, {"Stripe-Signature": sign(body, [SECRET, OLD_SECRET])})
    assert status == 200
    # We learn the new secret; until the old one ages out both verify on their own.
    assert await connector.store.add_webhook_secret(connection_id, SECRET)
    for secret in (SECRET, OLD_SECRET):
        status, _ = await connector.post_webhook(
            connection_id, body, {"Stripe-Signature": sign(body, secret)})
        assert status == 200
    status, _ = await connector.post_webhook(
        connection_id, body, {"Stripe-Signature": sign(body, "whsec_never_ours")})
    assert status == 400
    assert len(await read_events(settings, expect=3)) == 3


async def test_health_metrics_and_one_summary_line_without_secrets(
    connector: Connector, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    connection_id = await add_connection(connector)
    header = sign(GOOD, SECRET)
    assert (await connector.post_webhook(connection_id, GOOD, {"Stripe-Signature": header}))[0] \
        == 200
    assert (await connector.post_webhook(connection_id, GOOD, {}))[0] == 400

    status, health = await connector.request("GET", "/healthz")
    assert (status, health) == (200, {"redis": "ok", "kafka": "ok", "producer": "connected",
                                     "connections": "loaded"})

    async with connector.http.get(f"{connector.admin_url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert ('segments_webhooks_received_total{event_type="charge.refunded",outcome="published"}'
            " 1.0") in text
    assert 'segments_webhooks_rejected_total{reason="missing_signature"} 1.0' in text
    assert "segments_webhook_publish_duration_seconds_count 1.0" in text
    assert "segments_connector_http_server_errors_total" in text

    lines = [dict(record_fields(r)) for r in caplog.records
             if r.name == "connectors.server.access"]
    webhook_lines = [ln for ln in lines if ln["route"].startswith("/webhooks/")]
    assert len(webhook_lines) == 2  # one per request
    accepted, refused = webhook_lines
    assert accepted["method"] == "POST"
    assert accepted["status"] == 200
    assert accepted["event_type"] == "charge.refunded"
    assert accepted["event_id"] == json.loads(GOOD)["id"]
    assert isinstance(accepted["ms"], float)
    assert (refused["status"], refused["rejected"]) == (400, "missing_signature")
    signature_value = header.split("v1=")[1]
    assert signature_value not in caplog.text
    assert SECRET not in caplog.text
