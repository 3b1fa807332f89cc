"""The base of every exception the command line and the local stack raises on purpose.

Callers branch on `retriable` (see `common.errors`), never on message text.
"""

from __future__ import annotations

from common.errors import SegmentsError


class ShellError(SegmentsError):
    """Raised by `segments`; `retriable` is True where trying again later can succeed."""
