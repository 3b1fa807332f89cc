"""A clock tests move by hand, injected into the stream instead of sleeping days."""

from __future__ import annotations

import time


class ManualClock:
    def __init__(self, now: int | None = None) -> None:
        self.now = int(time.time()) if now is None else now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += seconds
