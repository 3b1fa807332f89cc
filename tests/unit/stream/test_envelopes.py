"""The envelope check: a raw event's account must be its connection's account."""

from __future__ import annotations

import pytest

from connectors.contract import RawEvent
from stream.envelopes import EnvelopeCheck, ForgedEnvelope, UnknownConnection

pytestmark = pytest.mark.unit

CONNECTIONS = {"conn_a": "acme", "conn_g": "globex"}


def raw(connection_id: str, account_id: str) -> RawEvent:
    return RawEvent(connection_id, account_id, "webhook", 0, {"id": "evt_1", "type": "x"})


class Lookup:
    def __init__(self, fail: int = 0) -> None:
        self.calls: list[str] = []
        self.fail = fail

    async def __call__(self, connection_id: str) -> str | None:
        self.calls.append(connection_id)
        if self.fail:
            self.fail -= 1
            raise ConnectionError("redis away")
        return CONNECTIONS.get(connection_id)


async def test_the_connections_own_account_passes_and_is_cached() -> None:
    lookup = Lookup()
    check = EnvelopeCheck(lookup)
    for _ in range(3):
        await check.verify(raw("conn_a", "acme"))
    assert lookup.calls == ["conn_a"]


async def test_another_account_is_a_forged_envelope() -> None:
    check = EnvelopeCheck(Lookup())
    with pytest.raises(ForgedEnvelope, match="'globex' is not the account of connection 'conn_a'"):
        await check.verify(raw("conn_a", "globex"))
    # The true account is not revealed in the reason.
    with pytest.raises(ForgedEnvelope) as caught:
        await check.verify(raw("conn_g", "acme"))
    assert "globex" not in str(caught.value)


async def test_an_unknown_connection_is_refused_and_not_cached() -> None:
    lookup = Lookup()
    check = EnvelopeCheck(lookup)
    for _ in range(2):
        with pytest.raises(UnknownConnection):
            await check.verify(raw("conn_nobody", "acme"))
    assert lookup.calls == ["conn_nobody", "conn_nobody"]


async def test_the_cache_expires() -> None:
    now = [0.0]
    lookup = Lookup()
    check = EnvelopeCheck(lookup, cache_seconds=10, clock=lambda: now[0])
    await check.verify(raw("conn_a", "acme"))
    now[0] = 11.0
    await check.verify(raw("conn_a", "acme"))
    assert lookup.calls == ["conn_a", "conn_a"]


async def test_a_failing_lookup_is_retried_then_raised_not_judged() -> None:
    check = EnvelopeCheck(Lookup(fail=2), backoff=0)
    await check.verify(raw("conn_a", "acme"))  # two failures, then the answer
    with pytest.raises(ConnectionError):
        await EnvelopeCheck(Lookup(fail=3), backoff=0).verify(raw("conn_a", "acme"))


async def test_a_huge_forged_account_is_shown_bounded() -> None:
    with pytest.raises(ForgedEnvelope) as caught:
        await EnvelopeCheck(Lookup()).verify(raw("conn_a", "x" * 100_000))
    assert len(str(caught.value)) < 300
