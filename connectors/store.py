"""Connections in Redis: which Stripe account feeds which Center account, with its secrets.

One hash per connection under `{prefix}connection:{id}`, plus the set `{prefix}connections`
of ids. The API key and the webhook signing secrets are stored only as Fernet tokens
(see `connectors.secrets`); `Connection` carries the tokens, never plaintext, so a
`Connection` that ends up in a log or a response leaks nothing usable.

The webhook path reads the signing secrets of one connection per request; a short
in-process cache keeps Redis and Fernet off that hot path. A deleted connection is
evicted at once in the process that deleted it and within `cache_ttl` elsewhere.
"""

from __future__ import annotations

import asyncio
import re
import secrets as stdlib_secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from connectors.secrets import SecretBox

Registration = Literal["stripe", "localstripe", "manual"]

CONNECTION_ID = re.compile(r"^conn_[0-9a-f]{24}$")
#: Secrets kept per connection: the current one plus those still valid during a rotation.
MAX_WEBHOOK_SECRETS = 3


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def new_connection_id() -> str:
    return f"conn_{stdlib_secrets.token_hex(12)}"


def is_connection_id(value: str) -> bool:
    return CONNECTION_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Connection:
    id: str
    account_id: str
    status: str
    created_at: int
    registration: Registration
    webhook_endpoint_id: str | None
    #: Fernet tokens, not plaintext; hidden from repr all the same.
    api_key_token: str = field(repr=False)
    webhook_secrets_token: str = field(repr=False)

    def public(self) -> dict[str, Any]:
        """What callers may see about a connection: never the key or the secret."""
        doc: dict[str, Any] = {
            "id": self.id,
            "account_id": self.account_id,
            "status": self.status,
            "created_at": self.created_at,
            "webhook_registration": self.registration,
        }
        if self.webhook_endpoint_id:
            doc["webhook_endpoint_id"] = self.webhook_endpoint_id
        return doc


class ConnectionStore:
    """Connections of one deployment (one topic prefix) in Redis."""

    def __init__(
        self, redis: aioredis.Redis, box: SecretBox, *, prefix: str, cache_ttl: float = 5.0
    ) -> None:
        self.redis = redis
        self.box = box
        self.prefix = prefix
        self.cache_ttl = cache_ttl
        self._secrets_cache: dict[str, tuple[float, tuple[Connection, tuple[str, ...]]]] = {}
        self._loading: dict[str, asyncio.Future[tuple[Connection, tuple[str, ...]] | None]] = {}

    def _key(self, connection_id: str) -> str:
        return f"{self.prefix}connection:{connection_id}"

    @property
    def _index(self) -> str:
        return f"{self.prefix}connections"

    def backfill_key(self, connection_id: str) -> str:
        """Where the backfill keeps its JSON progress document (agreed with backfill.py)."""
        return f"{self.prefix}backfill:{connection_id}"

    async def create(
        self,
        *,
        connection_id: str,
        account_id: str,
        api_key: str,
        webhook_secret: str,
        registration: Registration,
        webhook_endpoint_id: str | None,
        status: str = "active",
    ) -> Connection:
        conn = Connection(
            id=connection_id,
            account_id=account_id,
            status=status,
            created_at=int(time.time()),
            registration=registration,
            webhook_endpoint_id=webhook_endpoint_id,
            api_key_token=self.box.encrypt(api_key),
            webhook_secrets_token=self.box.encrypt(orjson.dumps([webhook_secret]).decode()),
        )
        mapping: dict[FieldT, EncodableT] = {
            "id": conn.id,
            "account_id": conn.account_id,
            "status": conn.status,
            "created_at": str(conn.created_at),
            "registration": conn.registration,
            "webhook_endpoint_id": conn.webhook_endpoint_id or "",
            "api_key": conn.api_key_token,
            "webhook_secrets": conn.webhook_secrets_token,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(connection_id), mapping=mapping)
            pipe.sadd(self._index, connection_id)
            await pipe.execute()
        return conn

    async def get(self, connection_id: str) -> Connection | None:
        if not is_connection_id(connection_id):
            return None
        raw = await self.redis.hgetall(self._key(connection_id))
        if not raw:
            return None
        doc = {_text(k): _text(v) for k, v in raw.items()}
        registration = doc.get("registration", "manual")
        if registration not in ("stripe", "localstripe", "manual"):
            registration = "manual"
        return Connection(
            id=doc["id"],
            account_id=doc["account_id"],
            status=doc.get("status", "active"),
            created_at=int(doc.get("created_at", "0")),
            registration=registration,  # type: ignore[arg-type]  # checked just above
            webhook_endpoint_id=doc.get("webhook_endpoint_id") or None,
            api_key_token=doc["api_key"],
            webhook_secrets_token=doc["webhook_secrets"],
        )

    async def list_ids(self) -> list[str]:
        members = await self.redis.smembers(self._index)
        return sorted(_text(m) for m in members)

    def api_key(self, conn: Connection) -> str:
        return self.box.decrypt(conn.api_key_token)

    def _secrets_of(self, conn: Connection) -> tuple[str, ...]:
        values = orjson.loads(self.box.decrypt(conn.webhook_secrets_token))
        return tuple(str(v) for v in values)

    async def webhook_secrets(
        self, connection_id: str
    ) -> tuple[Connection, tuple[str, ...]] | None:
        """The connection and its signing secrets (newest first), or None if unknown.

        Concurrent requests for one connection share a single Redis read (a burst of
        webhooks after the cache expires must not become a burst of Redis calls).
        """
        cached = self._secrets_cache.get(connection_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        loading = self._loading.get(connection_id)
        if loading is None:
            loading = asyncio.ensure_future(self._load_secrets(connection_id))
            self._loading[connection_id] = loading
            loading.add_done_callback(lambda _: self._loading.pop(connection_id, None))
        return await asyncio.shield(loading)

    async def _load_secrets(
        self, connection_id: str
    ) -> tuple[Connection, tuple[str, ...]] | None:
        conn = await self.get(connection_id)
        if conn is None:
            self._secrets_cache.pop(connection_id, None)
            return None
        found = (conn, self._secrets_of(conn))
        if len(self._secrets_cache) >= 10_000:  # bounded: many connections, one process
            self._secrets_cache.clear()
        self._secrets_cache[connection_id] = (time.monotonic() + self.cache_ttl, found)
        return found

    async def add_webhook_secret(self, connection_id: str, secret: str) -> bool:
        """Start a rotation: the new secret first, older ones kept until they age out."""
        conn = await self.get(connection_id)
        if conn is None:
            return False
        values = [secret, *(s for s in self._secrets_of(conn) if s != secret)]
        token = self.box.encrypt(orjson.dumps(values[:MAX_WEBHOOK_SECRETS]).decode())
        await self.redis.hset(self._key(connection_id), "webhook_secrets", token)
        self._secrets_cache.pop(connection_id, None)
        return True

    async def set_status(self, connection_id: str, status: str) -> None:
        await self.redis.hset(self._key(connection_id), "status", status)

    async def delete(self, connection_id: str) -> bool:
        """Remove the connection and its secrets; True if it existed."""
        self._secrets_cache.pop(connection_id, None)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(connection_id))
            pipe.srem(self._index, connection_id)
            removed, _ = await pipe.execute()
        return bool(removed)

    async def backfill_progress(self, connection_id: str) -> Any:
        """The backfill's progress document, passed through as stored (or None)."""
        key = self.backfill_key(connection_id)
        kind = _text(await self.redis.type(key))
        if kind == "string":
            raw = await self.redis.get(key)
            try:
                return orjson.loads(raw) if raw is not None else None
            except orjson.JSONDecodeError:
                return None
        if kind == "hash":
            fields = await self.redis.hgetall(key)
            return {_text(k): _text(v) for k, v in fields.items()}
        return None
