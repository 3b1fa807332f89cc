"""Quotas per Center account on `POST /connections`: each creation calls Stripe (key
check, endpoint registration) and starts a 30-day backfill, so one account (or one
leaked token) must not be able to do it without bound.

Two limits, both per account and shared by every connector process (Redis):
- `SEGMENTS_MAX_CONNECTIONS_PER_ACCOUNT` (default 10): connections that exist at once.
- `SEGMENTS_MAX_CONNECTION_CREATES_PER_HOUR` (default 20): attempts in any sliding hour,
  counted whether Stripe accepts the key or not (a refused key still cost a Stripe
  call, and counting failures stops key guessing through this route).
Past either: 429 with `Retry-After` (seconds until the oldest attempt leaves the hour;
for the connection cap, the same hour, though deleting a connection frees a slot at
once). Check and reservation are one Lua script, so concurrent requests cannot both
take the last slot.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from connectors.errors import ConnectorError

HOUR_S = 3600
DEFAULT_MAX_CONNECTIONS = 10
DEFAULT_CREATES_PER_HOUR = 20
#: A reservation whose connection never appeared in the store (a crash between the two)
#: stops counting after this long.
STALE_RESERVATION_S = 600

# KEYS: live set (zset id -> reserved at), attempts (zset token -> at)
# ARGV: now, id, max live, max per hour, hour, stale ids (comma-separated)
_RESERVE = """
local now = tonumber(ARGV[1])
for stale in string.gmatch(ARGV[6], "[^,]+") do redis.call('ZREM', KEYS[1], stale) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[5]))
local attempts = redis.call('ZCARD', KEYS[2])
if attempts >= tonumber(ARGV[4]) then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {2, tostring(tonumber(oldest[2]) + tonumber(ARGV[5]) - now)}
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return {1, ARGV[5]}
end
redis.call('ZADD', KEYS[2], now, ARGV[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]) + 60)
redis.call('ZADD', KEYS[1], now, ARGV[2])
return {0, '0'}
"""


class QuotaExceeded(ConnectorError):
    retriable = True

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    value = int(raw)
    if value < 1:
        raise ValueError(f"{name} must be at least 1")
    return value


@dataclass(frozen=True)
class QuotaLimits:
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    creates_per_hour: int = DEFAULT_CREATES_PER_HOUR

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> QuotaLimits:
        return cls(
            _positive(env, "SEGMENTS_MAX_CONNECTIONS_PER_ACCOUNT", DEFAULT_MAX_CONNECTIONS),
            _positive(env, "SEGMENTS_MAX_CONNECTION_CREATES_PER_HOUR",
                      DEFAULT_CREATES_PER_HOUR))


class ConnectionQuotas:
    """`reserve` before calling Stripe, `release` when a creation failed or a
    connection was deleted. `exists(id)` tells a stale reservation from a live one."""

    def __init__(self, redis: Any, prefix: str, limits: QuotaLimits,
                 exists: Callable[[str], Awaitable[bool]],
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.prefix = prefix
        self.limits = limits
        self.exists = exists
        self.clock = clock
        self._script = redis.register_script(_RESERVE)

    def _keys(self, account_id: str) -> list[str]:
        return [f"{self.prefix}quota:{account_id}:connections",
                f"{self.prefix}quota:{account_id}:creates"]

    async def _stale(self, key: str, now: float) -> list[str]:
        old = await self.redis.zrangebyscore(key, "-inf", now - STALE_RESERVATION_S)
        ids = [v.decode() if isinstance(v, bytes) else str(v) for v in old]
        return [i for i in ids if not await self.exists(i)]

    async def reserve(self, account_id: str, connection_id: str) -> None:
        """Count one creation attempt and hold a connection slot; QuotaExceeded if
        either limit is reached (nothing counted then)."""
        now = self.clock()
        keys = self._keys(account_id)
        stale = await self._stale(keys[0], now)
        code, retry = await self._script(keys=keys, args=[
            now, connection_id, self.limits.max_connections, self.limits.creates_per_hour,
            HOUR_S, ",".join(stale)])
        wait = max(1, math.ceil(float(retry)))
        if int(code) == 2:
            raise QuotaExceeded(f"at most {self.limits.creates_per_hour} connection "
                                f"attempts per account per hour", wait)
        if int(code) == 1:
            raise QuotaExceeded(f"at most {self.limits.max_connections} connections per "
                                f"account; delete one first", wait)

    async def release(self, account_id: str, connection_id: str) -> None:
        """Free the connection's slot (the attempt keeps counting for its hour)."""
        await self.redis.zrem(self._keys(account_id)[0], connection_id)

    async def forget_account(self, account_id: str) -> None:
        """Drop an account's counters (a purge)."""
        await self.redis.delete(*self._keys(account_id))
