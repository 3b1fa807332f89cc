"""Secrets at rest: encryption, key rotation, and where the key comes from."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from common.settings import Settings
from connectors.secrets import (
    SecretBox,
    SecretKeyError,
    SecretUnreadable,
    resolve_secret_key,
)

pytestmark = pytest.mark.unit


def test_round_trip_and_ciphertext_hides_the_plaintext() -> None:
    box = SecretBox(Fernet.generate_key().decode())
    token = box.encrypt("sk_test_plain")
    assert "sk_test_plain" not in token
    assert box.decrypt(token) == "sk_test_plain"
    assert "sk_test" not in repr(box)


def test_key_rotation_keeps_old_secrets_readable() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = SecretBox(old).encrypt("whsec_1")
    rotated = SecretBox(f"{new},{old}")
    assert rotated.decrypt(token) == "whsec_1"
    assert SecretBox(new).decrypt(rotated.encrypt("whsec_2")) == "whsec_2"
    with pytest.raises(SecretUnreadable):
        SecretBox(new).decrypt(token)


def test_a_bad_key_is_refused_without_quoting_it() -> None:
    with pytest.raises(SecretKeyError) as caught:
        SecretBox("not-a-fernet-key-0123")
    assert "not-a-fernet-key-0123" not in str(caught.value)


def test_configured_key_wins(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    assert resolve_secret_key(Settings(secret_key=key), env={}, stack=tmp_path) == key
    assert not (tmp_path / "dev-secret.key").exists()


def test_production_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    with pytest.raises(SecretKeyError, match="SEGMENTS_SECRET_KEY is required"):
        resolve_secret_key(Settings(), env={"SEGMENTS_ENV": "production"}, stack=tmp_path)
    assert not (tmp_path / "dev-secret.key").exists()


def test_dev_key_is_generated_once_private_and_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    first = resolve_secret_key(Settings(), env={}, stack=tmp_path)
    path = tmp_path / "dev-secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "generated a development key" in caplog.text
    assert first not in caplog.text
    assert resolve_secret_key(Settings(), env={}, stack=tmp_path) == first
    assert SecretBox(first).decrypt(SecretBox(first).encrypt("x")) == "x"
