"""`STRIPE_LOG` (read by stripe-python at import) cannot make the connector print
Stripe's request and response bodies: the library prints them straight to stderr,
past every logging filter, and a webhook endpoint's response carries its secret."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

SECRET = "whsec_must_never_be_printed"
# What the library's request code does with a response (stripe/_api_requestor.py).
SCRIPT = f"""
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
from stripe import _util
if sys.argv[1] == "guarded":
    from connectors.stripe_account import guard_stripe_logging
    guard_stripe_logging()
_util.log_debug("API response body", body='{{"secret": "{SECRET}"}}')
_util.log_info("Request to Stripe api", path="/v1/webhook_endpoints")
"""


def _stderr(mode: str, level: str) -> str:
    env = {**os.environ, "STRIPE_LOG": level}
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], env=env, check=True,
                          capture_output=True, text=True, timeout=60)
    return done.stderr


@pytest.mark.parametrize("level", ["debug", "info"])
def test_stripe_log_cannot_print_bodies_in_the_connector(level: str) -> None:
    unguarded = _stderr("plain", level)
    # The hazard is real without the guard.
    assert "Request to Stripe api" in unguarded
    assert level == "info" or SECRET in unguarded
    guarded = _stderr("guarded", level)
    assert SECRET not in guarded
    assert "Request to Stripe api" not in guarded


def test_the_connector_app_applies_the_guard() -> None:
    script = (
        "import stripe\nfrom stripe import _util\n"
        "from common.settings import Settings\n"
        "from connectors.server import create_app\n"
        "create_app(Settings(secret_key='x' * 43 + '=', auth_secret='s'), "
        "start_backfill=False)\n"
        "print(stripe.log, _util.STRIPE_LOG, _util._console_log_level())\n"
    )
    env = {**os.environ, "STRIPE_LOG": "debug"}
    done = subprocess.run([sys.executable, "-c", script], env=env, check=True,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["None", "None", "None"]
