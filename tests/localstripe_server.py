"""localstripe (the Stripe emulator) as a real server on loopback, for tests.

The implementation ships with the demo (`segments.localstripe`); this module keeps the
names the tests import.
"""

from __future__ import annotations

from pathlib import Path

from segments.localstripe import free_port, main, running_localstripe

__all__ = ["REPO", "free_port", "main", "running_localstripe"]

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    main()
