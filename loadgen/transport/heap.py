"""Keeping a growing process's long-lived objects out of full garbage collections.

A load process holding tens of thousands of users, or a server holding as many peers,
has millions of long-lived objects; every full (generation 2) collection walks them
all and stops the process for a sizeable fraction of a second, delaying every
datagram in flight. ``gc.freeze()`` moves the objects alive now out of the
collector's reach: frozen each second while the population grows, a collection only
walks what the last second added. Objects that die later are still freed (reference
counting); only reference cycles among them would stay.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import gevent


def freeze() -> None:
    """Move every object alive now out of the collector's reach, its young garbage collected first:
    ``gc.freeze()`` also moves what is unreachable but not yet collected (a second of handshakes
    leaves cycles), and that would stay for good. Generations 0 and 1 hold only what the last
    collections left, so the collection walks little (a full one is the stall freezing avoids)."""
    gc.collect(1)
    gc.freeze()


def freeze_while_growing(population: Callable[[], int], every: float = 1.0) -> gevent.Greenlet:
    """A greenlet that freezes the heap every ``every`` seconds in which ``population()`` grew."""

    def run() -> None:
        frozen_at = 0
        while True:
            gevent.sleep(every)
            size = population()
            if size > frozen_at:
                freeze()
            frozen_at = size

    return gevent.spawn(run)
