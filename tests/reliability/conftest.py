"""The reliability suite's watchers: every log line, output and Redis command is scanned.

- Logging: the root logger is at DEBUG while this package runs, and a handler passes
  every record (message and traceback) through `LEDGER.check`.
- Captured stdout/stderr and captured log sections of every test report are scanned.
- Redis: a `MONITOR` connection to the session Redis sees every command (with its
  values) from the first test that uses the broker on, deleted keys included.
- `test_zz_secrets.py` runs last (moved there at collection) and asserts no leak.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from tests.reliability.ledger import LEDGER

SCAN_LAST = "test_zz_secrets.py"
PACKAGE = "tests/reliability/"


class _ScanHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a bad format string is the caller's bug, not a leak
            text = f"{record.msg!r} {record.args!r}"
        LEDGER.check("log record", text)


@pytest.fixture(scope="package", autouse=True)
def _scan_every_log_record() -> Iterator[None]:
    root = logging.getLogger()
    handler = _ScanHandler()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The secrets scan goes after the rest of this package, which it checks."""
    last = [i for i in items if i.nodeid.split("::")[0].endswith(SCAN_LAST)]
    if not last:
        return
    rest = [i for i in items if i not in last]
    ours = [n for n, i in enumerate(rest) if i.nodeid.startswith(PACKAGE)]
    at = ours[-1] + 1 if ours else len(rest)
    items[:] = rest[:at] + last + rest[at:]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for title, text in report.sections:
        LEDGER.check(f"captured output ({title})", text)
    if report.longrepr is not None:
        LEDGER.check("test report", str(report.longrepr))


class RedisMonitor:
    """`MONITOR` on a raw socket, in a thread: every command Redis executes is checked."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.sock = socket.create_connection((parsed.hostname or "127.0.0.1",
                                              parsed.port or 6379), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self.sock.settimeout(None)
        self.thread = threading.Thread(target=self._run, name="redis-monitor", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\r\n")
            for line in lines:
                LEDGER.check_bytes("redis command", line)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


@pytest.fixture(scope="package")
def redis_monitor(redis_url: str) -> Iterator[RedisMonitor]:
    monitor = RedisMonitor(redis_url)
    try:
        yield monitor
    finally:
        monitor.stop()


@pytest.fixture(autouse=True)
def _record_namespace(request: pytest.FixtureRequest) -> None:
    """Remember the test's topic prefix, and watch Redis once a test uses it."""
    if "settings" in request.fixturenames:
        request.getfixturevalue("redis_monitor")
    if "topic_prefix" in request.fixturenames:
        LEDGER.prefixes.add(request.getfixturevalue("topic_prefix"))
