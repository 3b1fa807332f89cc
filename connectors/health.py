"""Connection health: is each connected Stripe account still feeding us?

`GET /connections/{id}` reports `status` with `status_reason` and `status_since`:

- `key_revoked`: Stripe answers `AuthenticationError` to the connection's API key;
- `permission_missing`: `PermissionError` (a restricted key lost a permission we need);
- `webhook_disabled`: the webhook endpoint we registered has `status: disabled` (Stripe
  disables an endpoint after days of failed deliveries), from `WebhookEndpoint.retrieve`;
- `backfill_failed`: the connection's backfill ended with an error (and is not running);
- `active`: none of the above.

The first that applies wins, in that order. A check that cannot tell (Stripe unreachable,
rate limited, a 5xx) keeps the previous status. `HealthChecker.run` checks every
connection every `SEGMENTS_HEALTH_INTERVAL_S` seconds (default 300); a failed backfill
is reported at once through `refresh`. The status lives in Redis
(`{prefix}connection_health:{id}`, JSON), so every replica answers alike and a change is
logged once: one line per change, naming the connection, the old and new status and
the reason (our own text, never Stripe's, never a key). The gauge
`segments_connections{status=...}` counts the connections of each status.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson
import stripe

from common.settings import Settings
from connectors.metrics import CONNECTION_STATUSES, ConnectorMetrics
from connectors.store import Connection, ConnectionStore
from connectors.stripe_account import (
    WEBHOOK_PERMISSION,
    KeyLacksPermission,
    KeyRejected,
    StripeAccountError,
    check_key,
    stripe_client,
)

log = logging.getLogger(__name__)

Status = Literal["active", "key_revoked", "permission_missing", "webhook_disabled",
                 "backfill_failed"]
DEFAULT_INTERVAL_S = 300.0


def interval_from_env(env: Mapping[str, str] | None = None) -> float:
    """`SEGMENTS_HEALTH_INTERVAL_S` (seconds, > 0), default 300."""
    env = os.environ if env is None else env
    raw = env.get("SEGMENTS_HEALTH_INTERVAL_S", "").strip()
    value = float(raw) if raw else DEFAULT_INTERVAL_S
    if value <= 0:
        raise ValueError("SEGMENTS_HEALTH_INTERVAL_S must be positive")
    return value


@dataclass(frozen=True)
class Health:
    status: Status
    reason: str | None
    since: float

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "status_reason": self.reason,
                "status_since": self.since}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Health:
        status = doc.get("status")
        if status not in CONNECTION_STATUSES:
            raise ValueError("not a connection status")
        reason = doc.get("status_reason")
        return cls(cast(Status, status), reason if isinstance(reason, str) else None,
                   float(doc.get("status_since") or 0))


#: What a check found: a status and its reason, or None when it could not tell.
Finding = tuple[Status, str | None] | None


class HealthChecker:
    """Checks connections against Stripe and keeps their status (see the module doc)."""

    def __init__(self, settings: Settings, store: ConnectionStore, metrics: ConnectorMetrics,
                 *, interval_s: float | None = None,
                 backfill_running: Any = None) -> None:
        self.settings, self.store, self.metrics = settings, store, metrics
        self.interval_s = interval_from_env() if interval_s is None else interval_s
        #: connection id -> True while its backfill runs in this process.
        self.backfill_running = backfill_running or (lambda _cid: False)
        self.known: dict[str, Status] = {}
        self._task: asyncio.Task[None] | None = None
        self._refreshing: set[asyncio.Task[Any]] = set()
        self._update_gauge()

    def key(self, connection_id: str) -> str:
        return f"{self.settings.topic_prefix}connection_health:{connection_id}"

    # -- reading ---------------------------------------------------------------------

    async def health(self, conn: Connection) -> Health:
        """The stored health of `conn`; `active` since its creation when none is stored."""
        raw = await self.store.redis.get(self.key(conn.id))
        if raw is not None:
            try:
                return Health.from_json(orjson.loads(raw))
            except (ValueError, TypeError):
                log.warning("connection health of %s unreadable; treated as active", conn.id)
        return Health("active", None, float(conn.created_at))

    # -- checking --------------------------------------------------------------------

    async def check(self, conn: Connection) -> Finding:
        """Ask Stripe (key, permissions, endpoint) and look at the backfill."""
        try:
            async with stripe_client(self.settings, self.store.api_key(conn)) as client:
                try:
                    await check_key(client)
                except KeyRejected as exc:
                    return "key_revoked", exc.reason
                except KeyLacksPermission as exc:
                    return "permission_missing", exc.reason
                except StripeAccountError:
                    return None  # Stripe unreachable or erring: cannot tell
                if conn.registration == "stripe" and conn.webhook_endpoint_id:
                    found = await self._endpoint(client, conn.webhook_endpoint_id)
                    if found != ("active", None):
                        return found
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let one connection stop the round
            log.warning("health check of %s failed: %s", conn.id, type(exc).__name__)
            return None
        return await self._backfill(conn)

    async def _endpoint(self, client: stripe.StripeClient, endpoint_id: str) -> Finding:
        try:
            endpoint = await client.v1.webhook_endpoints.retrieve_async(endpoint_id)
        except stripe.AuthenticationError:
            return "key_revoked", "the API key was rejected by Stripe (invalid, expired or revoked)"
        except stripe.PermissionError:
            return "permission_missing", ("the API key lacks a permission this integration "
                                          f"needs: {WEBHOOK_PERMISSION}")
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return "webhook_disabled", ("the webhook endpoint no longer exists at Stripe; "
                                            "reconnect the account")
            return None
        except stripe.StripeError:
            return None
        if getattr(endpoint, "status", None) == "disabled":
            return "webhook_disabled", ("Stripe disabled the webhook endpoint (usually after "
                                        "days of failed deliveries); enable it in the "
                                        "Dashboard or reconnect")
        return "active", None

    async def _backfill(self, conn: Connection) -> Finding:
        if self.backfill_running(conn.id):
            return "active", None
        progress = await self.store.backfill_progress(conn.id)
        if isinstance(progress, dict) and progress.get("state") == "failed":
            error = progress.get("error")
            detail = str(error).split(":", 1)[0] if error else "an error"
            return "backfill_failed", (f"the backfill stopped on {detail}; it resumes from "
                                       "its cursor on restart or with `segments backfill`")
        return "active", None

    # -- recording -------------------------------------------------------------------

    async def record(self, conn: Connection, finding: Finding) -> Health:
        """Store what a check found; log and count a change. None keeps the status."""
        current = await self.health(conn)
        if finding is None or (finding[0] == current.status and finding[1] == current.reason):
            self.known[conn.id] = current.status
            self._update_gauge()
            return current
        status, reason = finding
        # Same status in new words (another permission missing) keeps its `since`.
        since = current.since if status == current.status else round(time.time(), 3)
        changed = Health(status, reason, since)
        await self.store.redis.set(self.key(conn.id), orjson.dumps(changed.to_json()))
        if status != current.status:
            log.log(logging.INFO if status == "active" else logging.WARNING,
                    "connection %s (account %s): status %s -> %s%s", conn.id,
                    conn.account_id, current.status, status,
                    f": {reason}" if reason else "")
        self.known[conn.id] = status
        self._update_gauge()
        return changed

    async def refresh(self, conn: Connection) -> Health:
        return await self.record(conn, await self.check(conn))

    def refresh_soon(self, connection_id: str) -> None:
        """Check one connection in the background (a backfill just ended)."""
        async def one() -> None:
            conn = await self.store.get(connection_id)
            if conn is not None:
                await self.refresh(conn)

        task = asyncio.create_task(one(), name=f"health-{connection_id}")
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    async def forget(self, connection_id: str) -> None:
        self.known.pop(connection_id, None)
        await self.store.redis.delete(self.key(connection_id))
        self._update_gauge()

    def _update_gauge(self) -> None:
        counts = dict.fromkeys(CONNECTION_STATUSES, 0)
        for known in self.known.values():
            counts[known] += 1
        for name, count in counts.items():
            self.metrics.connections.labels(name).set(count)

    # -- the periodic round ----------------------------------------------------------

    async def run_once(self) -> dict[str, Status]:
        """Check every connection once; returns each one's status."""
        seen: dict[str, Status] = {}
        for conn in self.store.connections():
            seen[conn.id] = (await self.refresh(conn)).status
        for gone in set(self.known) - set(seen):
            self.known.pop(gone, None)
        self._update_gauge()
        return seen

    async def run(self) -> None:
        if self.store.log is not None:
            await self.store.log.loaded.wait()
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: try again next round
                log.warning("connection health round failed: %s", type(exc).__name__)
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="connection-health")

    async def stop(self) -> None:
        tasks = [*self._refreshing, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
