"""`/connections`: connect a Stripe account, show it, disconnect it.

Served on the connector's internal port behind bearer tokens (`common.auth`): a token
for account A creates, reads and deletes only A's connections; another account's
connection is answered 404 exactly as an unknown one is.

Connecting checks the pasted key against Stripe, registers the webhook endpoint (unless
the caller registered one by hand and passes its secret), stores key and secret
encrypted, answers 201 with the connection id and starts the 30-day backfill in the
background. No response and no log line ever contains the key or the secret; errors
name the field and the reason, never the value.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError

from common.auth import principal
from common.ids import ID_RULE, valid_id
from common.settings import Settings
from common.windows import BACKFILL_DAYS
from connectors.backfill import BackfillJob, BackfillOptions, PublishedCallback, run_backfill
from connectors.errors import ConnectorError
from connectors.health import HealthChecker
from connectors.metrics import ConnectorMetrics
from connectors.purge import request_purge
from connectors.quotas import ConnectionQuotas, QuotaExceeded
from connectors.reconcile import SeenEvents
from connectors.sink import EventSink
from connectors.store import (
    Connection,
    ConnectionStore,
    ConnectionStoreUnavailable,
    new_connection_id,
)
from connectors.stripe_account import (
    Endpoint,
    RegistrationMode,
    StripeAccountError,
    check_key,
    delete_endpoint,
    register_endpoint,
    stripe_client,
)
from connectors.webhooks import LOG_FIELDS, NOT_FOUND, read_capped

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
KEY_PREFIXES = ("sk_test_", "sk_live_", "rk_test_", "rk_live_")
#: What Stripe secrets (and publishable keys) start with: never a valid account id.
SECRET_PREFIXES = ("sk_", "rk_", "pk_", "whsec_")
FIELDS = frozenset({"account_id", "api_key", "webhook_secret"})
STORE_UNAVAILABLE = "connection store unavailable (Kafka); retry later"


class ConnectRequestError(ConnectorError, ValueError):
    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class ConnectRequest:
    account_id: str
    api_key: str
    webhook_secret: str | None

    def __repr__(self) -> str:  # the key and secret must never reach a log
        return f"ConnectRequest(account_id={self.account_id!r}, api_key=<hidden>)"


def _secret_field(doc: dict[str, Any], name: str, prefixes: tuple[str, ...], hint: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise ConnectRequestError(name, "required, a non-empty string")
    if len(value) > 256 or any(c.isspace() for c in value):
        raise ConnectRequestError(name, "must be a single token of at most 256 characters")
    if not value.startswith(prefixes):
        raise ConnectRequestError(name, hint)
    return value


def parse_connect_request(body: bytes) -> ConnectRequest:
    """Validate the body of `POST /connections`; raises ConnectRequestError naming the field."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ConnectRequestError(None, "body must be a JSON object") from None
    if not isinstance(doc, dict):
        raise ConnectRequestError(None, "body must be a JSON object")
    unknown = sorted(set(doc) - FIELDS)
    if unknown:
        raise ConnectRequestError(unknown[0], "unknown field")
    account_id = doc.get("account_id")
    if not isinstance(account_id, str) or not valid_id(account_id):
        raise ConnectRequestError("account_id", f"required: {ID_RULE}")
    if account_id.startswith(SECRET_PREFIXES):
        # A key pasted into the wrong field would otherwise be stored, logged and put on
        # every topic in clear, as the account id.
        raise ConnectRequestError("account_id", "looks like a Stripe key or webhook secret; "
                                       "account_id is the Center account's id")
    api_key = doc.get("api_key")
    if isinstance(api_key, str) and api_key.startswith("pk_"):
        raise ConnectRequestError("api_key", "a publishable key cannot read account data; paste a "
                                    "secret (sk_) or restricted (rk_) key")
    key = _secret_field(doc, "api_key", KEY_PREFIXES,
                        "must be a Stripe secret (sk_test_/sk_live_) or restricted "
                        "(rk_test_/rk_live_) key")
    secret = None
    if doc.get("webhook_secret") is not None:
        secret = _secret_field(doc, "webhook_secret", ("whsec_",),
                               "must be a webhook signing secret starting with whsec_")
    return ConnectRequest(account_id, key, secret)


def _error(status: int, field: str | None, reason: str) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"error": {"field": field, "reason": reason}}),
        content_type="application/json",
    )


def _json(status: int, doc: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


def _log_if_failed(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("%s failed: %s", task.get_name(), type(exc).__name__)


class ConnectionsApi:
    """Handlers of `/connections`, and the backfill tasks they started."""

    def __init__(
        self,
        settings: Settings,
        store: ConnectionStore,
        sink: EventSink,
        metrics: ConnectorMetrics,
        *,
        registration: RegistrationMode = "stripe",
        start_backfill: bool = True,
        backfill_options: BackfillOptions | None = None,
        quotas: ConnectionQuotas | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sink = sink
        self.metrics = metrics
        self.registration = registration
        self.start_backfill = start_backfill
        #: None: `BackfillOptions.from_env()` when a backfill starts.
        self.backfill_options = backfill_options
        self.backfills: dict[str, asyncio.Task[Any]] = {}
        #: None: no limits (tests of other things); the servers always pass them.
        self.quotas = quotas
        self._resume: asyncio.Task[int] | None = None
        #: The gap repair's record of published events (set by the server), forgotten
        #: with the connection.
        self.seen: SeenEvents | None = None
        #: Connection health (`connectors.health`): the status `show` reports.
        self.health = HealthChecker(settings, store, metrics,
                                    backfill_running=lambda cid: cid in self.backfills)

    async def create(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return _error(415, None, "Content-Type must be application/json")
        body = await read_capped(request, MAX_REQUEST_BYTES)
        if body is None:
            return _error(413, None, "request body too large")
        try:
            req = parse_connect_request(body)
        except ConnectRequestError as exc:
            request[LOG_FIELDS] = {"invalid_field": exc.field}
            return _error(400, exc.field, exc.reason)
        if not principal(request).may(req.account_id):
            request[LOG_FIELDS] = {"refused": "account not in token"}
            return _error(403, "account_id", "the token does not allow this account")
        connection_id = new_connection_id()
        request[LOG_FIELDS] = {"connection_id": connection_id, "account_id": req.account_id}
        if self.quotas is not None:
            try:
                await self.quotas.reserve(req.account_id, connection_id)
            except QuotaExceeded as exc:
                request[LOG_FIELDS]["refused"] = "quota"
                answer = _error(429, None, exc.reason)
                answer.headers["Retry-After"] = str(exc.retry_after_s)
                return answer
        try:
            conn = await self._connect(connection_id, req)
        except StripeAccountError as exc:
            await self._release(req.account_id, connection_id)
            request[LOG_FIELDS]["stripe_error"] = type(exc).__name__
            return _error(exc.status, exc.field, exc.reason)
        except ConnectionStoreUnavailable:
            await self._release(req.account_id, connection_id)
            return _error(503, None, STORE_UNAVAILABLE)
        except BaseException:
            await self._release(req.account_id, connection_id)
            raise
        self.metrics.connections_created.inc()
        backfill = self._launch_backfill(conn, req.api_key)
        request[LOG_FIELDS]["backfill"] = backfill
        doc = {"id": conn.id, "account_id": conn.account_id, "status": conn.status,
               "backfill": backfill}
        if conn.webhook_endpoint_id:
            doc["webhook_endpoint_id"] = conn.webhook_endpoint_id
        return _json(201, doc)

    async def _release(self, account_id: str, connection_id: str) -> None:
        if self.quotas is not None:
            await self.quotas.release(account_id, connection_id)

    async def _connect(self, connection_id: str, req: ConnectRequest) -> Connection:
        async with stripe_client(self.settings, req.api_key) as client:
            await check_key(client)
            if req.webhook_secret is not None:
                endpoint = Endpoint("manual", None, req.webhook_secret)
            else:
                endpoint = await register_endpoint(
                    self.settings, client, connection_id, mode=self.registration
                )
            try:
                return await self.store.create(
                    connection_id=connection_id,
                    account_id=req.account_id,
                    api_key=req.api_key,
                    webhook_secret=endpoint.secret,
                    registration=endpoint.registration,
                    webhook_endpoint_id=endpoint.endpoint_id,
                )
            except Exception:
                # Do not leave an endpoint at Stripe that nothing can verify.
                if endpoint.registration == "stripe" and endpoint.endpoint_id:
                    await delete_endpoint(client, endpoint.endpoint_id)
                raise

    def _launch_backfill(self, conn: Connection, api_key: str) -> str:
        """Start `connectors.backfill.run_backfill` for a connection in the background."""
        if not self.start_backfill:
            return "not_started"
        if conn.id in self.backfills:
            return "running"
        # The connection is stored after its endpoint was registered: from `created_at`
        # on, webhooks bring what happens; the backfill reads everything before it.
        job = BackfillJob(conn.id, conn.account_id, api_key,
                          since=conn.created_at - BACKFILL_DAYS * 86400,
                          until=conn.created_at)
        coro = run_backfill(job, settings=self.settings, sink=self.sink, redis=self.store.redis,
                            on_progress=self.metrics.backfill_progress,
                            options=self.backfill_options,
                            on_published=self._record_published(conn))
        task = asyncio.create_task(coro, name=f"backfill-{conn.id}")
        self.backfills[conn.id] = task
        task.add_done_callback(functools.partial(self._backfill_done, conn.id))
        return "started"

    def _record_published(self, conn: Connection) -> PublishedCallback | None:
        """The backfill's tail (events the gap repair's first window reaches: from the
        connection's creation minus the settle delay) is recorded as seen, so the
        reconciler does not publish it again; older events are never read again."""
        seen = self.seen
        if seen is None:
            return None
        from_second = conn.created_at - seen.overlap_s

        async def record(events: Sequence[dict[str, Any]]) -> None:
            recent = [e for e in events if isinstance(e.get("created"), int)
                      and e["created"] >= from_second]
            await seen.add(conn.id, recent)

        return record

    def start_resuming(self) -> None:
        self._resume = asyncio.create_task(self.resume_backfills(), name="resume-backfills")
        self._resume.add_done_callback(_log_if_failed)

    async def resume_backfills(self) -> int:
        """After a restart, continue every backfill that had not finished.

        The backfill keeps its cursor and a per-connection lock in Redis, so with several
        connector replicas each unfinished backfill still runs once.
        """
        resumed = 0
        for connection_id in await self.store.list_ids():
            progress = await self.store.backfill_progress(connection_id)
            if isinstance(progress, dict) and progress.get("state") == "done":
                continue
            conn = await self.store.get(connection_id)
            if conn is None:
                continue
            if self._launch_backfill(conn, self.store.api_key(conn)) == "started":
                resumed += 1
        if resumed:
            log.info("resumed %d unfinished backfill(s)", resumed)
        return resumed

    def _backfill_done(self, connection_id: str, task: asyncio.Task[Any]) -> None:
        if self.backfills.get(connection_id) is task:
            del self.backfills[connection_id]
            self.metrics.backfill_running.labels(connection_id).set(0)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if type(exc).__name__ == "BackfillBusy":
            log.info("backfill of %s already running elsewhere", connection_id)
            return
        self.metrics.backfill_failed.inc()
        self.health.refresh_soon(connection_id)
        # The backfill persists its cursor; a restart or `segments backfill ID` resumes it.
        log.error("backfill of %s stopped: %s", connection_id, type(exc).__name__)

    async def _own(self, request: web.Request) -> Connection | None:
        """The path's connection if the caller's token allows its account, else None;
        ConnectionStoreUnavailable when the store cannot say."""
        conn = await self.store.get(request.match_info["connection_id"])
        if conn is None or not principal(request).may(conn.account_id):
            return None
        return conn

    async def show(self, request: web.Request) -> web.Response:
        try:
            conn = await self._own(request)
        except ConnectionStoreUnavailable:
            return _error(503, None, STORE_UNAVAILABLE)
        if conn is None:
            return _json(404, NOT_FOUND)
        doc = conn.public()
        doc.update((await self.health.health(conn)).to_json())
        doc["backfill"] = await self.store.backfill_progress(conn.id)
        doc["backfill_running"] = conn.id in self.backfills
        return _json(200, doc)

    async def delete(self, request: web.Request) -> web.Response:
        try:
            conn = await self._own(request)
        except ConnectionStoreUnavailable:
            return _error(503, None, STORE_UNAVAILABLE)
        if conn is None:
            return _json(404, NOT_FOUND)
        purge = request.query.get("purge", "").lower() in ("1", "true", "yes")
        purged = 0
        if purge:
            try:
                others = [c for c in [await self.store.get(i) for i in await self.store.list_ids()]
                          if c is not None and c.account_id == conn.account_id
                          and c.id != conn.id]
            except ConnectionStoreUnavailable:
                return _error(503, None, STORE_UNAVAILABLE)
            if others:
                return _error(409, "purge", "the account has other connections, which feed the "
                              "same contacts; delete them first (or delete without purge)")
            # Sent first: if Kafka refuses, nothing is deleted and the call can be retried
            # (a purge sent twice erases nothing more).
            try:
                purged = await request_purge(self.settings, conn.account_id, [conn.id])
            except (KafkaError, OSError) as exc:
                log.error("purge of %s not sent: %s", conn.account_id, type(exc).__name__)
                return _error(503, "purge", "the event store is unavailable; nothing was "
                              "deleted, retry later")
        task = self.backfills.pop(conn.id, None)
        if task is not None:
            task.cancel()
        outcome = "none registered by us"
        if conn.registration == "stripe" and conn.webhook_endpoint_id:
            async with stripe_client(self.settings, self.store.api_key(conn)) as client:
                outcome = await delete_endpoint(client, conn.webhook_endpoint_id)
        elif conn.registration == "localstripe":
            outcome = await self._disable_localstripe(conn.id)
        try:
            await self.store.delete(conn.id)  # the tombstone first: then the cache
        except ConnectionStoreUnavailable:
            return _error(503, None, STORE_UNAVAILABLE)
        await self._release(conn.account_id, conn.id)
        self.metrics.forget_connection(conn.id)
        await self.health.forget(conn.id)
        if self.seen is not None:
            await self.seen.forget(conn.id)
        request[LOG_FIELDS] = {"connection_id": conn.id, "webhook_endpoint": outcome}
        answer: dict[str, Any] = {"id": conn.id, "deleted": True, "webhook_endpoint": outcome}
        if purge:
            answer["purge_partitions"] = purged
        return _json(200, answer)

    async def _disable_localstripe(self, connection_id: str) -> str:
        """localstripe cannot unregister; point the hook at an event type that never fires."""
        import aiohttp

        base = (self.settings.stripe_api_base or "").rstrip("/")
        form = [("url", f"{self.settings.public_url}/webhooks/stripe/{connection_id}"),
                ("secret", "whsec_disabled"), ("events[]", "segments.disabled")]
        try:
            async with aiohttp.ClientSession() as session, session.post(
                f"{base}/_config/webhooks/{connection_id}", data=form,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                return "disabled" if resp.status == 200 else f"not disabled: HTTP {resp.status}"
        except aiohttp.ClientError:
            return "not disabled: localstripe unreachable"

    async def close(self) -> None:
        await self.health.stop()
        tasks = list(self.backfills.values())
        if self._resume is not None:
            tasks.append(self._resume)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
