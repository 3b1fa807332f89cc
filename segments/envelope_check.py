"""The worker's check of raw events' envelopes, backed by the connector's store.

`stream/` may not import `connectors/` (beyond the raw-event contract), so the worker
composes the two here, as `segments.email_lookup` does: which account a connection feeds
is read from the connector's `ConnectionStore` (`stream.envelopes` decides what to do
with the answer).
"""

from __future__ import annotations

from typing import Any

from common.redis_client import redis_client
from common.settings import Settings
from connectors.secrets import SecretBox, resolve_secret_key
from connectors.store import ConnectionStore
from stream.options import ConnectionAccount


def connector_connection_accounts(settings: Settings) -> ConnectionAccount:
    """Built on first use, so its Redis client lives in the worker's event loop."""
    built: dict[str, Any] = {}

    async def account_of(connection_id: str) -> str | None:
        store = built.get("store")
        if store is None:
            store = built["store"] = ConnectionStore(
                redis_client(settings), SecretBox(resolve_secret_key(settings)),
                prefix=settings.topic_prefix)
        conn = await store.get(connection_id)
        return None if conn is None else conn.account_id

    return account_of
