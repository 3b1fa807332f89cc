"""Erasing one person from a deployment: `segments forget --account A EMAIL` and
`DELETE /accounts/{account_id}/contacts/{email}` on the query API.

Publishes the erasure control record (`stream.erasure`) to every partition of
`segments.control`, naming the account's connections (customer emails and charge payers
are kept per connection). Each worker partition erases what it holds inside its own
transaction and emits `left` (cause `erased`) for every segment the contact was in,
with tombstones on `segments.members`; the read-model writer applies those like any
other leave, so Redis and the query API drop the member. See README, "Privacy".
"""

from __future__ import annotations

from dataclasses import dataclass

from common import kafka
from common.control import forget_record
from common.emails import normalize_email
from common.redis_client import redis_client
from common.settings import Settings
from common.topics import CONTROL_TOPIC
from connectors.secrets import SecretBox, resolve_secret_key
from connectors.store import ConnectionStore
from serving.errors import ServingError
from stream.facts import contact_key


class NotAnEmail(ServingError, ValueError):
    """The address to erase is not an email (`common.emails`)."""


@dataclass(frozen=True)
class ForgetSent:
    account_id: str
    partitions: int
    connections: int


async def account_connections(settings: Settings, account_id: str,
                              email: str | None = None) -> list[str]:
    """Ids of the account's connections, from the connection store; with `email`, the
    connector's customer-email cache entries (`connectors.emails`) of those connections
    that name it are deleted on the way."""
    redis = redis_client(settings)
    try:
        store = ConnectionStore(redis, SecretBox(resolve_secret_key(settings)),
                                prefix=settings.topic_prefix)
        found = [await store.get(i) for i in await store.list_ids()]
        ids = sorted(c.id for c in found if c is not None and c.account_id == account_id)
        if email is not None:
            for connection_id in ids:
                pattern = f"{settings.topic_prefix}email:{connection_id}:*"
                async for key in redis.scan_iter(match=pattern, count=1000):
                    raw = await redis.get(key)
                    text = raw.decode() if isinstance(raw, bytes) else (raw or "")
                    if text.partition("|")[2] == email:
                        await redis.delete(key)
        return ids
    finally:
        await redis.aclose()


async def forget(settings: Settings, account_id: str, email: str) -> ForgetSent:
    """Ask every worker partition to erase `email` within `account_id`."""
    normalized = normalize_email(email)
    if normalized is None:
        raise NotAnEmail("not an email address")
    connections = await account_connections(settings, account_id, normalized)
    record = forget_record(account_id, normalized, connections)
    topic = settings.topic(CONTROL_TOPIC)
    producer = kafka.producer(settings, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        sent = [await producer.send(topic, record, key=contact_key(account_id, normalized),
                                    partition=partition) for partition in partitions]
        for future in sent:
            await future
    finally:
        await producer.stop()
    return ForgetSent(account_id, len(partitions), len(connections))
