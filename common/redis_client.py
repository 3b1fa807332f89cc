"""Every Redis client of the project is made here, from `Settings.redis_url`.

`REDIS_URL` may be `redis://`, `rediss://` (TLS; `?ssl_ca_certs=/path/ca.pem` names a
private CA) or `unix://`, with `user:password@` for a Redis ACL user (or `:password@`
for `requirepass`). The URL is never logged: `redact_url` is what output shows, and
redis-py's own repr and errors name the host, never the password.
"""

from __future__ import annotations

from typing import Any

import redis as sync_redis
import redis.asyncio as aioredis

from common.settings import Settings, redact_url

__all__ = ["blocking_pool_client", "redact_url", "redis_client", "sync_redis_client"]


def redis_client(settings: Settings, **options: Any) -> aioredis.Redis:
    """An asyncio client of the configured Redis."""
    return aioredis.Redis.from_url(settings.redis_url, **options)


def blocking_pool_client(settings: Settings, max_connections: int,
                         **options: Any) -> aioredis.Redis:
    """An asyncio client whose pool waits for a free connection instead of failing (a
    burst of requests); closing the client closes the pool."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=max_connections, **options)
    return aioredis.Redis.from_pool(pool)


def sync_redis_client(url: str, **options: Any) -> sync_redis.Redis:
    """A blocking client of `url` (the local stack's health checks)."""
    return sync_redis.Redis.from_url(url, **options)
