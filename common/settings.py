"""Configuration from the environment, as one frozen object passed in explicitly.

Every variable of SPEC's outside contract has a working local default, so a fresh
clone runs without any configuration; production overrides them by environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What every process needs to know about its surroundings."""

    kafka_bootstrap_servers: str = "localhost:9092"
    redis_url: str = "redis://localhost:6379/0"
    topic_prefix: str = ""
    #: Fernet key for secrets at rest; hidden from repr so it never reaches a log.
    secret_key: str | None = field(default=None, repr=False)
    stripe_api_base: str | None = None
    public_url: str = "http://localhost:8080"
    connector_port: int = 8080
    #: The connector's internal port: the connection API, /healthz and /metrics.
    connector_admin_port: int = 8082
    api_port: int = 8081
    #: HS256 secret of the APIs' bearer tokens; hidden from repr like `secret_key`.
    auth_secret: str | None = field(default=None, repr=False)
    #: Path of a JWKS file of public keys (RS256/ES256) that verify bearer tokens.
    auth_jwks: str | None = None
    #: When set, tokens must carry this `aud`.
    auth_audience: str | None = None
    #: Partitions of the topics this project creates; scale-out is bounded by it.
    partitions: int = 8
    replication_factor: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS") or "localhost:9092",
            redis_url=env.get("REDIS_URL") or "redis://localhost:6379/0",
            topic_prefix=env.get("SEGMENTS_TOPIC_PREFIX", ""),
            secret_key=env.get("SEGMENTS_SECRET_KEY") or None,
            stripe_api_base=env.get("STRIPE_API_BASE") or None,
            public_url=(env.get("SEGMENTS_PUBLIC_URL") or "http://localhost:8080").rstrip("/"),
            connector_port=_int(env, "CONNECTOR_PORT", 8080),
            connector_admin_port=_int(env, "CONNECTOR_ADMIN_PORT", 8082),
            api_port=_int(env, "API_PORT", 8081),
            auth_secret=env.get("SEGMENTS_AUTH_SECRET") or None,
            auth_jwks=env.get("SEGMENTS_AUTH_JWKS") or None,
            auth_audience=env.get("SEGMENTS_AUTH_AUDIENCE") or None,
            partitions=_int(env, "SEGMENTS_PARTITIONS", 8),
            replication_factor=_int(env, "SEGMENTS_REPLICATION_FACTOR", 1),
        )

    def topic(self, name: str) -> str:
        """The full name of one of SPEC's topics, with the configured prefix."""
        return f"{self.topic_prefix}{name}"
