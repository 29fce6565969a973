"""Freezing a growing heap (``loadgen.transport.heap``) must not keep its garbage for good.

``gc.freeze()`` moves every tracked object, reachable or not, out of the collector's reach. Frozen
each second of a ramp, the cycles the last second's handshakes left (not yet collected) stayed
for the whole run: 0.6 KiB per Locust user at 5000 users ramped at 500/s
(``benchmarks/bench_user_memory.py --users 5000 --spawn-rate 500 --hold 20``: 8.12 -> 7.46-7.52 KiB).
"""

from __future__ import annotations

import gc
import weakref

import gevent

from loadgen.locust.health import freeze_heap
from loadgen.transport.heap import freeze_while_growing


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_a_freeze_while_growing_collects_the_young_garbage_first() -> None:
    gc.collect()
    gc.disable()  # no automatic collection may free the cycle first: only the freeze's own
    population = [0]
    freezer = freeze_while_growing(lambda: population[0], every=0.01)
    try:
        garbage = weakref.ref(_Node())  # unreachable at once, alive until a collection
        alive = _Node()
        assert garbage() is not None
        population[0] = 1  # the population grew: the next tick freezes
        gevent.sleep(0.1)
        assert gc.get_freeze_count() > 0, "the heap was never frozen"
        gc.unfreeze()
        assert garbage() is None, "an unreachable cycle was frozen instead of collected"
        assert alive.me is alive
    finally:
        freezer.kill()
        gc.unfreeze()
        gc.enable()


def test_the_freeze_when_spawning_completes_collects_the_young_garbage_first() -> None:
    gc.collect()
    gc.disable()
    try:
        garbage = weakref.ref(_Node())
        assert garbage() is not None
        freeze_heap()  # Locust's spawning_complete listener
        assert gc.get_freeze_count() > 0
        gc.unfreeze()
        assert garbage() is None, "an unreachable cycle was frozen instead of collected"
    finally:
        gc.unfreeze()
        gc.enable()
