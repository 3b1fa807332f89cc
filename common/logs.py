"""Logs: JSON lines for machines, readable lines on a terminal, one switch for both.

Every command calls `configure()` at startup (`segments.cli` does it once for all):

- `SEGMENTS_LOG_FORMAT=json|text`: default `text` when stderr is a terminal, else
  `json` (one object per line: `ts`, `level`, `logger`, `msg`, then the record's fields);
- `SEGMENTS_LOG_LEVEL` (default `INFO`): the root level;
- `SEGMENTS_LIBRARY_LOG_LEVEL`: the level of the Kafka and Stripe clients' own loggers
  (default `WARNING`, or everything at a root level of `DEBUG`). `INFO` shows the
  consumer group's protocol (joins, syncs, why a member rejoins) without the rest of
  DEBUG.

Structured fields travel with a record as `extra=fields(key=value, ...)`: JSON puts them
at the top level of the object, text appends them as `key=value`. The per-request
summary lines of the connector and the query API are written that way, so a log
pipeline can filter on `status` or `route` without parsing the message.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import orjson

from common.errors import SegmentsError

__all__ = ["FORMATS", "LogConfigError", "configure", "fields"]

FORMATS = ("json", "text")
#: Attribute of a LogRecord that carries its structured fields.
FIELDS_ATTR = "fields"
#: Libraries whose INFO lines describe their own housekeeping, not ours.
QUIET_LOGGERS = ("aiokafka", "stripe")


class LogConfigError(SegmentsError, ValueError):
    """SEGMENTS_LOG_FORMAT or SEGMENTS_LOG_LEVEL has a value we do not know."""


def fields(**values: Any) -> dict[str, Any]:
    """`log.info("…", extra=fields(status=200, ms=1.2))`: structured fields of a record."""
    return {FIELDS_ATTR: values}


def record_fields(record: logging.LogRecord) -> Mapping[str, Any]:
    found = getattr(record, FIELDS_ATTR, None)
    return found if isinstance(found, Mapping) else {}


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a record's fields never overwrite the four base keys."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            doc.setdefault(key, value)
        if record.exc_info and record.exc_info[0] is not None:
            doc["exc_type"] = record.exc_info[0].__name__
            doc["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """`23:55:01.123 INFO  segments.connector.access  POST /healthz 200  ms=0.4`."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = (f"{stamp}.{int(record.msecs):03d} {record.levelname:<5} {record.name}  "
                f"{record.getMessage()}")
        extra = record_fields(record)
        if extra:
            line += "  " + " ".join(f"{k}={_text(v)}" for k, v in extra.items())
        if record.exc_info and record.exc_info[0] is not None:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if text and " " not in text else orjson.dumps(text).decode()


def resolve_format(env: Mapping[str, str], stream: TextIO) -> str:
    raw = env.get("SEGMENTS_LOG_FORMAT", "").strip().lower()
    if not raw:
        try:
            return "text" if stream.isatty() else "json"
        except (AttributeError, ValueError):  # a closed or unusual stream
            return "json"
    if raw not in FORMATS:
        raise LogConfigError(f"SEGMENTS_LOG_FORMAT must be json or text (got {raw!r})")
    return raw


def resolve_level(env: Mapping[str, str], default: str = "INFO",
                  variable: str = "SEGMENTS_LOG_LEVEL") -> int:
    raw = (env.get(variable, "").strip() or default).upper()
    level = logging.getLevelName(raw)
    if not isinstance(level, int):
        raise LogConfigError(
            f"{variable} must be DEBUG, INFO, WARNING, ERROR or CRITICAL (got {raw!r})")
    return level


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is *now*: a handler bound at start-up to a stream
    that is later replaced and closed (a test runner's capture) would fail on every
    record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure(
    *,
    env: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
    filename: Path | None = None,
    level: str | None = None,
) -> str:
    """Install one root handler (stderr, or `filename`); returns the format chosen.

    `level` is a default that SEGMENTS_LOG_LEVEL overrides. A log file is always JSON
    unless SEGMENTS_LOG_FORMAT says text. Raises LogConfigError for unknown values.
    """
    env = os.environ if env is None else env
    stream = sys.stderr if stream is None else stream
    handler: logging.Handler
    if filename is not None:
        filename.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(filename, encoding="utf-8")
        fmt = env.get("SEGMENTS_LOG_FORMAT", "").strip().lower() or "json"
        if fmt not in FORMATS:
            raise LogConfigError(f"SEGMENTS_LOG_FORMAT must be json or text (got {fmt!r})")
    else:
        fmt = resolve_format(env, stream)
        handler = _StderrHandler() if stream is sys.stderr else logging.StreamHandler(stream)
    root_level = resolve_level(env, level or "INFO")
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    # Replace what an earlier `configure` installed, and nothing else (a host process,
    # such as a test runner, may have handlers of its own on the root logger).
    for old in root.handlers[:]:
        if getattr(old, "_segments_handler", False):
            root.removeHandler(old)
            old.close()
    setattr(handler, "_segments_handler", True)  # noqa: B010 (a marker on a stdlib object)
    root.addHandler(handler)
    root.setLevel(root_level)
    # All of theirs at DEBUG, their warnings only otherwise, unless told.
    libraries = resolve_level(env, "WARNING" if root_level > logging.DEBUG else "DEBUG",
                              "SEGMENTS_LIBRARY_LOG_LEVEL")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(libraries)
    logging.captureWarnings(True)
    return fmt
