"""What a running process is waiting on, on request (SIGUSR1).

A worker that stops making progress without an error (a rebalance that never ends, a
commit that never returns) logs nothing: its event loop is idle, waiting on something.
`kill -USR1 <pid>` makes it log where each of its asyncio tasks is suspended, which is
what `py-spy dump` shows for threads and what an operator (or the chaos test, on a
failure) needs to tell a stuck coordinator call from a stuck commit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import Any

__all__ = ["DUMP_MARKER", "dump_tasks", "install_task_dump"]

log = logging.getLogger(__name__)

#: The first line of every dump (what a reader of the logs looks for).
DUMP_MARKER = "task dump:"
#: Frames shown per task: the innermost ones say what it waits on.
FRAMES = 40


def await_chain(coro: Any) -> list[FrameType]:
    """The frames of a suspended coroutine and of everything it awaits, outermost
    first. `Task.get_stack()` gives only the task's own coroutine frame, which for
    `await consumer.start()` hides the library call that actually waits."""
    frames: list[FrameType] = []
    while coro is not None and len(frames) < FRAMES:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


def describe(task: asyncio.Task[Any]) -> str:
    lines = [repr(task)[:300]]
    for frame in await_chain(task.get_coro()):
        lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in "
                     f"{frame.f_code.co_name}")
    return "\n".join(lines)


def dump_tasks() -> int:
    """Log (at WARNING, so it shows at any usual level) where every asyncio task is
    suspended; returns how many tasks there were."""
    tasks = sorted(asyncio.all_tasks(), key=lambda task: task.get_name())
    log.warning("%s %d asyncio tasks", DUMP_MARKER, len(tasks))
    for task in tasks:
        log.warning("task %s: %s", task.get_name(), describe(task))
    return len(tasks)


def install_task_dump(loop: asyncio.AbstractEventLoop) -> None:
    """SIGUSR1 dumps the tasks' stacks (Unix only; a no-op elsewhere)."""
    usr1 = getattr(signal, "SIGUSR1", None)
    if usr1 is not None:
        loop.add_signal_handler(usr1, dump_tasks)
