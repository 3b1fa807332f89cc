"""Bearer tokens for the tests' servers, signed with the test session's secret."""

from __future__ import annotations

import secrets

from common.auth import mint_token

#: The HS256 secret of this test session (`settings.auth_secret` of every test).
TEST_AUTH_SECRET = secrets.token_urlsafe(48)


def token(*accounts: str, admin: bool = False, ttl_s: float = 3600.0,
          secret: str = TEST_AUTH_SECRET) -> str:
    return mint_token(secret, accounts=accounts, admin=admin, ttl_s=ttl_s)


def bearer(*accounts: str, admin: bool = False) -> dict[str, str]:
    """The Authorization header of a token for `accounts` (or the admin)."""
    return {"Authorization": f"Bearer {token(*accounts, admin=admin)}"}


ADMIN = bearer(admin=True)
