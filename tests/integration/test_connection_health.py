"""Connection health (`connectors.health`) through `GET /connections/{id}` and `/metrics`.

stripe-mock shows what it can: a key it accepts and an endpoint it retrieves (enabled,
or disabled once its fixture says so). It accepts every key, so a revoked key, a lost
permission and Stripe's own failures come from `FaultyStripe`, a small server speaking
Stripe's error format whose answers the test switches while the connector runs; the
official library still parses them into its own errors.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from common.settings import Settings
from connectors.server import CONNECTIONS
from tests.connector_harness import Connector, running_connector
from tests.integration.test_connections_stripe_api import (
    _bundled_fixtures,
    _missing,
    _stripe_mock_binary,
    running_stripe_mock,
)
from tests.localstripe_server import free_port
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration

API_KEY = "sk_test_Health0123456789"


def gauge(text: str, status: str) -> float:
    found = re.search(rf'^segments_connections\{{status="{status}"\}} (\S+)$', text, re.M)
    assert found, f"no segments_connections series for {status}"
    return float(found.group(1))


async def metrics(connector: Connector) -> str:
    async with connector.http.get(f"{connector.admin_url}/metrics") as resp:
        return await resp.text()


async def connect(connector: Connector) -> str:
    status, created = await connector.request(
        "POST", "/connections", json={"account_id": "acme", "api_key": API_KEY})
    assert status == 201, created
    return str(created["id"])


async def shown(connector: Connector, connection_id: str) -> dict[str, Any]:
    status, doc = await connector.request("GET", f"/connections/{connection_id}")
    assert status == 200, doc
    return dict(doc)


# --- stripe-mock ------------------------------------------------------------------------


@pytest.mark.parametrize(("endpoint_status", "expected"),
                         [("enabled", "active"), ("disabled", "webhook_disabled")])
async def test_endpoint_status_from_stripe_mock(settings: Settings, tmp_path: Path,
                                                endpoint_status: str, expected: str) -> None:
    binary, bundled = _stripe_mock_binary(), _bundled_fixtures()
    if binary is None or bundled is None:
        _missing("stripe-mock (and its fixtures3.json in the Go module cache)")
    fixtures = json.loads(bundled.read_text())
    endpoint = fixtures["resources"]["webhook_endpoint"]
    endpoint["secret"] = "whsec_from_stripe_mock"
    endpoint["status"] = endpoint_status
    patched = tmp_path / "fixtures3.json"
    patched.write_text(json.dumps(fixtures))
    with running_stripe_mock(binary, patched) as url:
        async with running_connector(replace(settings, stripe_api_base=url),
                                     registration="stripe") as connector:
            connection_id = await connect(connector)
            before = await shown(connector, connection_id)
            assert before["status"] == "active"  # nothing checked yet
            assert before["status_since"] == before["created_at"]
            found = await connector.app[CONNECTIONS].health.run_once()
            assert found == {connection_id: expected}
            doc = await shown(connector, connection_id)
            assert doc["status"] == expected
            assert gauge(await metrics(connector), expected) == 1


# --- a server that fails the way Stripe does ---------------------------------------------


class FaultyStripe:
    """Events, customers and webhook endpoints, with faults switched by the test."""

    def __init__(self) -> None:
        #: path -> HTTP status to answer (401, 403, 500); absent: success.
        self.fail: dict[str, int] = {}
        self.endpoint_status = "enabled"
        #: Fail the backfill's listings (they filter by `created`), not the key check.
        self.fail_backfill = False

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        key = "/v1/webhook_endpoints/*" if path.startswith("/v1/webhook_endpoints/") else path
        code = self.fail.get(key)
        if code in (401, 403):
            return web.json_response({"error": {
                "type": "invalid_request_error",
                "message": f"Stripe says no to {API_KEY[:8]}****6789"}}, status=code)
        if code is not None:
            return web.json_response({"error": {"type": "api_error", "message": "oops"}},
                                     status=code)
        if path == "/v1/events" and self.fail_backfill and "created[gte]" in request.query:
            return web.json_response({"error": {"type": "invalid_request_error",
                                                "message": "boom"}}, status=400)
        if path == "/v1/webhook_endpoints" and request.method == "POST":
            return web.json_response({"id": "we_faulty_1", "object": "webhook_endpoint",
                                      "secret": "whsec_faulty", "status": "enabled"})
        if path.startswith("/v1/webhook_endpoints/"):
            return web.json_response({"id": path.rsplit("/", 1)[1],
                                      "object": "webhook_endpoint",
                                      "status": self.endpoint_status})
        return web.json_response({"object": "list", "data": [], "has_more": False,
                                  "url": path})


@pytest.fixture
async def faulty() -> AsyncIterator[tuple[FaultyStripe, str]]:
    fake = FaultyStripe()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_every_status_its_reason_one_log_line_per_change_and_the_gauge(
    settings: Settings, faulty: tuple[FaultyStripe, str], caplog: pytest.LogCaptureFixture
) -> None:
    fake, url = faulty
    caplog.set_level(logging.INFO, logger="connectors.health")
    async with running_connector(replace(settings, stripe_api_base=url),
                                 registration="stripe") as connector:
        health = connector.app[CONNECTIONS].health
        connection_id = await connect(connector)
        steps: list[tuple[dict[str, int], str, str | None, str]] = [
            ({}, "enabled", "active", None),
            ({"/v1/events": 401}, "enabled", "key_revoked", "rejected by Stripe"),
            ({"/v1/events": 401}, "enabled", "key_revoked", "rejected by Stripe"),
            # Stripe erring (500) says nothing about the key: the status stays.
            ({"/v1/events": 500}, "enabled", "key_revoked", "rejected by Stripe"),
            ({"/v1/customers": 403}, "enabled", "permission_missing", "Customers: read"),
            ({"/v1/webhook_endpoints/*": 403}, "enabled", "permission_missing",
             "Webhook Endpoints"),
            ({}, "disabled", "webhook_disabled", "disabled the webhook endpoint"),
            ({}, "enabled", "active", None),
        ]
        before: tuple[str, float] | None = None
        for fail, endpoint_status, status, reason in steps:
            fake.fail, fake.endpoint_status = fail, endpoint_status
            assert await health.run_once() == {connection_id: status}, (fail, status)
            doc = await shown(connector, connection_id)
            assert doc["status"] == status
            if reason is None:
                assert doc["status_reason"] is None
            else:
                assert reason in doc["status_reason"]
            assert "6789" not in str(doc)  # Stripe's words (and key) are never passed on
            text = await metrics(connector)
            assert gauge(text, status) == 1
            assert sum(gauge(text, s) for s in
                       ("active", "key_revoked", "permission_missing", "webhook_disabled",
                        "backfill_failed")) == 1
            if before is not None and before[0] == status:
                assert doc["status_since"] == before[1]  # unchanged while the status holds
            elif before is not None:
                assert doc["status_since"] > before[1]
            before = (status, doc["status_since"])
        changes = [r.getMessage() for r in caplog.records if "status" in r.getMessage()]
        assert changes == [
            f"connection {connection_id} (account acme): status active -> key_revoked: "
            "the API key was rejected by Stripe (invalid, expired or revoked)",
            f"connection {connection_id} (account acme): status key_revoked -> "
            "permission_missing: the API key lacks a permission this integration needs: "
            "Customers: read (contact emails); grant it on the restricted key or use a "
            "secret key",
            f"connection {connection_id} (account acme): status permission_missing -> "
            "webhook_disabled: Stripe disabled the webhook endpoint (usually after days of "
            "failed deliveries); enable it in the Dashboard or reconnect",
            f"connection {connection_id} (account acme): status webhook_disabled -> active",
        ]
        assert all(API_KEY not in r.getMessage() for r in caplog.records)
        status, _ = await connector.request("DELETE", f"/connections/{connection_id}")
        assert status == 200
        assert await health.run_once() == {}
        assert gauge(await metrics(connector), "active") == 0


async def test_a_failed_backfill_is_reported_at_once(
    settings: Settings, faulty: tuple[FaultyStripe, str]
) -> None:
    fake, url = faulty
    fake.fail_backfill = True
    async with running_connector(replace(settings, stripe_api_base=url),
                                 registration="stripe",
                                 start_backfill=True) as connector:
        connection_id = await connect(connector)

        async def failed() -> bool:
            return (await shown(connector, connection_id))["status"] == "backfill_failed"

        await async_wait_for(failed, 30, what="backfill_failed")
        doc = await shown(connector, connection_id)
        assert "InvalidRequestError" in doc["status_reason"]
        assert gauge(await metrics(connector), "backfill_failed") == 1


async def test_the_checker_runs_by_itself(
    settings: Settings, faulty: tuple[FaultyStripe, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = faulty
    monkeypatch.setenv("SEGMENTS_HEALTH_INTERVAL_S", "0.2")
    async with running_connector(replace(settings, stripe_api_base=url),
                                 registration="stripe", check_health=True) as connector:
        connection_id = await connect(connector)
        fake.fail["/v1/events"] = 401

        async def revoked() -> bool:
            return (await shown(connector, connection_id))["status"] == "key_revoked"

        await async_wait_for(revoked, 30, what="key_revoked from the periodic checker")
