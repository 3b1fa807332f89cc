"""The connector subscribes to exactly the event types the stream classifies."""

import pytest

from connectors.event_types import NEEDED_EVENT_TYPES as CONNECTOR_TYPES
from connectors.event_types import STRIPE_TYPES_LIMIT
from stream.classify import NEEDED_EVENT_TYPES as STREAM_TYPES

pytestmark = pytest.mark.unit


def test_connector_and_stream_agree() -> None:
    assert CONNECTOR_TYPES == STREAM_TYPES


def test_within_stripes_limit() -> None:
    assert len(CONNECTOR_TYPES) <= STRIPE_TYPES_LIMIT
