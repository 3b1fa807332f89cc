"""`common.diagnostics`: SIGUSR1 logs where each asyncio task of the process waits."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from common.diagnostics import dump_tasks, install_task_dump

pytestmark = pytest.mark.unit


async def commit(event: asyncio.Event) -> None:
    await event.wait()


async def stuck_in_commit(event: asyncio.Event) -> None:
    await commit(event)


async def test_dump_names_each_task_and_where_it_waits(
        caplog: pytest.LogCaptureFixture) -> None:
    event = asyncio.Event()
    task = asyncio.create_task(stuck_in_commit(event), name="partition-7")
    await asyncio.sleep(0)  # let it reach its await
    with caplog.at_level(logging.WARNING, logger="common.diagnostics"):
        count = dump_tasks()
    event.set()
    await task
    assert count == 2  # this test's own task and the stuck one
    dumps = [r.getMessage() for r in caplog.records if "task partition-7" in r.getMessage()]
    assert len(dumps) == 1
    # The whole await chain, down to the library call that waits.
    assert "in stuck_in_commit" in dumps[0]
    assert "in commit" in dumps[0]
    assert "locks.py" in dumps[0]


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 on this platform")
async def test_sigusr1_dumps(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    install_task_dump(loop)
    try:
        with caplog.at_level(logging.WARNING, logger="common.diagnostics"):
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(100):  # the handler runs on a later loop iteration
                if any("task dump" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.01)
        assert any("task dump: " in r.getMessage() for r in caplog.records)
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
