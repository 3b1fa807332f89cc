"""`segments token`: what it prints verifies with the servers' verifier, and only that."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.auth import TokenVerifier, Unauthorized
from segments.cli import main
from segments.commands.token import parse_ttl

pytestmark = pytest.mark.unit

SECRET = "t" * 48


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEGMENTS_AUTH_SECRET", SECRET)
    monkeypatch.setenv("SEGMENTS_STACK_DIR", str(tmp_path))
    for name in ("SEGMENTS_AUTH_JWKS", "SEGMENTS_AUTH_AUDIENCE", "SEGMENTS_ENV"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("env")
def test_account_and_admin_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    verifier = TokenVerifier(secret=SECRET)
    assert main(["token", "--account", "acme", "--account", "globex", "--ttl", "15m"]) == 0
    caller = verifier.verify(capsys.readouterr().out.strip())
    assert (caller.accounts, caller.admin) == (frozenset({"acme", "globex"}), False)
    assert main(["token", "--admin"]) == 0
    assert verifier.verify(capsys.readouterr().out.strip()).admin
    assert main(["token", "--admin"]) == 0
    printed = capsys.readouterr().out.strip()
    with pytest.raises(Unauthorized, match="signature"):
        TokenVerifier(secret="x" * 48).verify(printed)


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize("argv", [["token"], ["token", "--account", "a b"],
                                  ["token", "--admin", "--ttl", "2y"],
                                  ["token", "--admin", "--ttl", "31d"]])
def test_refused_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().out == ""


def test_production_without_a_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SEGMENTS_ENV", "production")
    monkeypatch.setenv("SEGMENTS_STACK_DIR", str(tmp_path))
    monkeypatch.delenv("SEGMENTS_AUTH_SECRET", raising=False)
    monkeypatch.delenv("SEGMENTS_AUTH_JWKS", raising=False)
    assert main(["token", "--admin"]) == 2
    assert "SEGMENTS_AUTH_SECRET" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_ttl() -> None:
    assert [parse_ttl(t) for t in ("90", "90s", "15m", "1h", "7d")] == [90, 90, 900, 3600,
                                                                         604800]
