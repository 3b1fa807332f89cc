"""Sign webhook bodies the way Stripe does: for the demo's feed, the tests and benchmarks.

`Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]` where each v1 is the
HMAC-SHA256 of `"{t}.{raw body}"` keyed with one endpoint secret (several during a
secret rotation). `connectors.webhooks` verifies exactly this with the official library.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

__all__ = ["sign", "signature"]


def signature(body: bytes, secret: str, timestamp: int) -> str:
    return hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secrets: str | Sequence[str], timestamp: int | None = None) -> str:
    """The Stripe-Signature header value for `body`, one v1 per secret."""
    t = int(time.time()) if timestamp is None else timestamp
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    return ",".join([f"t={t}", *(f"v1={signature(body, k, t)}" for k in keys)])
