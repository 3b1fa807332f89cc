"""Bearer tokens: what verifies, what is refused and why, and where the keys come from."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from common.auth import (
    ADMIN_SCOPE,
    AuthConfigError,
    Principal,
    TokenVerifier,
    Unauthorized,
    mint_token,
    resolve_signing_secret,
    resolve_verifier,
)
from common.settings import Settings

pytestmark = pytest.mark.unit

SECRET = "s" * 48
OTHER = "o" * 48


#: Far enough ahead that a token built when the tests are collected is still valid when
#: a long suite finally runs them (a full run under load took 18 minutes).
LATER = int(time.time()) + 365 * 86400


def claims(**extra: Any) -> dict[str, Any]:
    return {"exp": LATER, "accounts": ["acme"], **extra}


def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthorized) as caught:
        verifier.verify(token)
    return caught.value.reason


def test_hs256_accounts_and_admin() -> None:
    v = TokenVerifier(secret=SECRET)
    assert v.verify(mint_token(SECRET, accounts=["acme", "globex"])) == Principal(
        frozenset({"acme", "globex"}))
    admin = v.verify(mint_token(SECRET, admin=True))
    assert admin.admin
    assert admin.may("anyone")
    assert admin.only is None
    scoped = v.verify(jwt.encode(claims(scope=["read", ADMIN_SCOPE]), SECRET, "HS256"))
    assert scoped.admin
    assert not v.verify(mint_token(SECRET, accounts=["acme"])).may("globex")
    assert SECRET not in repr(v)


@pytest.mark.parametrize(("token", "reason"), [
    ("", "malformed token"),
    ("not.a.jwt", "malformed token"),
    ("x" * 9000, "malformed token"),
    (jwt.encode(claims(), None, algorithm="none"), "algorithm"),
    (jwt.encode(claims(), SECRET + "x" * 20, "HS512"), "algorithm"),
    (mint_token(OTHER, accounts=["acme"]), "signature"),
    (mint_token(SECRET, accounts=["acme"], ttl_s=-3600), "expired"),
    (jwt.encode({"accounts": ["acme"]}, SECRET, "HS256"), '"exp"'),
    (jwt.encode({"exp": LATER}, SECRET, "HS256"), "neither accounts"),
    (jwt.encode(claims(accounts="acme"), SECRET, "HS256"), "accounts must be"),
    (jwt.encode(claims(accounts=["a b"]), SECRET, "HS256"), "accounts must be"),
    (jwt.encode(claims(scope=7), SECRET, "HS256"), "scope must be"),
    (jwt.encode(claims(exp="soon"), SECRET, "HS256"), "invalid token"),
])
def test_refused(token: str, reason: str) -> None:
    assert reason in refused(TokenVerifier(secret=SECRET), token)


def test_audience_when_configured() -> None:
    v = TokenVerifier(secret=SECRET, audience="segments")
    assert v.verify(mint_token(SECRET, accounts=["a"], audience="segments")).may("a")
    assert "Audience" in refused(v, mint_token(SECRET, accounts=["a"], audience="billing"))
    assert "aud" in refused(v, mint_token(SECRET, accounts=["a"]))


def test_short_secret_refused() -> None:
    with pytest.raises(AuthConfigError, match="at least 32 bytes"):
        TokenVerifier(secret="short")


def base64url(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def _public_jwk(private: Any, kid: str) -> dict[str, Any]:
    algorithm = (jwt.algorithms.RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey)
                 else jwt.algorithms.ECAlgorithm)
    doc: dict[str, Any] = json.loads(algorithm.to_jwk(private.public_key()))
    doc["kid"] = kid
    return doc


def test_jwks_rs256_es256_and_no_algorithm_confusion(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [_public_jwk(rsa_key, "r1"), _public_jwk(ec_key, "e1")]}))
    v = resolve_verifier(Settings(auth_jwks=str(path)), env={"SEGMENTS_ENV": "production"})
    rs = jwt.encode(claims(), rsa_key, "RS256", headers={"kid": "r1"})
    es = jwt.encode(claims(accounts=["globex"]), ec_key, "ES256", headers={"kid": "e1"})
    assert v.verify(rs).may("acme")
    assert v.verify(es).may("globex")
    # An HS256 token "signed" with the public key, as an attacker who read the JWKS would.
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = b".".join(base64url(json.dumps(part).encode())
                              for part in ({"alg": "HS256", "typ": "JWT"}, claims()))
    mac = hmac.new(pem, signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + base64url(mac)).decode()
    assert "algorithm" in refused(v, forged)
    # Another key pair of the same kind, and a kid nobody knows.
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert "signature" in refused(v, jwt.encode(claims(), stranger, "RS256",
                                                headers={"kid": "r1"}))
    assert "no key" in refused(v, jwt.encode(claims(), rsa_key, "RS256",
                                             headers={"kid": "zz"}))
    assert "no key" in refused(v, jwt.encode(claims(), ec_key, "ES256", headers={"kid": "r1"}))


def test_jwks_with_a_private_or_shared_key_is_refused(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key))
    path = tmp_path / "jwks.json"
    for keys, message in [([private], "private"), ([{"kty": "oct", "k": "c2VjcmV0"}], "shared"),
                          ([], "no \"keys\"")]:
        path.write_text(json.dumps({"keys": keys}))
        with pytest.raises(AuthConfigError, match=message):
            resolve_verifier(Settings(auth_jwks=str(path)), env={})
    with pytest.raises(AuthConfigError, match="cannot read"):
        resolve_verifier(Settings(auth_jwks=str(tmp_path / "missing.json")), env={})


def test_production_needs_a_key_dev_secret_is_generated_once(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="SEGMENTS_AUTH_SECRET"):
        resolve_verifier(Settings(), env={"SEGMENTS_ENV": "production"}, stack=tmp_path)
    assert not list(tmp_path.iterdir())
    first = resolve_signing_secret(Settings(), env={}, stack=tmp_path)
    assert first is not None
    assert len(first) >= 32
    (file,) = tmp_path.iterdir()
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert resolve_signing_secret(Settings(), env={}, stack=tmp_path) == first
    v = resolve_verifier(Settings(), env={}, stack=tmp_path)
    assert v.verify(mint_token(first, accounts=["acme"])).may("acme")
    configured = Settings(auth_secret=SECRET)
    assert resolve_signing_secret(configured, env={"SEGMENTS_ENV": "production"}) == SECRET


def _segment(doc: object) -> str:
    return base64url(json.dumps(doc).encode()).decode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=10)


@settings(max_examples=150, deadline=None)
@given(header=st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "jku"]),
                              json_values, max_size=4),
       claims=st.dictionaries(st.sampled_from(["exp", "nbf", "iat", "aud", "accounts",
                                               "scope", "sub"]), json_values, max_size=6),
       signature=st.text(max_size=40), raw=st.text(max_size=200))
def test_fuzzed_tokens_are_refused_cleanly(header: dict[str, Any], claims: dict[str, Any],
                                           signature: str, raw: str) -> None:
    """Whatever a caller sends, the verifier answers Unauthorized (a 401), never crashes."""
    v = TokenVerifier(secret=SECRET)
    for candidate in (raw, f"{_segment(header)}.{_segment(claims)}.{signature}",
                      f"{_segment({**header, 'alg': 'HS256'})}.{_segment(claims)}.{signature}"):
        with pytest.raises(Unauthorized):
            v.verify(candidate)
