"""Sampling profiles of a worker process with py-spy, summarised as shares.

`Profiler(pid, path)` attaches py-spy (`record --format raw`, collapsed stacks) to a
running process and stops it on `stop()`. `top(path)` reads the collapsed stacks and
returns, per function, its self share (samples where it is the innermost frame) and its
inclusive share (samples where it is anywhere on the stack), both in percent of all
samples of the process (idle samples included: py-spy is run with --idle so an event
loop waiting on the network shows as such).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def available() -> bool:
    return shutil.which("py-spy") is not None


class Profiler:
    def __init__(self, pid: int, path: Path, rate: int = 100) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate),
             "--idle", "--threads", "--nonblocking", "-o", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@dataclass
class Entry:
    function: str
    self_pct: float
    total_pct: float


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def top(path: Path, limit: int = 25,
        thread: str | None = "MainThread") -> tuple[int, list[Entry], list[Entry]]:
    """(samples, top by self share, top by inclusive share) of one thread (the event
    loop's, by default: the runtime, the pipeline and the Kafka clients run there)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        parts = stack.split(";")
        if thread is not None and not any(
                f.startswith("thread ") and f.endswith(f": {thread}") for f in parts[:2]):
            continue
        frames = [_name(f) for f in parts if f and not f.startswith("process ")
                  and not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if total == 0:
        return 0, [], []

    def entries(counter: Counter[str]) -> list[Entry]:
        return [Entry(name, 100 * own[name] / total, 100 * inclusive[name] / total)
                for name, _ in counter.most_common(limit)]

    return total, entries(own), entries(inclusive)


_GROUPS = (
    ("idle: waiting in select()", ("EpollSelector.select",)),
    ("socket writes (loopback TCP, includes the kernel's receive path)",
     ("_SelectorSocketTransport.write",)),
    ("our code: stream/", ("(stream/",)),
    ("our code: rules/", ("(rules/",)),
    ("our code: connectors/", ("(connectors/",)),
    ("faust + mode (streams, agents, topics, tables, producer buffer)", ("(faust/", "(mode/")),
    ("aiokafka (producer, protocol encode/decode, client)", ("(aiokafka/",)),
    ("asyncio event loop, tasks and futures", ("(asyncio/",)),
    ("logging", ("(logging/",)),
    ("dataclasses", ("(dataclasses.py",)),
    ("prometheus_client", ("(prometheus_client/",)),
)


def by_group(path: Path, thread: str | None = "MainThread") -> dict[str, float]:
    """Self share (percent of the thread's samples) by where the innermost frame is."""
    shares: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        parts = stack.split(";")
        if thread is not None and not any(
                f.startswith("thread ") and f.endswith(f": {thread}") for f in parts[:2]):
            continue
        leaf = _name(parts[-1])
        count = int(count_text)
        total += count
        for group, needles in _GROUPS:
            if any(needle in leaf for needle in needles):
                shares[group] += count
                break
        else:
            shares["other (stdlib, C extensions, imports)"] += count
    return {group: 100 * n / total for group, n in shares.most_common()} if total else {}
