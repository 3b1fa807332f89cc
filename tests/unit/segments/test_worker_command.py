"""`segments worker`: a bad environment value fails that command clearly, before it
touches Kafka, and never breaks `--help`."""

from __future__ import annotations

from pathlib import Path

import pytest

from segments.cli import main

pytestmark = pytest.mark.unit


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A broker nobody listens on: reaching it would hang or fail differently."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("SEGMENTS_STACK_DIR", str(tmp_path))


@pytest.mark.parametrize("name", ["SEGMENTS_SESSION_TIMEOUT_S", "SEGMENTS_WORKER_QUERY_PORT"])
def test_help_works_whatever_the_environment(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str],
                                             name: str) -> None:
    monkeypatch.setenv(name, "soon")
    with pytest.raises(SystemExit) as exited:
        main(["worker", "--help"])
    assert exited.value.code == 0
    assert "--session-timeout" in capsys.readouterr().out


@pytest.mark.usefixtures("unreachable")
@pytest.mark.parametrize(("name", "value", "says"), [
    ("SEGMENTS_SESSION_TIMEOUT_S", "soon", "SEGMENTS_SESSION_TIMEOUT_S must be a number"),
    ("SEGMENTS_SESSION_TIMEOUT_S", "3", "between 6 and 1800"),
    ("SEGMENTS_WORKER_QUERY_PORT", "x", "SEGMENTS_WORKER_QUERY_PORT must be an integer"),
])
def test_a_bad_value_stops_the_worker_with_its_name(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        name: str, value: str, says: str) -> None:
    monkeypatch.setenv(name, value)
    assert main(["worker", "--no-email-lookup", "--no-envelope-check"]) == 2
    assert says in capsys.readouterr().err


@pytest.mark.usefixtures("unreachable")
def test_the_flag_is_checked_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--session-timeout", "2000", "--no-email-lookup"]) == 2
    err = capsys.readouterr().err
    assert "between 6 and 1800" in err
    assert "--session-timeout" in err
