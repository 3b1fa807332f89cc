"""`common.logs`: JSON lines or readable text, structured fields, one switch."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.logs import LogConfigError, configure, fields

pytestmark = pytest.mark.unit


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_when_not_a_terminal_with_fields_at_the_top_level() -> None:
    out = io.StringIO()
    assert configure(env={}, stream=out) == "json"
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("segments.test").exception(
            "GET %s %d", "/healthz", 200, extra=fields(status=200, ms=1.5, msg="not mine"))
    doc = json.loads(out.getvalue())
    assert doc["level"] == "error"
    assert doc["logger"] == "segments.test"
    assert doc["msg"] == "GET /healthz 200"  # a field never overwrites a base key
    assert (doc["status"], doc["ms"]) == (200, 1.5)
    assert doc["exc_type"] == "ValueError"
    assert "boom" in doc["traceback"]
    assert doc["ts"].endswith("Z")


def test_text_on_a_terminal_and_the_switch_wins() -> None:
    tty = Terminal()
    assert configure(env={}, stream=tty) == "text"
    logging.getLogger("segments.test").info("hello", extra=fields(route="/segments/{id}",
                                                                  note="two words"))
    line = tty.getvalue().strip()
    assert "INFO  segments.test  hello" in line
    assert 'route=/segments/{id} note="two words"' in line

    piped = io.StringIO()
    assert configure(env={"SEGMENTS_LOG_FORMAT": "text"}, stream=piped) == "text"
    assert configure(env={"SEGMENTS_LOG_FORMAT": "JSON"}, stream=Terminal()) == "json"


def test_levels_and_bad_values() -> None:
    out = io.StringIO()
    configure(env={"SEGMENTS_LOG_LEVEL": "warning"}, stream=out, level="INFO")
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").warning("shown")
    assert "hidden" not in out.getvalue()
    assert "shown" in out.getvalue()
    configure(env={}, stream=out, level="WARNING")
    assert logging.getLogger().level == logging.WARNING
    with pytest.raises(LogConfigError, match="SEGMENTS_LOG_FORMAT"):
        configure(env={"SEGMENTS_LOG_FORMAT": "xml"}, stream=out)
    with pytest.raises(LogConfigError, match="SEGMENTS_LOG_LEVEL"):
        configure(env={"SEGMENTS_LOG_LEVEL": "loud"}, stream=out)


def test_library_level() -> None:
    out = io.StringIO()
    configure(env={}, stream=out, level="INFO")
    assert logging.getLogger("aiokafka").level == logging.WARNING
    configure(env={"SEGMENTS_LOG_LEVEL": "debug"}, stream=out)
    assert logging.getLogger("aiokafka").level == logging.DEBUG
    configure(env={"SEGMENTS_LIBRARY_LOG_LEVEL": "info"}, stream=out, level="WARNING")
    logging.getLogger("aiokafka.consumer").info("joined the group")
    assert "joined the group" in out.getvalue()
    with pytest.raises(LogConfigError, match="SEGMENTS_LIBRARY_LOG_LEVEL"):
        configure(env={"SEGMENTS_LIBRARY_LOG_LEVEL": "chatty"}, stream=out)


def test_a_log_file_is_json_by_default(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "demo.log"
    assert configure(env={}, filename=path) == "json"
    logging.getLogger("segments.test").warning("to the file")
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert json.loads(path.read_text())["msg"] == "to the file"
