"""Sign webhook bodies the way Stripe does, for tests (the helper ships with the demo)."""

from __future__ import annotations

from connectors.signing import sign, signature

__all__ = ["sign", "signature"]
