"""Where the chaos run's worker processes log, and what of it a failure shows.

Each worker process (every replacement too) writes its own `worker-NN.log`, so a log
line can be traced to the process that wrote it (the workers' JSON lines name no pid).
The directory is the test's tmp_path, or `CHAOS_LOG_DIR` when set: pytest keeps only
its last few tmp directories, and on a machine where other sessions run pytest a
failed run's logs are gone within minutes.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from common.diagnostics import DUMP_MARKER

#: Lines the stream runtime's un-awaited send futures leave when a transaction fails:
#: counted, not shown, so that a tail shows what the runtime decided.
NOISE = "Future exception was never retrieved"


def stamp() -> str:
    """The time as the workers' log lines give it (UTC), to read the two side by side."""
    now = time.time()
    return time.strftime("%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}"


def log_dir(tmp_path: Path) -> Path:
    path = Path(os.environ.get("CHAOS_LOG_DIR") or tmp_path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def next_log(directory: Path) -> Path:
    """The log file of the next worker process started."""
    return directory / f"worker-{len(list(directory.glob('worker-*.log'))):02d}.log"


#: What a worker logs first when asked (SIGUSR1) where its tasks wait.
DUMP = DUMP_MARKER


def tails(directory: Path, lines: int = 15, dump_lines: int = 300) -> list[str]:
    """Per worker log: its last `lines` lines other than `NOISE` before its last task
    dump (`common.diagnostics`), how many `NOISE` lines it holds, then the dump."""
    out = []
    for log in sorted(directory.glob("worker-*.log")):
        text = log.read_text(errors="replace").splitlines()
        kept = [line for line in text if NOISE not in line]
        starts = [i for i, line in enumerate(kept) if DUMP in line]
        before, dump = (kept[:starts[-1]], kept[starts[-1]:]) if starts else (kept, [])
        out.append(f"{log} ({len(text)} lines, {len(text) - len(kept)} '{NOISE}'), "
                   f"last {min(lines, len(before))} others:")
        out += [f"  {line[:400]}" for line in before[-lines:]]
        out += [f"  {line[:400]}" for line in dump[:dump_lines]]
    return out


def dumped(directory: Path) -> int:
    """How many task dumps the workers' logs hold."""
    return sum(log.read_text(errors="replace").count(DUMP)
               for log in directory.glob("worker-*.log"))


def assignments(directory: Path) -> int:
    """How many assignments the group's leaders computed (`stream.assignor` logs each):
    one per rebalance. A few per kill and bounce is normal; hundreds are a rebalance
    storm."""
    return sum(log.read_text(errors="replace").count("stream.assignor  assigning")
               for log in directory.glob("worker-*.log"))


#: The stream runtime's line once a rebalance has given the worker its partitions (all of
#: them: the group protocol is eager), and aiokafka's line when a rebalance takes them.
ASSIGNED = re.compile(r"stream\.runtime\s+assigned partitions \[([0-9, ]*)\]")
REVOKING = "Revoking previously assigned partitions"


def owned(log: Path) -> set[int]:
    """The partition numbers the worker writing `log` owns now: those of its last
    assignment, none while a rebalance has taken them and not yet given them back."""
    owns: set[int] = set()
    for line in log.read_text(errors="replace").splitlines():
        if REVOKING in line:
            owns = set()
        elif (found := ASSIGNED.search(line)) is not None:
            owns = {int(n) for n in found.group(1).split(",") if n.strip()}
    return owns
