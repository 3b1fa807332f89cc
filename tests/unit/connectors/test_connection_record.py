"""The record of `segments.connections`: what is encrypted, and what is refused."""

from __future__ import annotations

import base64
import os

import orjson
import pytest

from connectors.secrets import SecretBox, SecretUnreadable
from connectors.store import Connection, decode_record, encode_record, new_connection_id

pytestmark = pytest.mark.unit


def key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def connection(box: SecretBox) -> Connection:
    return Connection(id=new_connection_id(), account_id="acme", status="active",
                      created_at=1_700_000_000, registration="stripe",
                      webhook_endpoint_id="we_123",
                      api_key_token=box.encrypt("sk_test_plain"),
                      webhook_secrets_token=box.encrypt('["whsec_plain"]'))


def test_round_trip_and_only_tokens_on_the_wire() -> None:
    box = SecretBox(key())
    conn = connection(box)
    value = encode_record(conn)
    assert b"sk_test_plain" not in value
    assert b"whsec_plain" not in value
    doc = orjson.loads(value)
    assert doc["v"] == 1
    assert doc["account_id"] == "acme"
    assert decode_record(conn.id, value) == conn


def test_a_record_under_another_key_is_refused() -> None:
    conn = connection(SecretBox(key()))
    with pytest.raises(ValueError, match="not a connection record"):
        decode_record(new_connection_id(), encode_record(conn))
    with pytest.raises(ValueError, match="not a connection record"):
        decode_record("conn_bad", encode_record(conn))
    with pytest.raises(KeyError):
        decode_record(conn.id, orjson.dumps({"id": conn.id, "account_id": "acme"}))


def test_rotate_moves_a_token_under_the_first_key() -> None:
    old, new = key(), key()
    token = SecretBox(old).encrypt("sk_test_plain")
    both = SecretBox(f"{new},{old}")
    assert not both.is_current(token)
    rotated = both.rotate(token)
    assert both.is_current(rotated)
    assert SecretBox(new).decrypt(rotated) == "sk_test_plain"
    with pytest.raises(SecretUnreadable):
        SecretBox(new).decrypt(token)
    with pytest.raises(SecretUnreadable):
        SecretBox(new).rotate(token)
