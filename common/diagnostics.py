"""What a running process is waiting on, on request (SIGUSR1).

A worker that stops making progress without an error (a rebalance that never ends, a
commit that never returns) logs nothing: its event loop is idle, waiting on something.
`kill -USR1 <pid>` makes it log where each of its asyncio tasks is suspended, which is
what `py-spy dump` shows for threads and what an operator (or the chaos test, on a
failure) needs to tell a stuck coordinator call from a stuck commit.
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal

__all__ = ["dump_tasks", "install_task_dump"]

log = logging.getLogger(__name__)

#: Frames shown per task: the innermost ones say what it waits on.
FRAMES = 12


def dump_tasks() -> int:
    """Log (at WARNING, so it shows at any usual level) every asyncio task's stack;
    returns how many tasks there were."""
    tasks = sorted(asyncio.all_tasks(), key=lambda task: task.get_name())
    log.warning("task dump: %d asyncio tasks", len(tasks))
    for task in tasks:
        out = io.StringIO()
        task.print_stack(limit=FRAMES, file=out)
        log.warning("task %s:\n%s", task.get_name(), out.getvalue().rstrip())
    return len(tasks)


def install_task_dump(loop: asyncio.AbstractEventLoop) -> None:
    """SIGUSR1 dumps the tasks' stacks (Unix only; a no-op elsewhere)."""
    usr1 = getattr(signal, "SIGUSR1", None)
    if usr1 is not None:
        loop.add_signal_handler(usr1, dump_tasks)
