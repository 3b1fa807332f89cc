"""The base of every exception the serving process raises on purpose.

Callers branch on `retriable` (see `common.errors`), never on message text.
"""

from __future__ import annotations

from common.errors import SegmentsError


class ServingError(SegmentsError):
    """Raised by `serving`; `retriable` is True where trying again later can succeed."""
