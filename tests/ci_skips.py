"""Under CI=true a skipped test fails the run, unless an allow-list entry names it.

A skip hides a missing dependency or a broken fixture as well as a test that does not
apply: on a laptop that is a note in the summary, in CI it would be coverage lost
without anyone seeing it. `tests/conftest.py` registers `CiSkips` with the suite's
allow-list; each entry says which tests (node id, fnmatch pattern), which skip reason
(a substring of it) and why that skip is expected in CI.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class AllowedSkip:
    nodeid: str
    reason: str
    why: str

    def allows(self, nodeid: str, reason: str) -> bool:
        return fnmatch.fnmatchcase(nodeid, self.nodeid) and self.reason in reason


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


class CiSkips:
    """The plugin: turns a skip that no entry of `allowed` names into a failure."""

    def __init__(self, allowed: Sequence[AllowedSkip], active: bool) -> None:
        self.allowed = tuple(allowed)
        self.active = active

    def _forbidden(self, report: pytest.TestReport | pytest.CollectReport) -> str | None:
        if not (self.active and report.skipped) or hasattr(report, "wasxfail"):
            return None
        reason = skip_reason(report)
        if any(entry.allows(report.nodeid, reason) for entry in self.allowed):
            return None
        return (f"skipped under CI=true, and no entry of CI_ALLOWED_SKIPS (tests/conftest.py)"
                f" allows it: {reason}")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[Any, Any, Any]:
        report: pytest.TestReport = yield
        message = self._forbidden(report)
        if message is not None:
            report.outcome = "failed"
            report.longrepr = message
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(
            self, collector: pytest.Collector) -> Generator[Any, Any, Any]:
        # A module-level skip (`pytest.skip(allow_module_level=True)`, `importorskip`).
        report: pytest.CollectReport = yield
        message = self._forbidden(report)
        if message is not None:
            report.outcome = "failed"
            report.longrepr = message
        return report
