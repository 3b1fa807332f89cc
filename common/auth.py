"""Bearer tokens of the connection API and the query API: one verifier for both servers.

A token is a JWT. Keys: `SEGMENTS_AUTH_SECRET` (HS256, a shared secret of at least 32
bytes) and/or `SEGMENTS_AUTH_JWKS` (a JWKS file of public keys, RS256 or ES256). Outside
production a missing configuration means a development secret generated once under the
stack directory (as `SEGMENTS_SECRET_KEY` does); production refuses to start.

The algorithm is pinned by the key, never taken from the token: an HS256 token is
checked only against the shared secret, an RS256/ES256 token only against the JWKS key
of that algorithm, and `none` is never accepted. Claims: `exp` (required), then either
`accounts` (the account ids the caller may act for) or `scope` containing
`segments:admin` (every account); `aud` must match `SEGMENTS_AUTH_AUDIENCE` when set.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
from aiohttp import web

from common.environment import dev_secret, is_production
from common.errors import SegmentsError
from common.http import Handler, route_of
from common.settings import Settings

ADMIN_SCOPE = "segments:admin"
DEV_SECRET_FILE = "dev-auth-secret.key"
MIN_SECRET_BYTES = 32
#: Algorithms accepted from a JWKS, and the only one a shared secret verifies.
ASYMMETRIC = ("RS256", "ES256")
SYMMETRIC = "HS256"
#: Tolerated clock skew on `exp`/`nbf`/`iat`, in seconds.
LEEWAY_S = 30
MAX_TOKEN_CHARS = 8192
#: What an account id in a token may look like (that of `POST /connections`).
ACCOUNT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")


class AuthConfigError(SegmentsError):
    """No usable key to verify (or sign) tokens; the message says how to configure one."""


class Unauthorized(SegmentsError):
    """A missing, malformed, badly signed or expired token; `reason` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    """Who the token speaks for: some accounts, or (admin) all of them."""

    accounts: frozenset[str]
    admin: bool = False

    def may(self, account_id: str) -> bool:
        return self.admin or account_id in self.accounts

    @property
    def only(self) -> frozenset[str] | None:
        """The accounts this caller is limited to; None for the admin."""
        return None if self.admin else self.accounts


#: Where `auth_middleware` leaves the caller on the request.
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


class TokenVerifier:
    """Verifies bearer tokens against a shared secret and/or the keys of a JWKS."""

    def __init__(self, *, secret: str | None = None, jwks: Mapping[str, Any] | None = None,
                 audience: str | None = None) -> None:
        if secret is None and jwks is None:
            raise AuthConfigError("a token verifier needs a secret or a JWKS")
        if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
            raise AuthConfigError(
                f"SEGMENTS_AUTH_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret.encode() if secret is not None else None
        self._keys: list[jwt.PyJWK] = _jwks_keys(jwks) if jwks is not None else []
        self.audience = audience

    def __repr__(self) -> str:
        return f"TokenVerifier(secret={'<hidden>' if self._secret else None}, " \
               f"jwks_keys={len(self._keys)})"

    def verify(self, token: str) -> Principal:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg == SYMMETRIC and self._secret is not None:
            key: bytes | jwt.PyJWK = self._secret
        elif alg in ASYMMETRIC:
            key = self._jwk(str(alg), kid)
        else:
            raise Unauthorized("token signed with an algorithm this server does not accept")
        try:
            claims = jwt.decode(
                token, key, algorithms=[str(alg)], audience=self.audience, leeway=LEEWAY_S,
                options={"require": ["exp"], "verify_aud": self.audience is not None})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("token signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {_safe(exc)}") from None
        return principal_of(claims)

    def _jwk(self, alg: str, kid: object) -> jwt.PyJWK:
        candidates = [k for k in self._keys if k.algorithm_name == alg
                      and (kid is None or k.key_id == kid)]
        if not candidates:
            raise Unauthorized("no key of this server verifies the token")
        return candidates[0]


def _safe(exc: Exception) -> str:
    """PyJWT's message names a claim or a format, never the token; capped anyway."""
    return str(exc)[:120]


def _jwks_keys(doc: Mapping[str, Any]) -> list[jwt.PyJWK]:
    raw = doc.get("keys")
    if not isinstance(raw, list) or not raw:
        raise AuthConfigError("SEGMENTS_AUTH_JWKS: the file holds no \"keys\"")
    keys = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise AuthConfigError(f"SEGMENTS_AUTH_JWKS: keys[{i}] is not an object")
        if entry.get("use", "sig") != "sig":
            continue
        if "d" in entry or entry.get("kty") == "oct":
            raise AuthConfigError(
                f"SEGMENTS_AUTH_JWKS: keys[{i}] is a private or shared key; the file must "
                "hold public keys only")
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            raise AuthConfigError(f"SEGMENTS_AUTH_JWKS: keys[{i}]: {exc}") from None
        if key.algorithm_name not in ASYMMETRIC:
            raise AuthConfigError(
                f"SEGMENTS_AUTH_JWKS: keys[{i}] is for {key.algorithm_name}; accepted: "
                + ", ".join(ASYMMETRIC))
        keys.append(key)
    if not keys:
        raise AuthConfigError("SEGMENTS_AUTH_JWKS: no signature key in the file")
    return keys


def principal_of(claims: Mapping[str, Any]) -> Principal:
    """The caller a verified token's claims describe; Unauthorized if they grant nothing."""
    scope = claims.get("scope", "")
    scopes = scope.split() if isinstance(scope, str) else scope
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise Unauthorized("invalid token: scope must be a string")
    admin = ADMIN_SCOPE in scopes
    accounts = claims.get("accounts", [])
    if not isinstance(accounts, list) or not all(
            isinstance(a, str) and ACCOUNT_ID.fullmatch(a) for a in accounts):
        raise Unauthorized("invalid token: accounts must be a list of account ids")
    if not admin and not accounts:
        raise Unauthorized(f"invalid token: neither accounts nor the {ADMIN_SCOPE} scope")
    return Principal(frozenset(accounts), admin)


def resolve_signing_secret(settings: Settings, *, env: Mapping[str, str] | None = None,
                           stack: Path | None = None) -> str | None:
    """The HS256 secret: configured, else (outside production, without a JWKS) the
    persisted development secret; None when only a JWKS is configured."""
    if settings.auth_secret:
        return settings.auth_secret
    if settings.auth_jwks:
        return None
    if is_production(env):
        raise AuthConfigError(
            "SEGMENTS_AUTH_SECRET (at least 32 bytes, e.g. from `openssl rand -base64 48`) "
            "or SEGMENTS_AUTH_JWKS (a JWKS file of public keys) is required when "
            "SEGMENTS_ENV=production")
    return dev_secret(DEV_SECRET_FILE, lambda: secrets.token_urlsafe(48).encode(),
                      "SEGMENTS_AUTH_SECRET", stack)


def resolve_verifier(settings: Settings, *, env: Mapping[str, str] | None = None,
                     stack: Path | None = None) -> TokenVerifier:
    """The verifier the configuration asks for; AuthConfigError if there is none."""
    secret = resolve_signing_secret(settings, env=env, stack=stack)
    jwks = None
    if settings.auth_jwks:
        try:
            jwks = json.loads(Path(settings.auth_jwks).read_text())
        except OSError as exc:
            raise AuthConfigError(
                f"SEGMENTS_AUTH_JWKS: cannot read {settings.auth_jwks}: {exc.strerror}"
            ) from None
        except ValueError:
            raise AuthConfigError(f"SEGMENTS_AUTH_JWKS: {settings.auth_jwks} is not JSON"
                                  ) from None
        if not isinstance(jwks, dict):
            raise AuthConfigError("SEGMENTS_AUTH_JWKS: the file must hold a JSON object")
    return TokenVerifier(secret=secret, jwks=jwks, audience=settings.auth_audience)


def mint_token(secret: str, *, accounts: Iterable[str] = (), admin: bool = False,
               ttl_s: float = 3600.0, audience: str | None = None,
               now: float | None = None) -> str:
    """An HS256 token for `accounts` (or every account, with `admin`)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"iat": issued, "exp": issued + int(ttl_s),
                              "accounts": sorted(set(accounts))}
    if admin:
        claims["scope"] = ADMIN_SCOPE
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm=SYMMETRIC)


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthorized("missing bearer token")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("malformed Authorization header (expected: Bearer <token>)")
    # A JWT is base64url and dots; other bytes reach us as surrogates, which PyJWT
    # fails to encode (UnicodeEncodeError, a 500) instead of refusing.
    if not token.isascii() or not token.strip().isprintable():
        raise Unauthorized("malformed bearer token")
    return token.strip()


def unauthorized(reason: str) -> web.Response:
    challenge = 'Bearer realm="segments"'
    if reason != "missing bearer token":
        challenge += ', error="invalid_token"'
    return web.Response(status=401, body=orjson.dumps({"error": reason}),
                        content_type="application/json",
                        headers={"WWW-Authenticate": challenge})


def auth_middleware(verifier: TokenVerifier, open_routes: Iterable[str]) -> Any:
    """Every request needs a valid bearer token except those of `open_routes` (route
    templates); the caller's `Principal` is left on the request (`principal()`)."""
    public = frozenset(open_routes)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if route_of(request) not in public:
            try:
                request[PRINCIPAL] = verifier.verify(bearer_token(request))
            except Unauthorized as exc:
                return unauthorized(exc.reason)
        return await handler(request)

    return middleware


def principal(request: web.Request) -> Principal:
    """The verified caller of a request that passed `auth_middleware`."""
    # A route the middleware left open has no caller: it may see no account.
    return request.get(PRINCIPAL) or Principal(frozenset())
