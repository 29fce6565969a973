"""Keeping a distributed run honest: Locust's worker overheads, event-loop lag, heartbeats.

Three things decide whether master + workers on one small machine hold a load or
silently fall behind, and each has a piece here:

- :func:`tune_locust` removes a Locust cost that grows with the ramp: a worker handles
  every ``spawn`` message (one a second per worker while users ramp) by rebuilding
  Locust's whole argument parser once per option it was sent (``default_args_dict()``
  in a dict comprehension, 56 options x ~6 ms = ~350 ms of CPU per message, with the
  worker's event loop blocked meanwhile). The default options do not change within a
  process, so they are computed once. It also gives the master more patience with
  heartbeats (:data:`HEARTBEAT_LIVENESS`): a worker whose loop is busy for 4 s is slow,
  not lost, and marking it missing makes Locust re-dispatch its users.
- :class:`LoopLag` measures how late this process's gevent loop runs a timer: the
  delay every association's timer, every ping and Locust's heartbeat greenlet see.
  Each worker reports the worst lag of each second with its stats (see
  :mod:`loadgen.stats.sink`), so the run can say when it was starved.
- :class:`WorkerWatch` (master) records every worker Locust marks missing and every
  one that comes back, for the summary and the verdict.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import gevent

log = logging.getLogger("loadgen")

#: Heartbeats (one a second) a worker may miss before the master marks it missing (Locust: 3).
HEARTBEAT_LIVENESS = 10
#: Loop lag (s) above which a process is called starved in the verdict.
STARVED_LAG = 0.5


def tune_locust() -> None:
    """Make Locust's per-spawn-message option filtering O(1) and its heartbeat tolerance wider (idempotent)."""
    from locust import argument_parser, runners

    if not getattr(argument_parser.default_args_dict, "_loadgen_cached", False):
        original = argument_parser.default_args_dict

        @functools.wraps(original)
        def cached() -> dict[str, Any]:
            return dict(_defaults(original))

        cached._loadgen_cached = True  # type: ignore[attr-defined]
        argument_parser.default_args_dict = cached
    runners.HEARTBEAT_LIVENESS = max(runners.HEARTBEAT_LIVENESS, HEARTBEAT_LIVENESS)


@functools.cache
def _defaults(original: Any) -> dict[str, Any]:
    return dict(original())


class LoopLag:
    """Worst lateness of a periodic gevent timer since the last :meth:`take` (seconds).

    A greenlet sleeps ``interval`` and notes how much later than asked it woke up; that
    is the time any other greenlet (a ping timer, Locust's heartbeat) waited for the CPU
    or for a long-running callback.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self._worst = 0.0
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> LoopLag:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)
        return self

    def stop(self) -> None:
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None:
            greenlet.kill(block=False)

    def take(self) -> float:
        """The worst lag seen since the last call (including a sleep still overdue now)."""
        worst, self._worst = self._worst, 0.0
        return worst

    def _run(self) -> None:
        interval = self.interval
        while True:
            before = time.monotonic()
            gevent.sleep(interval)
            late = time.monotonic() - before - interval
            if late > self._worst:
                self._worst = late


@dataclass
class WorkerEvent:
    """A worker went missing (no heartbeat) or came back, ``at`` seconds into the run."""

    at: float
    worker: int
    what: str  # "missing" or "back"

    def to_json(self) -> dict[str, Any]:
        return {"at_s": round(self.at, 1), "worker": self.worker, "event": self.what}


@dataclass
class WorkerWatch:
    """Polls a master runner's workers once a second and records who went missing and who came back."""

    runner: Any
    started: float = field(default_factory=time.monotonic)
    events: list[WorkerEvent] = field(default_factory=list)
    _missing: set[str] = field(default_factory=set)
    _greenlet: gevent.Greenlet | None = None

    def start(self) -> WorkerWatch:
        self.started = time.monotonic()
        self._greenlet = gevent.spawn(self._run)
        return self

    def stop(self) -> None:
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None:
            greenlet.kill(block=False)
        self.poll()

    @property
    def missed(self) -> list[int]:
        """Indexes of the workers that were marked missing at least once."""
        return sorted({e.worker for e in self.events if e.what == "missing"})

    def _run(self) -> None:
        while True:
            gevent.sleep(1.0)
            self.poll()

    def poll(self) -> None:
        from locust.runners import STATE_MISSING

        now = time.monotonic() - self.started
        for client_id, node in list(self.runner.clients.items()):
            index = self.runner.get_worker_index(client_id)
            if node.state == STATE_MISSING and client_id not in self._missing:
                self._missing.add(client_id)
                self.events.append(WorkerEvent(now, index, "missing"))
                log.warning("loadgen: worker %d sent no heartbeat for %d s: Locust marked it missing and "
                            "takes its users off the count (starved: too many processes for the cores?)",
                            index, HEARTBEAT_LIVENESS)
            elif node.state != STATE_MISSING and client_id in self._missing:
                self._missing.discard(client_id)
                self.events.append(WorkerEvent(now, index, "back"))
                log.warning("loadgen: worker %d is back (heartbeat again)", index)
