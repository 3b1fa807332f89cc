"""The base of every exception Stripe → Kafka raises on purpose.

Callers branch on `retriable` (see `common.errors`), never on message text.
"""

from __future__ import annotations

from common.errors import SegmentsError


class ConnectorError(SegmentsError):
    """Raised by `connectors`; `retriable` is True where trying again later can succeed."""
