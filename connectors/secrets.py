"""Secrets at rest: Stripe API keys and webhook signing secrets, Fernet-encrypted.

A Redis dump, a backup or a stray `MONITOR` must never show a usable Stripe key, so
everything secret is encrypted before it leaves the process. `SEGMENTS_SECRET_KEY` may
list several Fernet keys separated by commas: the first encrypts, all decrypt, which
lets an operator rotate the key without a flag day (`MultiFernet`).

Without a configured key a local run generates one and keeps it in the stack directory
(mode 0600) so restarts can still read what they stored; production refuses to start,
because a generated key would silently differ between replicas.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from common.environment import dev_secret, is_production
from common.settings import Settings
from connectors.errors import ConnectorError

log = logging.getLogger(__name__)

DEV_KEY_FILE = "dev-secret.key"


class SecretKeyError(ConnectorError, RuntimeError):
    """No usable encryption key: the message says how to configure one."""


class SecretUnreadable(ConnectorError, RuntimeError):
    """A stored secret does not decrypt with the configured key(s)."""


def resolve_secret_key(
    settings: Settings, *, env: Mapping[str, str] | None = None, stack: Path | None = None
) -> str:
    """The configured key, or (outside production) a persisted per-machine dev key."""
    if settings.secret_key:
        return settings.secret_key
    if is_production(env):
        raise SecretKeyError(
            "SEGMENTS_SECRET_KEY is required when SEGMENTS_ENV=production; generate one "
            "with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'"
        )
    return dev_secret(DEV_KEY_FILE, Fernet.generate_key, "SEGMENTS_SECRET_KEY", stack)


class SecretBox:
    """Encrypts and decrypts short secrets; the key itself never appears in a repr."""

    def __init__(self, key: str) -> None:
        parts = [part.strip() for part in key.split(",") if part.strip()]
        if not parts:
            raise SecretKeyError("SEGMENTS_SECRET_KEY is empty")
        try:
            fernets = [Fernet(part.encode()) for part in parts]
            self._fernet = MultiFernet(fernets)
            self._first = fernets[0]
        except (ValueError, TypeError):
            # The message must not quote the bad key.
            raise SecretKeyError(
                "SEGMENTS_SECRET_KEY is not a valid Fernet key (32 url-safe base64 bytes)"
            ) from None

    def __repr__(self) -> str:
        return "SecretBox(<hidden>)"

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode("ascii")

    def rotate(self, token: str) -> str:
        """The token re-encrypted under the first key (`segments rotate-secrets`)."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError):
            raise SecretUnreadable(
                "a stored secret does not decrypt with any key of SEGMENTS_SECRET_KEY"
            ) from None

    def is_current(self, token: str) -> bool:
        """True when the first key alone decrypts the token."""
        try:
            self._first.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeError):
            return False
        return True

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise SecretUnreadable(
                "a stored secret does not decrypt with SEGMENTS_SECRET_KEY (was the key "
                "changed without keeping the old one in the list?)"
            ) from None
