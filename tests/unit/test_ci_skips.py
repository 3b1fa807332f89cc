"""The CI skip guard, run for real: pytest in a subprocess on generated tests, with the
suite's own `pytest_configure` (CI detection and registration), CI=true and not."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import conftest
from tests.ci_skips import AllowedSkip, CiSkips

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

CONFTEST = """
from tests import conftest
from tests.ci_skips import AllowedSkip

# The suite's hook with one allow-list entry for this run (the real list is empty).
conftest.CI_ALLOWED_SKIPS = (
    AllowedSkip("test_generated.py::test_allowed*", "a reason CI accepts", "the test"),)
pytest_configure = conftest.pytest_configure
"""

TESTS = """
import pytest


def test_passes():
    pass


def test_skipped():
    pytest.skip("the dependency is missing")


@pytest.mark.skipif(True, reason="a condition nobody checked")
def test_skipped_by_mark():
    pass


def test_allowed():
    pytest.skip("a reason CI accepts, and more")


def test_allowed_pattern_but_other_reason():
    pytest.skip("something else")


@pytest.mark.xfail(reason="known bug", strict=True)
def test_expected_failure():
    assert False
"""

MODULE_SKIP = """
import pytest

pytest.importorskip("a_module_that_does_not_exist_here")


def test_never_collected():
    pass
"""


def run(tmp_path: Path, ci: str | None) -> tuple[int, dict[str, str]]:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_generated.py").write_text(textwrap.dedent(TESTS))
    (tmp_path / "test_module_skip.py").write_text(textwrap.dedent(MODULE_SKIP))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(ROOT)
    env.pop("CI", None)
    if ci is not None:
        env["CI"] = ci
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q",
         "--continue-on-collection-errors", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    outcomes = {}  # node id -> outcome; a skip is reported as "SKIPPED: <reason>"
    for line in done.stdout.splitlines():
        if found := re.match(r"(PASSED|FAILED|ERROR|XFAIL) (\S+)", line):
            outcomes[found.group(2)] = found.group(1)
        elif found := re.match(r"SKIPPED \[\d+\] (\S+?):\d+: (.*)", line):
            outcomes[f"SKIPPED: {found.group(2)}"] = found.group(1)
    return done.returncode, outcomes


def test_under_ci_a_skip_fails_the_run_unless_allowed(tmp_path: Path) -> None:
    code, outcomes = run(tmp_path, "true")
    assert code == 1, outcomes
    assert outcomes == {
        "test_generated.py::test_passes": "PASSED",
        "test_generated.py::test_skipped": "FAILED",
        "test_generated.py::test_skipped_by_mark": "ERROR",  # in setup: an error
        "SKIPPED: a reason CI accepts, and more": "test_generated.py",  # the allowed one
        "test_generated.py::test_allowed_pattern_but_other_reason": "FAILED",
        "test_generated.py::test_expected_failure": "XFAIL",
        "test_module_skip.py": "ERROR",
    }


def test_outside_ci_skips_stay_skips(tmp_path: Path) -> None:
    code, outcomes = run(tmp_path, None)
    assert code == 0, outcomes
    assert outcomes == {
        "test_generated.py::test_passes": "PASSED",
        "SKIPPED: the dependency is missing": "test_generated.py",
        "SKIPPED: a condition nobody checked": "test_generated.py",
        "SKIPPED: a reason CI accepts, and more": "test_generated.py",
        "SKIPPED: something else": "test_generated.py",
        "test_generated.py::test_expected_failure": "XFAIL",
        "SKIPPED: could not import 'a_module_that_does_not_exist_here': No module named "
        "'a_module_that_does_not_exist_here'": "test_module_skip.py",
    }


def test_the_suite_registers_the_guard_with_its_allow_list(
        pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("ci-skips")
    assert isinstance(plugin, CiSkips)
    assert plugin.allowed == conftest.CI_ALLOWED_SKIPS
    assert plugin.active == conftest.IN_CI
    for entry in conftest.CI_ALLOWED_SKIPS:
        assert isinstance(entry, AllowedSkip)
        assert entry.why.strip(), f"{entry}: say why CI may skip it"
