"""Connections: which Stripe account feeds which Center account, with its secrets.

The system of record is the compacted topic `segments.connections` (key: connection id;
value: the JSON record below, a tombstone when deleted). Every create, update and delete
is written there first (idempotent producer, acks=all) and then applied, in topic order,
to an in-memory table and to the Redis cache by the process's follower
(`connectors.connection_log`). The connector answers from the table once it has read the
topic to its end; Redis is a cache for the processes that do not follow the topic
(`segments backfill`, email lookups) and for a connector whose Kafka is away at start.
Losing Redis loses nothing: the follower notices the missing sentinel key
`{prefix}connections:cached` within a second and writes the whole table back.

Only the secret fields are encrypted (Fernet tokens, `connectors.secrets`), the same
tokens in the topic and in Redis: the metadata (account, status, registration) stays
readable for operators and tools, `segments rotate-secrets` re-encrypts two fields per
record, and the cache needs no re-encryption. `Connection` carries the tokens, never
plaintext, so a `Connection` that ends up in a log or a response leaks nothing usable.

Redis layout (the cache): one hash per connection under `{prefix}connection:{id}`, plus
the set `{prefix}connections` of ids. Backfill progress and locks stay in Redis only
(`backfill_key`): losing them makes backfills start over, and duplicates collapse
downstream.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets as stdlib_secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from common.settings import Settings
from common.topics import CONNECTIONS_TOPIC, TOPICS
from connectors.connection_log import CompactedLog, LogUnavailable
from connectors.errors import ConnectorError
from connectors.secrets import SecretBox

log = logging.getLogger(__name__)

Registration = Literal["stripe", "localstripe", "manual"]

_REGISTRATIONS: dict[str, Registration] = {
    "stripe": "stripe", "localstripe": "localstripe", "manual": "manual"}
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


def _mapping(conn: Connection) -> dict[FieldT, EncodableT]:
    return {
        "id": conn.id,
        "account_id": conn.account_id,
        "status": conn.status,
        "created_at": str(conn.created_at),
        "registration": conn.registration,
        "webhook_endpoint_id": conn.webhook_endpoint_id or "",
        "api_key": conn.api_key_token,
        "webhook_secrets": conn.webhook_secrets_token,
    }


class ConnectionStoreUnavailable(ConnectorError, RuntimeError):
    """Connections cannot be read or written now (Kafka away): answer 503, retry later."""

    retriable = True


class ReadOnlyStore(ConnectorError, RuntimeError):
    """A store without the topic (a CLI reading the cache) was asked to write."""


#: Version of the record format on `segments.connections`.
RECORD_VERSION = 1


def encode_record(conn: Connection) -> bytes:
    """The topic's value for a connection; the two secret fields are Fernet tokens."""
    return orjson.dumps({
        "v": RECORD_VERSION, "id": conn.id, "account_id": conn.account_id,
        "status": conn.status, "created_at": conn.created_at,
        "registration": conn.registration, "webhook_endpoint_id": conn.webhook_endpoint_id,
        "api_key": conn.api_key_token, "webhook_secrets": conn.webhook_secrets_token,
    })


def _connection(doc: dict[str, Any]) -> Connection:
    registration = _REGISTRATIONS.get(str(doc.get("registration")), "manual")
    return Connection(
        id=str(doc["id"]),
        account_id=str(doc["account_id"]),
        status=str(doc.get("status") or "active"),
        created_at=int(doc.get("created_at") or 0),
        registration=registration,
        webhook_endpoint_id=doc.get("webhook_endpoint_id") or None,
        api_key_token=str(doc["api_key"]),
        webhook_secrets_token=str(doc["webhook_secrets"]),
    )


def decode_record(key: str, value: bytes) -> Connection:
    """Raises ValueError (or KeyError) on a record that is not a connection of `key`."""
    doc = orjson.loads(value)
    if not isinstance(doc, dict) or doc.get("id") != key or not is_connection_id(key):
        raise ValueError("not a connection record for its key")
    return _connection(doc)


class ConnectionStore:
    """Connections of one deployment (one topic prefix).

    With `settings`, the store follows `segments.connections` (call `start`/`stop`) and
    can write; without, it only reads the Redis cache (command-line tools).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        box: SecretBox,
        *,
        prefix: str,
        cache_ttl: float = 5.0,
        settings: Settings | None = None,
        write_timeout: float = 10.0,
    ) -> None:
        self.redis = redis
        self.box = box
        self.prefix = prefix
        self.cache_ttl = cache_ttl
        self._secrets_cache: dict[str, tuple[float, tuple[Connection, tuple[str, ...]]]] = {}
        self._loading: dict[str, asyncio.Future[tuple[Connection, tuple[str, ...]] | None]] = {}
        #: Every live connection, from the topic (complete once `log.loaded` is set).
        self._table: dict[str, Connection] = {}
        #: Per id: (offset, value) of its latest record, and of the one that replaced
        #: (tombstones included): lets `rewrite` notice a write that slipped in.
        self._last: dict[str, tuple[int, Connection | None]] = {}
        self._before: dict[str, tuple[int, Connection | None]] = {}
        self._cache_dirty = False
        self.log: CompactedLog | None = None
        if settings is not None:
            self.log = CompactedLog(
                settings, next(t for t in TOPICS if t.name == CONNECTIONS_TOPIC),
                apply=self._apply, on_loaded=self._resync_cache, idle=self._check_cache,
                seed=self._import_cached, write_timeout=write_timeout)

    def _key(self, connection_id: str) -> str:
        return f"{self.prefix}connection:{connection_id}"

    @property
    def _index(self) -> str:
        return f"{self.prefix}connections"

    @property
    def _sentinel(self) -> str:
        return f"{self.prefix}connections:cached"

    def backfill_key(self, connection_id: str) -> str:
        """Where the backfill keeps its JSON progress document (agreed with backfill.py)."""
        return f"{self.prefix}backfill:{connection_id}"

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the topic and load it in the background (see `wait_loaded`)."""
        if self.log is not None:
            await self.log.start()

    async def wait_loaded(self, timeout: float) -> bool:
        return self.log is not None and await self.log.wait_loaded(timeout)

    @property
    def loaded(self) -> bool:
        return self.log is not None and self.log.loaded.is_set()

    async def stop(self) -> None:
        if self.log is not None:
            await self.log.stop()

    # -- the follower's side: topic -> table -> Redis ----------------------------------

    async def _apply(self, key: str, value: bytes | None, offset: int) -> None:
        conn: Connection | None = None
        if value is not None:
            try:
                conn = decode_record(key, value)
            except (ValueError, KeyError, TypeError):
                log.error("segments.connections: unreadable record at offset %d; skipped",
                          offset)
                return
        if conn is None:
            self._table.pop(key, None)
        else:
            self._table[key] = conn
        self._before[key] = self._last.get(key, (-1, None))
        self._last[key] = (offset, conn)
        self._secrets_cache.pop(key, None)
        try:
            await self._cache(key, conn)
        except RedisError as exc:
            self._cache_dirty = True
            log.warning("connection cache not updated (%s); rewritten when Redis is back",
                        type(exc).__name__)

    async def _cache(self, connection_id: str, conn: Connection | None) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            if conn is None:
                pipe.delete(self._key(connection_id))
                pipe.srem(self._index, connection_id)
            else:
                pipe.hset(self._key(connection_id), mapping=_mapping(conn))
                pipe.sadd(self._index, connection_id)
            await pipe.execute()

    async def _resync_cache(self) -> None:
        """Make the Redis cache equal to the table: stale entries out, every one in."""
        try:
            cached = {_text(m) for m in await self.redis.smembers(self._index)}
            async with self.redis.pipeline(transaction=False) as pipe:
                for gone in cached - self._table.keys():
                    pipe.delete(self._key(gone))
                    pipe.srem(self._index, gone)
                for conn in self._table.values():
                    pipe.hset(self._key(conn.id), mapping=_mapping(conn))
                    pipe.sadd(self._index, conn.id)
                pipe.set(self._sentinel, "1")
                await pipe.execute()
        except RedisError as exc:
            self._cache_dirty = True
            log.warning("connection cache not rebuilt (%s); retrying", type(exc).__name__)
            return
        self._cache_dirty = False
        log.info("connection cache rebuilt from the topic: %d connection(s)", len(self._table))

    async def _check_cache(self) -> None:
        """Every second: a Redis that lost the sentinel (FLUSHALL, restart) is rebuilt."""
        try:
            missing = not await self.redis.exists(self._sentinel)
        except RedisError:
            self._cache_dirty = True
            return
        if missing or self._cache_dirty:
            await self._resync_cache()

    async def _import_cached(self, produce: Callable[[str, bytes | None], Awaitable[int]]
                             ) -> None:
        """First start on an empty topic: connections that lived only in Redis (before
        the topic existed) are written to it, so upgrading loses none."""
        ids = [_text(m) for m in await self.redis.smembers(self._index)]
        imported = 0
        for connection_id in sorted(ids):
            conn = await self._cached(connection_id)
            if conn is not None:
                await produce(conn.id, encode_record(conn))
                imported += 1
        if imported:
            log.warning("imported %d connection(s) from Redis into the topic", imported)

    # -- reading -------------------------------------------------------------------

    async def get(self, connection_id: str) -> Connection | None:
        if not is_connection_id(connection_id):
            return None
        if self.loaded:
            return self._table.get(connection_id)
        conn = await self._cached(connection_id)
        if conn is None and self.log is not None:
            # Not loaded yet and not in the cache: it may exist; do not say it does not.
            raise ConnectionStoreUnavailable("connections are still loading from Kafka")
        return conn

    async def _cached(self, connection_id: str) -> Connection | None:
        raw = await self.redis.hgetall(self._key(connection_id))
        if not raw:
            return None
        return _connection({_text(k): _text(v) for k, v in raw.items()})

    async def list_ids(self) -> list[str]:
        if self.log is not None:
            await self.log.loaded.wait()
            return sorted(self._table)
        members = await self.redis.smembers(self._index)
        return sorted(_text(m) for m in members)

    def connections(self) -> list[Connection]:
        """Every connection of the loaded table (empty before `loaded`)."""
        return [self._table[k] for k in sorted(self._table)]

    def api_key(self, conn: Connection) -> str:
        return self.box.decrypt(conn.api_key_token)

    def _secrets_of(self, conn: Connection) -> tuple[str, ...]:
        values = orjson.loads(self.box.decrypt(conn.webhook_secrets_token))
        return tuple(str(v) for v in values)

    async def webhook_secrets(
        self, connection_id: str
    ) -> tuple[Connection, tuple[str, ...]] | None:
        """The connection and its signing secrets (newest first), or None if unknown.

        Concurrent requests for one connection share a single read (a burst of webhooks
        after the cache expires must not become a burst of Redis calls).
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

    # -- writing: the topic first ----------------------------------------------------

    async def _write(self, connection_id: str, conn: Connection | None) -> int:
        if self.log is None:
            raise ReadOnlyStore("this connection store reads the cache only")
        try:
            return await self.log.write(connection_id,
                                        None if conn is None else encode_record(conn))
        except LogUnavailable as exc:
            raise ConnectionStoreUnavailable(str(exc)) from exc

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
        await self._write(connection_id, conn)
        return conn

    async def rewrite(self, connection_id: str,
                      change: Callable[[Connection], Connection]) -> bool:
        """Write `change(current)` of a loaded connection; False if it is gone.

        Kafka has no compare-and-set: when another write (an update, a delete) landed
        between reading the current record and writing ours, ours overwrote it; then
        that record is written again on top, changed too (or the tombstone again), so
        the topic ends with what the other writer meant. `segments rotate-secrets`.
        """
        seen, current = self._last.get(connection_id, (-1, None))
        for _ in range(10):
            if current is None:
                return False
            written = await self._write(connection_id, change(current))
            latest, _ = self._last.get(connection_id, (-1, None))
            before_offset, before = self._before.get(connection_id, (-1, None))
            if latest != written or before_offset == seen:
                return True  # nothing in between (or a newer write superseded ours)
            log.warning("%s changed during the rewrite; writing the change again",
                        connection_id)
            if before is None:
                await self._write(connection_id, None)
                return False
            seen, current = written, before
        raise ConnectionStoreUnavailable(f"{connection_id} keeps changing; try again")

    async def add_webhook_secret(self, connection_id: str, secret: str) -> bool:
        """Start a rotation: the new secret first, older ones kept until they age out."""
        conn = await self.get(connection_id)
        if conn is None:
            return False
        values = [secret, *(s for s in self._secrets_of(conn) if s != secret)]
        token = self.box.encrypt(orjson.dumps(values[:MAX_WEBHOOK_SECRETS]).decode())
        await self._write(connection_id, replace(conn, webhook_secrets_token=token))
        self._secrets_cache.pop(connection_id, None)
        return True

    async def set_status(self, connection_id: str, status: str) -> None:
        conn = await self.get(connection_id)
        if conn is not None:
            await self._write(connection_id, replace(conn, status=status))

    async def delete(self, connection_id: str) -> bool:
        """Remove the connection and its secrets (a tombstone); True if it existed."""
        existed = await self.get(connection_id) is not None
        if existed:
            await self._write(connection_id, None)
        self._secrets_cache.pop(connection_id, None)
        return existed

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
