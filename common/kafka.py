"""Every Kafka client of the project is made here, from `Settings`.

Producers, consumers, admin clients and bare metadata clients all get the brokers and
the transport security of `Settings.kafka_security` (`KAFKA_SECURITY_PROTOCOL`,
`KAFKA_SASL_*`, `KAFKA_SSL_*`), so a secured cluster is one set of environment
variables away and no call site can forget it. Callers add only what is theirs
(acks, group, isolation level...).
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from common.settings import KafkaSecurity, Settings

__all__ = ["admin", "client", "connection_options", "consumer", "producer", "ssl_context"]


@functools.lru_cache(maxsize=16)
def ssl_context(cafile: str | None, certfile: str | None, keyfile: str | None) -> ssl.SSLContext:
    """TLS 1.2+, the broker's certificate verified against `cafile` (else the system's
    CAs) and its host name checked; a client certificate when one is configured."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    return context


def connection_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments every aiokafka client takes to reach the cluster."""
    security: KafkaSecurity = settings.kafka_security
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": security.protocol,
    }
    if security.uses_ssl:
        options["ssl_context"] = ssl_context(
            security.ssl_cafile, security.ssl_certfile, security.ssl_keyfile)
    if security.uses_sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = security.sasl_password
    return options


#: How stale a client's view of partition leaders may get (aiokafka: 5 minutes). After a
#: broker bounce aiokafka's consumer retried offset look-ups against the moved leader from
#: its cache until the next refresh: a worker asked a bounced broker every 100 ms for
#: minutes. A metadata request every 10 s per client costs the broker nothing.
METADATA_MAX_AGE_MS = 10_000


def producer(settings: Settings, **options: Any) -> Any:
    """An `AIOKafkaProducer` (not started)."""
    options.setdefault("metadata_max_age_ms", METADATA_MAX_AGE_MS)
    return AIOKafkaProducer(**connection_options(settings), **options)


def consumer(settings: Settings, *topics: str, **options: Any) -> Any:
    """An `AIOKafkaConsumer` (not started), subscribed to `topics` if any are given."""
    options.setdefault("metadata_max_age_ms", METADATA_MAX_AGE_MS)
    return AIOKafkaConsumer(*topics, **connection_options(settings), **options)


def admin(settings: Settings, **options: Any) -> Any:
    """An `AIOKafkaAdminClient` (not started)."""
    return AIOKafkaAdminClient(**connection_options(settings), **options)


def client(settings: Settings, **options: Any) -> Any:
    """A bare `AIOKafkaClient` (metadata probes: health checks, readiness)."""
    return AIOKafkaClient(**connection_options(settings), **options)
