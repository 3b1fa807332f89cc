"""Every route of the connection API and the query API, for every kind of caller, on the
real servers (real Kafka, Redis and the Stripe emulator).

Callers: no token, malformed ones, a token signed with another key, an `alg: none`
token, an expired one, a token for another account, one for the right account, the
admin's. Asserted: the status, `WWW-Authenticate: Bearer` on every 401, and that no
answer carries another account's data. Also: which routes each connector port serves,
and that the live feed hands a stream only its accounts' changes, at the source.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from redis.asyncio import Redis

from common.settings import Settings
from serving.change_feed import Subscription
from serving.server import ApiProcess
from tests.conftest import TEST_SECRET_KEY
from tests.connector_harness import Connector, running_connector
from tests.localstripe_server import running_localstripe
from tests.read_model_harness import Feeder, change, feeder, rule_doc
from tests.tokens import TEST_AUTH_SECRET, token
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration

API_KEY = "sk_test_segments_matrix_0123456789"
OTHER_SECRET = "another-deployments-secret-" + "x" * 24


def _auth(raw: str) -> dict[str, str]:
    return {"Authorization": raw}


def callers() -> dict[str, dict[str, str]]:
    """Headers of every kind of caller; "right" is acme's, "other" is globex's."""
    none_alg = jwt.encode({"exp": int(time.time()) + 600, "accounts": ["acme"]}, None,
                          algorithm="none")
    return {
        "none": {},
        "malformed": _auth("Bearer not.a.jwt"),
        "not bearer": _auth("Basic YWRtaW46YWRtaW4="),
        "empty bearer": _auth("Bearer "),
        "wrong key": _auth("Bearer " + token("acme", secret=OTHER_SECRET)),
        "alg none": _auth("Bearer " + none_alg),
        "expired": _auth("Bearer " + token("acme", ttl_s=-3600)),
        "other": _auth("Bearer " + token("globex")),
        "right": _auth("Bearer " + token("acme")),
        "admin": _auth("Bearer " + token(admin=True)),
    }


UNAUTHENTICATED = ("none", "malformed", "not bearer", "empty bearer", "wrong key", "alg none",
                   "expired")


async def call(http: aiohttp.ClientSession, method: str, url: str,
               headers: dict[str, str], **kw: Any) -> tuple[int, dict[str, str], bytes]:
    async with http.request(method, url, headers=headers, **kw) as resp:
        if resp.content_type == "text/event-stream":
            body = await asyncio.wait_for(resp.content.readline(), 10)  # the stream opened
        else:
            body = await resp.read()
        return resp.status, dict(resp.headers), body


def check_401(status: int, headers: dict[str, str], body: bytes, where: str) -> list[str]:
    problems = []
    if status != 401:
        problems.append(f"{where}: {status}, expected 401")
    elif not headers.get("WWW-Authenticate", "").startswith("Bearer"):
        problems.append(f"{where}: 401 without WWW-Authenticate: Bearer")
    elif "error" not in orjson.loads(body):
        problems.append(f"{where}: 401 without a JSON error")
    return problems


# -- query API --------------------------------------------------------------------------

@pytest.fixture
async def served(settings: Settings, redis: Redis) -> AsyncIterator[tuple[ApiProcess, Feeder]]:
    async with feeder(settings) as f:
        await f.rule("acme", "vip", rule_doc("acme", "vip", name="Acme VIPs"))
        await f.rule("globex", "vip", rule_doc("globex", "vip", name="Globex VIPs"))
        await f.changes([change("acme", "vip", "ann@acme.example"),
                         change("globex", "vip", "gina@globex.example")])
        async with ApiProcess(settings, port=0) as api, aiohttp.ClientSession() as http:
            admin = callers()["admin"]

            async def both_there() -> bool:
                status, _, body = await call(http, "GET", api.url + "/segments", admin)
                return status == 200 and len(orjson.loads(body)["segments"]) == 2

            await async_wait_for(both_there, 30, what="both accounts' segments served")
            yield api, f


#: (route, acme's path, expected status for "right" and "other")
QUERY_ROUTES = [
    ("/accounts/{account_id}/segments", "/accounts/acme/segments", 200, 404),
    ("/accounts/{account_id}/segments/{segment_id}", "/accounts/acme/segments/vip", 200, 404),
    ("/accounts/{account_id}/segments/{segment_id}/members",
     "/accounts/acme/segments/vip/members", 200, 404),
    ("/accounts/{account_id}/contacts/{email}/segments",
     "/accounts/acme/contacts/ann@acme.example/segments", 200, 404),
    ("/events", "/events?account_id=acme", 200, 404),
    ("/openapi.json (no account's data)", "/openapi.json", 200, 200),
    ("/segments (admin only)", "/segments", 403, 403),
]


async def test_query_api_matrix(served: tuple[ApiProcess, Feeder]) -> None:
    api, _ = served
    problems: list[str] = []
    async with aiohttp.ClientSession() as http:
        for route, path, right, other in QUERY_ROUTES:
            for kind, headers in callers().items():
                where = f"GET {route} as {kind}"
                status, got, body = await call(http, "GET", api.url + path, headers)
                if kind in UNAUTHENTICATED:
                    problems += check_401(status, got, body, where)
                    continue
                want = {"right": right, "other": other, "admin": 200}[kind]
                if status != want:
                    problems.append(f"{where}: {status}, expected {want}")
                if kind == "other" and (b"ann@" in body or b"Acme VIPs" in body):
                    problems.append(f"{where}: acme's data in the answer")
                if kind == "right" and b"globex" in body:
                    problems.append(f"{where}: globex's data in the answer")
            # Another account's resource and a resource that does not exist look alike.
            missing = path.replace("acme", "no-such-account")
            if "{account_id}" in route:
                status, _, _ = await call(http, "GET", api.url + missing, callers()["other"])
                if status != 404:
                    problems.append(f"GET {route} of a missing account as other: {status}")
        for path in ("/healthz", "/metrics", "/", "/static/app.js"):
            status, _, _ = await call(http, "GET", api.url + path, {})
            if status != 200:
                problems.append(f"GET {path} without a token: {status}, expected 200")
        status, got, body = await call(http, "GET", api.url + "/no/such/route", {})
        problems += check_401(status, got, body, "GET an unknown route without a token")
    assert problems == []


async def test_rule_writes_matrix(served: tuple[ApiProcess, Feeder]) -> None:
    """PUT and DELETE of a segment's rule for every kind of caller: only acme's token and
    the admin's write acme's rules; another account's is answered as a missing one."""
    api, _ = served
    rule = {"name": "matrix", "filter": "refunded", "conditions": []}
    problems: list[str] = []
    async with aiohttp.ClientSession() as http:
        for kind, headers in callers().items():
            url = f"{api.url}/accounts/acme/segments/m-{kind.replace(' ', '-')}"
            put = await call(http, "PUT", url, headers, json=rule)
            delete = await call(http, "DELETE", url, headers)
            for method, (status, got, body) in (("PUT", put), ("DELETE", delete)):
                where = f"{method} /accounts/{{account_id}}/segments/{{segment_id}} as {kind}"
                if kind in UNAUTHENTICATED:
                    problems += check_401(status, got, body, where)
                    continue
                wanted = {"PUT": {"right": 201, "admin": 201, "other": 404},
                          "DELETE": {"right": 204, "admin": 204, "other": 404}}
                want = wanted[method][kind]
                if status != want:
                    problems.append(f"{where}: {status}, expected {want}: {body[:200]!r}")
        # acme's existing segment cannot be deleted with globex's token.
        status, _, _ = await call(http, "DELETE", api.url + "/accounts/acme/segments/vip",
                                  callers()["other"])
        if status != 404:
            problems.append(f"DELETE acme's vip as other: {status}, expected 404")
        status, _, _ = await call(http, "GET", api.url + "/accounts/acme/segments/vip",
                                  callers()["right"])
        if status != 200:
            problems.append(f"acme's vip after globex's DELETE: {status}")
    assert problems == []


async def test_feed_filters_per_subscriber_at_the_source(
    served: tuple[ApiProcess, Feeder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """acme's stream is never handed globex's changes, not even to drop them; the
    admin's stream gets both (so globex's changes were there to be handed out)."""
    api, f = served
    pushed: dict[int, list[str]] = {}
    original = Subscription.push

    def recording_push(self: Subscription, event: dict[str, Any]) -> None:
        pushed.setdefault(id(self), []).append(str(event.get("account_id")))
        original(self, event)

    monkeypatch.setattr(Subscription, "push", recording_push)
    streams: dict[str, list[dict[str, Any]]] = {"acme": [], "admin": []}

    async def follow(name: str, headers: dict[str, str]) -> None:
        async with aiohttp.ClientSession() as http, http.get(
                api.url + "/events", headers=headers) as resp:
            assert resp.status == 200
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("data: "):
                    streams[name].append(orjson.loads(line[6:]))

    tasks = [asyncio.create_task(follow("acme", callers()["right"])),
             asyncio.create_task(follow("admin", callers()["admin"]))]
    try:
        async def subscribed() -> bool:
            return len(api.feed._subscriptions) == 2

        await async_wait_for(subscribed, 10, what="both streams subscribed")
        acme_subscription = next(s for s in api.feed._subscriptions if s.accounts is not None)
        await f.changes([change("globex", "vip", f"g{i}@globex.example") for i in range(20)])
        await f.changes([change("acme", "vip", "last@acme.example")])

        def seen(name: str, email: str) -> bool:
            return any(e.get("email") == email for e in streams[name])

        async def acme_saw() -> bool:
            return seen("acme", "last@acme.example")

        async def admin_saw() -> bool:
            return seen("admin", "last@acme.example") and seen("admin", "g19@globex.example")

        await async_wait_for(acme_saw, 30, what="acme's change on acme's stream")
        await async_wait_for(admin_saw, 30, what="both accounts' changes on the admin's stream")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert {e["account_id"] for e in streams["acme"]} == {"acme"}
    assert set(pushed[id(acme_subscription)]) == {"acme"}  # filtered before the queue
    admin_pushed = [v for k, v in pushed.items() if k != id(acme_subscription)]
    assert admin_pushed
    assert admin_pushed[0].count("globex") >= 20


# -- connection API ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def localstripe_url() -> Iterator[str]:
    with running_localstripe() as base:
        yield base


@pytest.fixture
async def connector(settings: Settings, localstripe_url: str) -> AsyncIterator[Connector]:
    emulated = replace(settings, stripe_api_base=localstripe_url)
    async with running_connector(emulated, registration="localstripe") as running:
        yield running


async def _stored(connector: Connector, account: str) -> str:
    connection_id = f"conn_{uuid.uuid4().hex[:24]}"
    await connector.store.create(connection_id=connection_id, account_id=account,
                                 api_key=API_KEY, webhook_secret="whsec_matrix_0123456789",
                                 registration="manual", webhook_endpoint_id=None)
    return connection_id


async def test_connection_api_matrix(connector: Connector) -> None:
    problems: list[str] = []
    body = {"account_id": "acme", "api_key": API_KEY,
            "webhook_secret": "whsec_matrix_0123456789"}
    globex = await _stored(connector, "globex")
    http, admin_url = connector.http, connector.admin_url
    for kind, headers in callers().items():
        acme = await _stored(connector, "acme")
        answers = {
            "POST /connections": await call(http, "POST", admin_url + "/connections", headers,
                                            json=body),
            "GET /connections/{id}": await call(http, "GET", f"{admin_url}/connections/{acme}",
                                                headers),
            "DELETE /connections/{id}": await call(http, "DELETE",
                                                   f"{admin_url}/connections/{acme}", headers),
        }
        for route, (status, got, answer) in answers.items():
            where = f"{route} as {kind}"
            if kind in UNAUTHENTICATED:
                problems += check_401(status, got, answer, where)
                continue
            want = {"POST /connections": {"right": 201, "admin": 201, "other": 403},
                    }.get(route, {"right": 200, "admin": 200, "other": 404})[kind]
            if status != want:
                problems.append(f"{where}: {status}, expected {want}: {answer[:200]!r}")
            if kind == "other" and route != "POST /connections":
                _, _, unknown = await call(http, route.split()[0],
                                           f"{admin_url}/connections/conn_nope", headers)
                if answer != unknown:
                    problems.append(f"{where}: answer differs from an unknown id's")
        still_there = await connector.store.get(acme) is not None
        if still_there != (kind not in ("right", "admin")):
            problems.append(f"DELETE as {kind}: connection there afterwards: {still_there}")
    assert await connector.store.get(globex) is not None
    # The right account's token, a body that is not declared JSON: 415, nothing created.
    before = len(await connector.store.list_ids())
    status, _, _ = await call(http, "POST", admin_url + "/connections",
                              {**callers()["right"], "Content-Type": "text/plain"},
                              data=orjson.dumps(body))
    if status != 415:
        problems.append(f"POST /connections as text/plain: {status}, expected 415")
    if len(await connector.store.list_ids()) != before:
        problems.append("POST /connections as text/plain created a connection")
    assert problems == []


async def test_each_port_serves_only_its_routes(connector: Connector) -> None:
    http, admin = connector.http, callers()["admin"]
    acme = await _stored(connector, "acme")
    for method, path in [("POST", "/connections"), ("GET", f"/connections/{acme}"),
                         ("DELETE", f"/connections/{acme}"), ("GET", "/healthz"),
                         ("GET", "/metrics")]:
        status, _, _ = await call(http, method, connector.url + path, admin, json={})
        assert status == 404, f"{method} {path} on the public port: {status}"
    assert await connector.store.get(acme) is not None
    status, _, _ = await call(http, "POST", f"{connector.admin_url}/webhooks/stripe/{acme}",
                              admin, data=b"{}")
    assert status == 404  # webhooks only on the public port
    for path in ("/healthz", "/metrics"):
        status, _, _ = await call(http, "GET", connector.admin_url + path, {})
        assert status == 200, path
    # The webhook route needs no token (Stripe signs instead): a bad signature is a 400.
    status, _, _ = await call(http, "POST", f"{connector.url}/webhooks/stripe/{acme}",
                              {"Stripe-Signature": "t=1,v1=00"}, data=b"{}")
    assert status == 400
    assert TEST_AUTH_SECRET not in repr(connector.settings)


@pytest.mark.parametrize("command", [["api", "--port", "0", "--no-read-model"],
                                     ["connector", "--port", "0", "--admin-port", "0"]])
def test_production_refuses_to_start_without_token_keys(command: list[str],
                                                        tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SEGMENTS_AUTH_SECRET", "SEGMENTS_AUTH_JWKS")}
    env.update(SEGMENTS_ENV="production", SEGMENTS_SECRET_KEY=TEST_SECRET_KEY,
               SEGMENTS_STACK_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "segments.cli", *command], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "SEGMENTS_AUTH_SECRET" in result.stdout + result.stderr
    assert not list(tmp_path.iterdir())  # no development secret made
