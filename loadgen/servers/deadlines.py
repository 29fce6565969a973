"""The reference servers' deadlines (handshake, idle): one heap for every peer, served by one greenlet.

A peer's deadline moves with every ping; a timer per peer would be re-armed per ping and cost a
watcher each. Instead each peer keeps ``wake``, the due time of its one live entry in a heap (inf:
none): :meth:`Deadlines.schedule` pushes an entry only when the deadline comes earlier than that,
and an entry whose time differs from its peer's ``wake`` when it pops is stale (the peer moved on,
or is gone) and skipped (lazy invalidation). The loop sleeps until the earliest entry is due, so
idle peers cost no CPU; the heap is rebuilt from the live peers once stale entries outnumber them.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

import gevent
from gevent.event import Event

#: Due entries handled before the loop lets the peers' reads in.
BATCH = 256
#: The heap is rebuilt from the live peers once stale entries outnumber them this much.
SLACK = 1024


class Timed(Protocol):
    """A peer: the due time of its live heap entry (inf: none)."""

    wake: float


K = TypeVar("K")  # what finds a peer again (its address; a serial and a weak reference): ordered
P = TypeVar("P", bound=Timed)


class Deadlines(Generic[K, P]):
    """One heap of ``(due, key)``; :meth:`run` (a greenlet) calls ``due(peer, key, now)`` for each
    peer whose entry comes due and is still live (``find(key)`` is the peer, its ``wake`` the
    entry's time). ``due`` reschedules or drops it. What raises in ``due`` is handed to
    ``failed(key, peer, exc)`` and the loop goes on (``failed(None, None, exc)``: the loop's own)."""

    def __init__(self, *, find: Callable[[K], P | None], due: Callable[[P, K, float], None],
                 failed: Callable[[K | None, P | None, Exception], None],
                 live: Callable[[], Iterable[tuple[K, P]]], count: Callable[[], int]) -> None:
        """``live``: every peer (with its key) for a rebuild; ``count``: how many there are."""
        self._find, self._due, self._failed, self._live, self._count = find, due, failed, live, count
        self._heap: list[tuple[float, K]] = []
        self._wakeup = Event()
        self._sleeping_until = -math.inf  # when the loop wakes by itself (-inf: it is not asleep)

    def __len__(self) -> int:
        return len(self._heap)

    def clear(self) -> None:
        self._heap.clear()

    def schedule(self, key: K, peer: P, due: float) -> None:
        """Make sure the heap holds an entry for ``peer`` no later than ``due``."""
        if due >= peer.wake:
            return  # an entry at least as early is in the heap; it reschedules when it pops
        peer.wake = due
        heap = self._heap
        if len(heap) > 2 * self._count() + SLACK:
            # Stale entries (peers gone or rescheduled) outnumber the live: rebuild.
            heap[:] = [(p.wake, k) for k, p in self._live() if p.wake != math.inf]
            heapq.heapify(heap)
        else:
            heapq.heappush(heap, (due, key))
        if due < self._sleeping_until:
            self._wakeup.set()

    def run(self) -> None:
        """The loop (spawn it as a greenlet; kill it to stop)."""
        heap = self._heap
        while True:
            try:
                now = time.monotonic()
                delay = heap[0][0] - now if heap else None
                if delay is None or delay > 0:
                    self._wakeup.clear()
                    self._sleeping_until = math.inf if delay is None else now + delay
                    self._wakeup.wait(delay)
                    self._sleeping_until = -math.inf
                    continue
                self._run_due(now)
            except Exception as exc:  # the loop itself (not one peer) hit a bug: keep expiring the others
                self._failed(None, None, exc)
                gevent.sleep(0.01)

    def _run_due(self, now: float) -> None:
        heap, handled = self._heap, 0
        while heap and heap[0][0] <= now:
            due, key = heapq.heappop(heap)
            peer = self._find(key)
            if peer is None or peer.wake != due:
                continue  # stale: gone or rescheduled since
            peer.wake = math.inf
            try:
                self._due(peer, key, now)
            except Exception as exc:
                self._failed(key, peer, exc)
            handled += 1
            if handled % BATCH == 0:
                gevent.sleep(0)  # thousands due at once: let the reads in between
                now = time.monotonic()
