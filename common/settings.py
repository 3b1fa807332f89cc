"""Configuration from the environment, as one frozen object passed in explicitly.

Every variable of SPEC's outside contract has a working local default, so a fresh
clone runs without any configuration; production overrides them by environment.
Secrets (the Fernet key, the SASL password, the Redis URL, which may carry a password)
are hidden from repr, so a Settings that reaches a log leaks nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from common.errors import SegmentsError

T = TypeVar("T", int, float)

#: KAFKA_SECURITY_PROTOCOL values, as Kafka names them.
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: KAFKA_SASL_MECHANISM values the clients support.
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
REDIS_SCHEMES = ("redis", "rediss", "unix")


class SettingsError(SegmentsError, ValueError):
    """A configuration variable has a value we cannot use; the message names it."""


def _number(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T],
            kind: str) -> T:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {kind}, got {raw!r}") from None


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    return _number(env, name, default, int, "an integer")


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    return _number(env, name, default, float, "a number")


def _readable(name: str, path: str | None) -> None:
    if path is not None and not Path(path).is_file():
        raise SettingsError(f"{name}={path}: no such file")


def _password_file(path: str) -> str:
    """The file's content without its trailing newline (as `echo secret > file` writes)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(
            f"KAFKA_SASL_PASSWORD_FILE={path}: cannot read it ({exc.strerror})") from None
    password = text.rstrip("\r\n")
    if not password:
        raise SettingsError(f"KAFKA_SASL_PASSWORD_FILE={path} is empty")
    return password


@dataclass(frozen=True, kw_only=True)
class KafkaSecurity:
    """How clients authenticate to Kafka and encrypt the connection (SPEC part 2,
    "Transport security"). `common.kafka` turns it into client options."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    #: PEM files: the CA that signed the brokers' certificates (None: the system's CAs),
    #: and a client certificate and key for brokers that require one (mutual TLS).
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        if self.protocol not in SECURITY_PROTOCOLS:
            raise SettingsError(f"KAFKA_SECURITY_PROTOCOL must be one of "
                                f"{', '.join(SECURITY_PROTOCOLS)} (got {self.protocol!r})")
        sasl = (self.sasl_mechanism, self.sasl_username, self.sasl_password)
        if self.uses_sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise SettingsError(
                    f"KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)} with "
                    f"KAFKA_SECURITY_PROTOCOL={self.protocol} (got {self.sasl_mechanism!r})")
            if not self.sasl_username:
                raise SettingsError(
                    f"KAFKA_SASL_USERNAME is required with KAFKA_SECURITY_PROTOCOL={self.protocol}")
            if not self.sasl_password:
                raise SettingsError(
                    "KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE is required with "
                    f"KAFKA_SECURITY_PROTOCOL={self.protocol}")
        elif any(v is not None for v in sasl):
            # A forgotten KAFKA_SECURITY_PROTOCOL must not silently connect in plaintext.
            raise SettingsError(f"KAFKA_SASL_* is set but KAFKA_SECURITY_PROTOCOL="
                                f"{self.protocol} does not use SASL (SASL_SSL?)")
        files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        if not self.uses_ssl and any(f is not None for f in files):
            raise SettingsError(f"KAFKA_SSL_* is set but KAFKA_SECURITY_PROTOCOL="
                                f"{self.protocol} does not use TLS (SSL or SASL_SSL?)")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise SettingsError("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE")
        _readable("KAFKA_SSL_CAFILE", self.ssl_cafile)
        _readable("KAFKA_SSL_CERTFILE", self.ssl_certfile)
        _readable("KAFKA_SSL_KEYFILE", self.ssl_keyfile)

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        def get(name: str) -> str | None:
            return env.get(name, "").strip() or None

        password, password_file = env.get("KAFKA_SASL_PASSWORD") or None, get(
            "KAFKA_SASL_PASSWORD_FILE")
        if password is not None and password_file is not None:
            raise SettingsError(
                "set KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, not both")
        if password_file is not None:
            password = _password_file(password_file)
        return cls(
            protocol=(get("KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper(),
            sasl_mechanism=(get("KAFKA_SASL_MECHANISM") or "").upper() or None,
            sasl_username=get("KAFKA_SASL_USERNAME"),
            sasl_password=password,
            ssl_cafile=get("KAFKA_SSL_CAFILE"),
            ssl_certfile=get("KAFKA_SSL_CERTFILE"),
            ssl_keyfile=get("KAFKA_SSL_KEYFILE"),
        )


def redact_url(url: str) -> str:
    """`url` with its password (if any) replaced by `***`: what logs and output show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _redis_url(raw: str) -> str:
    scheme = urlsplit(raw).scheme
    if scheme not in REDIS_SCHEMES:
        raise SettingsError(f"REDIS_URL must start with redis://, rediss:// or unix:// "
                            f"(got {redact_url(raw)!r})")
    return raw


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What every process needs to know about its surroundings."""

    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    #: `rediss://user:password@host/db` for TLS and a Redis ACL user: hidden from repr
    #: (`redact_url` for output).
    redis_url: str = field(default="redis://localhost:6379/0", repr=False)
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
            kafka_security=KafkaSecurity.from_env(env),
            redis_url=_redis_url(env.get("REDIS_URL") or "redis://localhost:6379/0"),
            topic_prefix=env.get("SEGMENTS_TOPIC_PREFIX", ""),
            secret_key=env.get("SEGMENTS_SECRET_KEY") or None,
            stripe_api_base=env.get("STRIPE_API_BASE") or None,
            public_url=(env.get("SEGMENTS_PUBLIC_URL") or "http://localhost:8080").rstrip("/"),
            connector_port=env_int(env, "CONNECTOR_PORT", 8080),
            connector_admin_port=env_int(env, "CONNECTOR_ADMIN_PORT", 8082),
            api_port=env_int(env, "API_PORT", 8081),
            auth_secret=env.get("SEGMENTS_AUTH_SECRET") or None,
            auth_jwks=env.get("SEGMENTS_AUTH_JWKS") or None,
            auth_audience=env.get("SEGMENTS_AUTH_AUDIENCE") or None,
            partitions=env_int(env, "SEGMENTS_PARTITIONS", 8),
            replication_factor=env_int(env, "SEGMENTS_REPLICATION_FACTOR", 1),
        )

    def topic(self, name: str) -> str:
        """The full name of one of SPEC's topics, with the configured prefix."""
        return f"{self.topic_prefix}{name}"
