"""The Stripe calls localstripe cannot answer: endpoint registration and key errors.

`/v1/webhook_endpoints` is exercised against Stripe's own `stripe-mock` (installed by
`scripts/bootstrap.sh`; skipped when absent on a laptop, a failure under CI=true).
An invalid or under-privileged key cannot be produced by either emulator (both accept
any test key), so those answers come from a small in-process server that speaks
Stripe's error format; the official library still parses them into its own errors.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import pytest
from aiohttp import web

from common.settings import Settings
from common.stripe_event_types import NEEDED_EVENT_TYPES
from tests.conftest import IN_CI
from tests.connector_harness import Connector, running_connector
from tests.localstripe_server import free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

API_KEY = "sk_test_StripeMock0123456789"


def _stripe_mock_binary() -> str | None:
    found = shutil.which("stripe-mock")
    if found:
        return found
    gopath = os.environ.get("GOPATH") or str(Path.home() / "go")
    candidate = Path(gopath) / "bin" / "stripe-mock"
    return str(candidate) if candidate.exists() else None


def _bundled_fixtures() -> Path | None:
    """stripe-mock's own fixtures3.json, from the Go module cache `go install` filled."""
    cache = os.environ.get("GOMODCACHE") or str(
        Path(os.environ.get("GOPATH") or Path.home() / "go") / "pkg" / "mod")
    found = sorted(Path(cache).glob("github.com/stripe/stripe-mock@*/embedded/openapi/"
                                    "fixtures3.json"))
    return found[-1] if found else None


@contextmanager
def running_stripe_mock(binary: str, fixtures: Path | None = None) -> Iterator[str]:
    port = free_port()
    argv = [binary, "-http-addr", f"127.0.0.1:{port}"]
    if fixtures is not None:
        argv += ["-fixtures", str(fixtures)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

        def listening() -> bool:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"stripe-mock exited: {log.read().decode()[-1000:]}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        try:
            wait_for(listening, 30, what="stripe-mock to listen")
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


def _missing(what: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{what}: CI=true needs it (scripts/bootstrap.sh installs it)")
    pytest.skip(f"{what} (scripts/bootstrap.sh installs it)")


@pytest.fixture(scope="module")
def stripe_mock() -> str:
    binary = _stripe_mock_binary()
    if binary is None:
        _missing("stripe-mock is not installed")
    return binary


async def test_endpoint_registration_is_validated_by_stripes_openapi_spec(
    settings: Settings, stripe_mock: str
) -> None:
    """stripe-mock validates the create call (url, enabled_events enum) like Stripe.

    Its bundled webhook_endpoint fixture carries no `secret` (Stripe sends it only on
    create), so the connector must refuse the connection and store nothing.
    """
    with running_stripe_mock(stripe_mock) as url:
        async with running_connector(replace(settings, stripe_api_base=url),
                                     registration="stripe") as connector:
            status, answer = await connector.request(
                "POST", "/connections", json={"account_id": "acme", "api_key": API_KEY})
            assert status == 502, answer
            assert "no signing secret" in answer["error"]["reason"]
            assert await connector.store.list_ids() == []


async def test_webhook_endpoint_is_registered_and_deleted_through_the_library(
    settings: Settings, stripe_mock: str, tmp_path: Path
) -> None:
    bundled = _bundled_fixtures()
    if bundled is None:
        _missing("stripe-mock's fixtures3.json is not in the Go module cache")
    fixtures = json.loads(bundled.read_text())
    fixtures["resources"]["webhook_endpoint"]["secret"] = "whsec_from_stripe_mock"
    patched = tmp_path / "fixtures3.json"
    patched.write_text(json.dumps(fixtures))
    with running_stripe_mock(stripe_mock, patched) as url:
        async with running_connector(replace(settings, stripe_api_base=url),
                                     registration="stripe") as connector:
            status, created = await connector.request(
                "POST", "/connections", json={"account_id": "acme", "api_key": API_KEY})
            assert status == 201, created
            assert created["webhook_endpoint_id"].startswith("we_")
            assert "whsec_from_stripe_mock" not in str(created)
            found = await connector.store.webhook_secrets(created["id"])
            assert found is not None
            assert found[0].registration == "stripe"
            assert found[1] == ("whsec_from_stripe_mock",)
            status, shown = await connector.request("GET", f"/connections/{created['id']}")
            assert (status, shown["webhook_endpoint_id"]) == (200, created["webhook_endpoint_id"])
            status, deleted = await connector.request("DELETE", f"/connections/{created['id']}")
            assert (status, deleted["webhook_endpoint"]) == (200, "deleted")
            assert await connector.store.list_ids() == []


# --- Stripe's error answers, from a server that speaks its format ---------------------


class FakeStripe:
    """Answers Stripe's list and create calls with the configured status per path."""

    def __init__(self) -> None:
        self.status: dict[str, int] = {}
        self.requests: list[tuple[str, str, dict[str, Any]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        form = dict(await request.post()) if request.method == "POST" else {}
        self.requests.append((request.method, request.path, form))
        code = self.status.get(request.path, 200)
        if code == 401:
            return web.json_response({"error": {
                "type": "invalid_request_error",
                "message": "Invalid API Key provided: sk_test_****6789"}}, status=401)
        if code == 403:
            return web.json_response({"error": {
                "type": "invalid_request_error",
                "message": "The provided key 'rk_test_***6789' does not have the required "
                           "permissions for this endpoint."}}, status=403)
        if request.path == "/v1/webhook_endpoints":
            return web.json_response({"id": "we_fake_1", "object": "webhook_endpoint",
                                      "secret": "whsec_fake_secret", "url": form.get("url")})
        return web.json_response({"object": "list", "data": [], "has_more": False,
                                  "url": request.path})


@pytest.fixture
async def fake_stripe() -> AsyncIterator[tuple[FakeStripe, str]]:
    fake = FakeStripe()
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


@pytest.fixture
async def fake_connector(
    settings: Settings, fake_stripe: tuple[FakeStripe, str]
) -> AsyncIterator[tuple[Connector, FakeStripe]]:
    fake, url = fake_stripe
    async with running_connector(replace(settings, stripe_api_base=url),
                                 registration="stripe") as connector:
        yield connector, fake


@pytest.mark.parametrize(
    ("failing", "code", "expected"),
    [
        ("/v1/events", 401, "the API key was rejected by Stripe"),
        ("/v1/events", 403, "Events: read"),
        ("/v1/customers", 403, "Customers: read"),
        ("/v1/webhook_endpoints", 403, "Webhook Endpoints: write"),
    ],
)
async def test_rejected_keys_get_a_clear_message_and_nothing_is_stored(
    fake_connector: tuple[Connector, FakeStripe], failing: str, code: int, expected: str
) -> None:
    connector, fake = fake_connector
    fake.status[failing] = code
    status, answer = await connector.request(
        "POST", "/connections", json={"account_id": "acme", "api_key": API_KEY})
    assert status == 400
    assert answer["error"]["field"] == "api_key"
    assert expected in answer["error"]["reason"]
    assert "6789" not in str(answer)  # Stripe's text (with a masked key) is not echoed
    assert await connector.store.list_ids() == []


async def test_endpoint_is_registered_for_exactly_the_needed_types(
    fake_connector: tuple[Connector, FakeStripe], settings: Settings
) -> None:
    connector, fake = fake_connector
    status, created = await connector.request(
        "POST", "/connections", json={"account_id": "acme", "api_key": API_KEY})
    assert status == 201
    posts = [r for r in fake.requests if r[:2] == ("POST", "/v1/webhook_endpoints")]
    assert len(posts) == 1
    assert posts[0][2]["url"] == f"{connector.settings.public_url}/webhooks/stripe/{created['id']}"
    # The library form-encodes the list as enabled_events[0], [1], ...
    enabled = {v for k, v in posts[0][2].items() if k.startswith("enabled_events")}
    assert enabled == NEEDED_EVENT_TYPES


async def test_stripe_unreachable_is_a_502_without_a_field(
    settings: Settings,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with running_connector(replace(settings, stripe_api_base=dead)) as connector:
        status, answer = await connector.request(
            "POST", "/connections", json={"account_id": "acme", "api_key": API_KEY})
    assert status == 502
    assert answer["error"]["field"] is None
    assert "could not be reached" in answer["error"]["reason"]
