"""A worker's options refuse what Kafka or the pipeline cannot run with, at start."""

from __future__ import annotations

import pytest

from common.settings import Settings
from stream.app import create_app
from stream.options import StreamOptions

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("seconds", [0, 5.9, 1801])
def test_a_session_timeout_the_broker_refuses_is_refused_at_once(seconds: float) -> None:
    with pytest.raises(ValueError, match="session_timeout_s"):
        StreamOptions(session_timeout_s=seconds)


def test_the_session_timeout_reaches_the_group_membership() -> None:
    app = create_app(Settings(topic_prefix="t."), StreamOptions(session_timeout_s=45))
    assert app.runtime.session_timeout_ms == 45_000
