"""Run a stream worker inside the test's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from stream.app import StreamApp
from tests.waiting import async_wait_for


@asynccontextmanager
async def running(app: StreamApp, timeout: float = 60.0) -> AsyncIterator[StreamApp]:
    """Start `app` and wait until it owns partitions; fail the test if it failed."""
    await app.start()
    try:
        async def assigned() -> bool:
            if app.failed is not None:
                raise AssertionError(f"the worker failed: {app.failed!r}")
            return bool(app.assigned())

        await async_wait_for(assigned, timeout, what="partition assignment")
        yield app
        assert app.failed is None, f"the worker failed: {app.failed!r}"
    finally:
        await app.stop()
