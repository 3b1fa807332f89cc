"""The stream's fallback for a customer's email: the connector's resolver.

`stream/` may not import `connectors/` (beyond the raw-event contract), so the worker
composes the two here: a look-up backed by the Redis cache that `customer.*` webhooks
and the backfill's Customers listing fill, and by the Stripe API on a miss (rate
limited, negative-cached), with the connection's stored key.
"""

from __future__ import annotations

from typing import Any

from common.redis_client import redis_client
from common.settings import Settings
from connectors.emails import EmailResolver
from connectors.secrets import SecretBox, resolve_secret_key
from connectors.store import ConnectionStore
from stream.app import EmailLookup


def connector_email_lookup(settings: Settings) -> EmailLookup:
    """Built on first use, so its Redis client lives in the worker's event loop."""
    built: dict[str, Any] = {}

    async def lookup(connection_id: str, customer_id: str) -> str | None:
        resolver = built.get("resolver")
        if resolver is None:
            redis = redis_client(settings)
            store = ConnectionStore(redis, SecretBox(resolve_secret_key(settings)),
                                    prefix=settings.topic_prefix)

            async def api_key(cid: str) -> str | None:
                conn = await store.get(cid)
                return None if conn is None else store.api_key(conn)

            resolver = built["resolver"] = EmailResolver(redis, settings, api_key)
        email: str | None = await resolver.email_for(connection_id, customer_id)
        return email

    return lookup
