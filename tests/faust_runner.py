"""Run a Faust app inside the test's event loop, with its data dir in a temp folder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.waiting import async_wait_for


@asynccontextmanager
async def running(app: Any, timeout: float = 60.0) -> AsyncIterator[Any]:
    """Start `app` (a faust.App) and wait until it has partitions assigned."""
    await app.start()
    try:
        async def assigned() -> bool:
            return bool(app.consumer.assignment()) and not app.rebalancing

        await async_wait_for(assigned, timeout, what="Faust partition assignment")
        yield app
    finally:
        await app.stop()
        # Let aiokafka's background tasks see their cancellation before the loop closes.
        await asyncio.sleep(0)
