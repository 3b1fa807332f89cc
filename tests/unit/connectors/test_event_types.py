"""The connector subscribes to exactly the event types the stream classifies."""

import pytest

from common.stripe_event_types import NEEDED_EVENT_TYPES, STRIPE_TYPES_LIMIT
from stream.classify import HANDLED_EVENT_TYPES

pytestmark = pytest.mark.unit


def test_connector_and_stream_agree() -> None:
    assert NEEDED_EVENT_TYPES == HANDLED_EVENT_TYPES


def test_within_stripes_limit() -> None:
    assert len(NEEDED_EVENT_TYPES) <= STRIPE_TYPES_LIMIT
