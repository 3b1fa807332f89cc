"""Wait on a condition with a deadline: the only way tests here wait for anything."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class TimedOut(AssertionError):
    pass


def wait_for(condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.1,
             what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimedOut(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(interval)


async def async_wait_for(condition: Callable[[], Awaitable[T]], timeout: float = 30.0,
                         interval: float = 0.1, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimedOut(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        await asyncio.sleep(interval)
