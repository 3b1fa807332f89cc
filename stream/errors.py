"""The base of every exception the stream worker raises on purpose.

Callers branch on `retriable` (see `common.errors`), never on message text.
"""

from __future__ import annotations

from common.errors import SegmentsError


class StreamError(SegmentsError):
    """Raised by `stream`; `retriable` is True where trying again later can succeed."""
