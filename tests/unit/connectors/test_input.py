"""Pure checks of what the connector accepts: signatures, event bodies, connect requests."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from common.stripe_event_types import NEEDED_EVENT_TYPES, STRIPE_TYPES_LIMIT
from connectors.connections import ConnectRequestError, parse_connect_request
from connectors.webhooks import check_signature, parse_event
from tests.stripe_signing import sign

pytestmark = pytest.mark.unit

BODY = b'{"id": "evt_1", "type": "charge.refunded", "data": {"object": {}}}'
SECRET = "whsec_unit_current"
OLD = "whsec_unit_previous"


def test_needed_types_fit_stripes_limit() -> None:
    assert len(NEEDED_EVENT_TYPES) <= STRIPE_TYPES_LIMIT
    assert all(t.count(".") >= 1 and t == t.strip().lower() for t in NEEDED_EVENT_TYPES)


def _signed(secrets: str | list[str], age: int = 0) -> Callable[[], str]:
    """Signs when the test runs, so ages are exact however long collection took."""
    return lambda: sign(BODY, secrets, int(time.time()) - age)


@pytest.mark.parametrize(
    ("header", "secrets", "reason"),
    [
        (_signed(SECRET), (SECRET,), None),
        (_signed([OLD, SECRET]), (SECRET,), None),  # rotation: any v1 may match
        (_signed(OLD), (SECRET, OLD), None),  # rotation: any stored secret may match
        (_signed(SECRET, -120), (SECRET,), None),  # a sender clock ahead is not a replay
        (_signed(SECRET, 290), (SECRET,), None),
        (lambda: None, (SECRET,), "missing_signature"),
        (lambda: "", (SECRET,), "missing_signature"),
        (lambda: "t=abc,v1=00", (SECRET,), "bad_signature"),
        (lambda: "v1=" + "0" * 64, (SECRET,), "bad_signature"),
        (_signed("whsec_other"), (SECRET,), "bad_signature"),
        (lambda: sign(BODY, SECRET).replace("v1=", "v0="), (SECRET,), "bad_signature"),
        (_signed(SECRET, 301), (SECRET,), "stale_timestamp"),
        (_signed(SECRET, -290), (SECRET,), None),
        (_signed(SECRET, -320), (SECRET,), "future_timestamp"),  # made to be replayed later
        (_signed(SECRET, -10**9), (SECRET,), "future_timestamp"),
        (_signed("whsec_other", 3600), (SECRET,), "bad_signature"),
        (_signed(SECRET), (), "bad_signature"),
    ],
)
def test_check_signature(
    header: Callable[[], str | None], secrets: tuple[str, ...], reason: str | None
) -> None:
    assert check_signature(BODY, header(), secrets) == reason


def test_future_check_reads_the_timestamp_the_library_verified() -> None:
    """Two `t=` items: the library verifies the first; so is the first checked."""
    now = int(time.time())
    future = sign(BODY, SECRET, now + 3600)
    v1 = future.split(",v1=")[1]
    assert check_signature(BODY, f"t={now + 3600},t={now},v1={v1}", (SECRET,)) == (
        "future_timestamp")
    assert check_signature(BODY, f"t={now + 3600},v1={v1}", (SECRET,), now=now + 3600) is None


def test_signature_covers_every_byte() -> None:
    header = sign(BODY, SECRET)
    assert check_signature(BODY + b" ", header, (SECRET,)) == "bad_signature"


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        (BODY, True),
        (b"[]", False),
        (b"null", False),
        (b"{", False),
        (b'{"id": "evt_1"}', False),
        (b'{"type": "charge.failed"}', False),
        (b'{"id": 1, "type": "charge.failed"}', False),
        (b'{"id": "evt_1", "type": "charge.failed"}', True),
    ],
)
def test_parse_event(body: bytes, ok: bool) -> None:
    assert (parse_event(body) is not None) is ok


KEY = "sk_test_0123456789abcdef"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", None),
        (b"[]", None),
        (b'{"api_key": "' + KEY.encode() + b'"}', "account_id"),
        (b'{"account_id": "a b", "api_key": "' + KEY.encode() + b'"}', "account_id"),
        (b'{"account_id": "' + b"a" * 129 + b'", "api_key": "' + KEY.encode() + b'"}',
         "account_id"),
        (b'{"account_id": "acme"}', "api_key"),
        (b'{"account_id": "acme", "api_key": 42}', "api_key"),
        (b'{"account_id": "acme", "api_key": "pk_live_abc"}', "api_key"),
        (b'{"account_id": "acme", "api_key": "sk_abc"}', "api_key"),
        (b'{"account_id": "acme", "api_key": "' + b"sk_test_" + b"a" * 300 + b'"}', "api_key"),
        (b'{"account_id": "acme", "api_key": "' + KEY.encode() + b'", "webhook_secret": "x"}',
         "webhook_secret"),
        (b'{"account_id": "acme", "api_key": "' + KEY.encode() + b'", "plan": "x"}', "plan"),
    ],
)
def test_connect_request_errors_name_the_field_never_the_value(
    body: bytes, field: str | None
) -> None:
    with pytest.raises(ConnectRequestError) as caught:
        parse_connect_request(body)
    assert caught.value.field == field
    assert caught.value.reason
    assert KEY not in caught.value.reason


@pytest.mark.parametrize("key", [KEY, "sk_live_abc", "rk_test_abc", "rk_live_abc"])
def test_connect_request_accepts_secret_and_restricted_keys(key: str) -> None:
    body = b'{"account_id": "acme", "api_key": "' + key.encode() + b'"}'
    req = parse_connect_request(body)
    assert (req.account_id, req.api_key, req.webhook_secret) == ("acme", key, None)
    assert key not in repr(req)


def test_connect_request_with_a_hand_registered_secret() -> None:
    req = parse_connect_request(
        b'{"account_id": "acme", "api_key": "' + KEY.encode()
        + b'", "webhook_secret": "whsec_abc"}')
    assert req.webhook_secret == "whsec_abc"
    assert "whsec_abc" not in repr(req)
