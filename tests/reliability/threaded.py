"""An event loop in a thread, so that synchronous hypothesis tests can drive async code.

Hypothesis runs each example as a plain function call; the connector (aiohttp, aiokafka,
redis.asyncio) needs a running loop. The loop runs in a daemon thread for the duration
of a test; `run` submits a coroutine to it and waits, with a deadline.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from common.settings import Settings
from tests.connector_harness import Connector, running_connector

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop",
                                       daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextmanager
def connector_in_thread(settings: Settings, **kw: Any) -> Iterator[tuple[LoopThread, Connector]]:
    """`running_connector` on a loop in a background thread."""
    loop = LoopThread()
    manager = running_connector(settings, **kw)
    try:
        connector = loop.run(manager.__aenter__())
        try:
            yield loop, connector
        finally:
            loop.run(manager.__aexit__(None, None, None))
    finally:
        loop.close()


def port_of(connector: Connector) -> int:
    return int(connector.url.rsplit(":", 1)[1])
