"""The cyclic garbage collector, kept off the state it cannot free anyway.

A worker's state is millions of small dicts, lists and records that live as long as
their partition and hold no reference cycles, so refcounting frees them and the cyclic
collector never can. Yet every full collection walks all of them: measured with
`BENCH_GC_STATS=1 bench/bench_throughput.py`, collections took 2.5 s of the 25 s a
worker spent building the state of 100,000 contacts, 1.9 s of it in full collections.

So after a full collection its survivors are moved to the permanent generation
(`gc.freeze`), and the next one walks only what is newer. Frozen objects are still freed
by refcounting; only a cycle that becomes garbage while frozen outlives its time, until
every `RESCAN_EVERY`-th full collection, which unfreezes everything first.

Installed by the worker process (`segments worker`, `segments.commands.worker.serve`),
not by the runtime: it is a policy of the whole process, and a process that is not only
a worker (the test suite, say) keeps Python's defaults. (Hypothesis, for one, looks for
referrers with `gc.get_referrers`, which does not see frozen objects.)
"""

from __future__ import annotations

import gc
from typing import Any

#: One full collection in this many walks everything (and frees cycles of frozen objects).
RESCAN_EVERY = 10

#: Allocations between two collections of the youngest generation (Python's default is
#: 700): a worker allocates about a hundred objects per event, most of them short-lived
#: and freed by refcounting before a larger threshold would walk them.
YOUNGEST_THRESHOLD = 10_000

_full_collections = 0


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    global _full_collections
    if info["generation"] != 2:
        return
    if phase == "start":
        _full_collections += 1
        if _full_collections % RESCAN_EVERY == 0:
            gc.unfreeze()
    else:
        gc.freeze()


def install() -> None:
    """Freeze the survivors of every full collection (once per process)."""
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)
        _, middle, oldest = gc.get_threshold()
        gc.set_threshold(YOUNGEST_THRESHOLD, middle, oldest)
