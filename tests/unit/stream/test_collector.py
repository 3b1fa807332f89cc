"""The collector freezes what survives a full collection, and frees frozen cycles at
the periodic rescan (stream.collector)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from stream import collector

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _defaults_restored() -> Iterator[None]:
    """The collector is process-wide: the rest of the suite runs with Python's defaults."""
    threshold = gc.get_threshold()
    yield
    if collector._on_collection in gc.callbacks:
        gc.callbacks.remove(collector._on_collection)
    gc.set_threshold(*threshold)
    gc.unfreeze()


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_survivors_of_a_full_collection_are_frozen() -> None:
    collector.install()
    collector.install()  # once per process, however often a runtime starts
    assert gc.callbacks.count(collector._on_collection) == 1
    gc.unfreeze()
    kept = [_Node() for _ in range(1000)]
    gc.collect()
    assert gc.get_freeze_count() >= len(kept)


def test_a_frozen_cycle_is_freed_by_the_rescan() -> None:
    collector.install()
    gc.disable()  # only the collections below count
    try:
        _frozen_cycle_freed()
    finally:
        gc.enable()


def _frozen_cycle_freed() -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    gc.collect()  # survives: frozen
    del a, b
    rescans_left = collector.RESCAN_EVERY - collector._full_collections % collector.RESCAN_EVERY
    for _ in range(rescans_left - 1):
        gc.collect()
        assert alive() is not None  # frozen: not walked, not freed
    gc.collect()  # the rescan: unfreezes, walks everything
    assert alive() is None
