"""The root of every exception this project raises on purpose.

Each package derives its own base from `SegmentsError` (`rules.RuleError`,
`connectors.ConnectorError`, `stream.StreamError`, `serving.ServingError`), and callers
branch on the `retriable` flag instead of matching messages, as aiokafka's errors do: a
retriable error is a moment's unavailability (a broker, Redis, Stripe), anything else is
final for the input that caused it.
"""

from __future__ import annotations


class SegmentsError(Exception):
    """Something this project detected and named; `retriable` says whether to try again."""

    retriable: bool = False
