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
import gc
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import gevent

from loadgen.stats.facts import plural
from loadgen.transport.heap import freeze, freeze_while_growing

log = logging.getLogger("loadgen")

#: Heartbeats (one a second) a worker may miss before the master marks it missing (Locust: 3).
HEARTBEAT_LIVENESS = 10
#: Loop lag (s) above which a process is called starved in the verdict.
STARVED_LAG = 0.5


def freeze_heap(**_: Any) -> None:
    """Move every object alive now out of the garbage collector's reach (``gc.freeze()``).

    A worker holding ~17,000 users has millions of long-lived objects; a full (generation 2)
    collection walks them all and stops the process for a second or more, every few
    minutes, delaying every ping in flight. Once the users are spawned those objects stay
    until the run ends, so they need not be scanned again. Called when spawning completes
    (:func:`~loadgen.transport.heap.freeze`: the young generations collected first, not a full
    collection, which would be the very stall this avoids).
    """
    freeze()


def freeze_while_spawning(environment: Any, every: float = 1.0) -> gevent.Greenlet:
    """:func:`~loadgen.transport.heap.freeze_while_growing` over the runner's user count.

    Full collections during a ramp walked every user spawned so far (0.3-0.6 s stalls
    every ~10 s per worker at 17,000 users). (A worker's runner is "spawning" only for
    the instant each batch takes: the user count is what tells that the ramp goes on.)
    """
    return freeze_while_growing(
        lambda: environment.runner.user_count if environment.runner is not None else 0, every)


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
        self._gc_started = 0.0
        self.gc_worst = 0.0  # longest garbage collection seen (s): a stall of the whole process

    def start(self) -> LoopLag:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)
            gc.callbacks.append(self._on_gc)
        return self

    def stop(self) -> None:
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None:
            greenlet.kill(block=False)
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_started
        if took > self.gc_worst:
            self.gc_worst = took
        if took > STARVED_LAG / 2:
            log.warning("loadgen: garbage collection of generation %d stalled this process for %.2f s "
                        "(%d objects collected)", info.get("generation", -1), took, info.get("collected", 0))

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
    """A worker went missing (no heartbeat), came back, or its process died, ``at`` seconds into the run."""

    at: float
    worker: int
    what: str  # "missing", "back" or "died"
    detail: str = ""  # how a process died: "killed by SIGKILL", "exit status 1"

    def to_json(self) -> dict[str, Any]:
        event = {"at_s": round(self.at, 1), "worker": self.worker, "event": self.what}
        return {**event, "detail": self.detail} if self.detail else event


def how_it_ended(returncode: int) -> str:
    """A process's end in words: "killed by SIGKILL", "exit status 1"."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


#: The message a worker started with ``--worker-index`` sends its master: Locust numbers workers in
#: the order they connect, loadgen's files by that index, and a health line that named Locust's
#: number next to a file named by loadgen's ("worker 0 marked missing", "no worker-1.json") named
#: two workers where one had died.
WORKER_INDEX_MESSAGE = "loadgen_worker_index"


@dataclass
class WorkerWatch:
    """Polls a master runner's workers once a second and records who went missing and who came back,
    by loadgen's worker index where the worker said it (:data:`WORKER_INDEX_MESSAGE`), else Locust's,
    and, for the worker processes this master started (``processes``, by index), whose process died:
    a worker marked missing is starved or dead, and only its exit status tells which.
    Made before the workers start, so that no worker's index message comes before its listener."""

    runner: Any
    processes: dict[int, Any] = field(default_factory=dict)  # index -> subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    events: list[WorkerEvent] = field(default_factory=list)
    _missing: set[str] = field(default_factory=set)
    _greenlet: gevent.Greenlet | None = None
    _indexes: dict[str, int] = field(default_factory=dict)  # Locust's client id -> loadgen's index
    _died: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.runner.register_message(WORKER_INDEX_MESSAGE, self._on_index)

    def _on_index(self, msg: Any, **_: Any) -> None:
        index = msg.data.get("index") if isinstance(msg.data, dict) else None
        if isinstance(index, int):
            self._indexes[msg.node_id] = index

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
        for worker, process in self.processes.items():
            # A worker that ends cleanly (status 0) does so because the run told it to quit.
            if worker not in self._died and (code := process.poll()) is not None and code != 0:
                self._died.add(worker)
                how = how_it_ended(code)
                self.events.append(WorkerEvent(now, worker, "died", how))
                log.warning("loadgen: worker %d's process died (%s): its users stopped with it, and what it "
                            "counted since its last second reached the master is lost", worker, how)
        for client_id, node in list(self.runner.clients.items()):
            index = self._indexes.get(client_id)
            if index is None:
                index = self.runner.get_worker_index(client_id)
            if node.state == STATE_MISSING and client_id not in self._missing:
                self._missing.add(client_id)
                self.events.append(WorkerEvent(now, index, "missing"))
                why = "its process died" if index in self._died else "starved: too many processes for the cores?"
                log.warning("loadgen: worker %d sent no heartbeat for %d s: Locust marked it missing and "
                            "takes its users off the count (%s)", index, HEARTBEAT_LIVENESS, why)
            elif node.state != STATE_MISSING and client_id in self._missing:
                self._missing.discard(client_id)
                self.events.append(WorkerEvent(now, index, "back"))
                log.warning("loadgen: worker %d is back (heartbeat again)", index)


@dataclass
class Health:
    """Whether the load processes kept up, and whether every count arrived: summary.json's ``health``."""

    lag_max: float = 0.0  # worst event-loop lag of any load process (s)
    lag_seconds: int = 0  # seconds in which some process lagged more than STARVED_LAG
    stop_lag_max: float = 0.0  # worst lag while stopping the users (Locust stops them all at once): reported only
    workers: int = 0
    worker_events: list[WorkerEvent] = field(default_factory=list)
    worker_files_missing: list[int] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> {"locust": n, "loadgen": n}
    clients_peak: int = 0
    associations_peak: int = 0

    @property
    def missed(self) -> list[int]:
        return sorted({e.worker for e in self.worker_events if e.what == "missing"})

    @property
    def died(self) -> dict[int, str]:
        """Workers whose process died during the run, with how ("killed by SIGKILL")."""
        return {e.worker: e.detail for e in self.worker_events if e.what == "died"}

    @property
    def counts_differ(self) -> list[str]:
        return [kind for kind, c in self.counts.items() if c["locust"] != c["loadgen"]]

    def note(self) -> str:
        """One or two sentences for the verdict when the run was starved or its counts disagree; else ''."""
        died = self.died
        starved = []
        if missed := [w for w in self.missed if w not in died]:  # a dead worker sends no heartbeat either
            starved.append(f"worker(s) {', '.join(map(str, missed))} sent no heartbeat for "
                           f"{HEARTBEAT_LIVENESS} s and were marked missing (Locust took their users off its count)")
        if self.lag_max > STARVED_LAG:
            starved.append(f"a load process's event loop ran up to {self.lag_max:.1f} s late "
                           f"({self.lag_seconds} s over {STARVED_LAG:g} s), so pings and handshakes waited for the "
                           "generator itself")
        parts = []
        if died:
            parts.append("DIED: " + "; ".join(f"worker {w}'s process ({how})" for w, how in sorted(died.items()))
                         + " ended during the run: its users stopped with it.")
        if starved:
            parts.append("STARVED: " + "; ".join(starved) + " - too many processes for the cores "
                         "(fewer --processes, a slower spawn_rate, or more machines); latencies above include "
                         "the generator's own delay.")
        if problems := self.accounting():
            parts.append("ACCOUNTING: " + "; ".join(problems) + ": counts were lost, so the run fails.")
        return " ".join(parts)

    def accounting(self) -> list[str]:
        """Why the run's counts are not the whole run (a worker's file missing, Locust's and loadgen's
        counts of the same attempts apart); empty when they are. Any of it fails the run: figures that
        lost attempts, or disagree with each other, cannot say how the server did."""
        problems = []
        if self.worker_files_missing:
            problems.append(f"no worker-<i>.json from worker(s) {', '.join(map(str, self.worker_files_missing))} "
                            "(killed before it could write)")
        for kind in self.counts_differ:
            c = self.counts[kind]
            problems.append(f"Locust counted {c['locust']} {plural(kind)}, loadgen {c['loadgen']}")
        return problems

    def to_json(self) -> dict[str, Any]:
        return {
            "loop_lag_max_s": round(self.lag_max, 3), "seconds_lagging": self.lag_seconds,
            "stop_lag_max_s": round(self.stop_lag_max, 3),
            "starved_lag_s": STARVED_LAG, "workers": self.workers, "heartbeat_liveness_s": HEARTBEAT_LIVENESS,
            "workers_marked_missing": self.missed, "worker_events": [e.to_json() for e in self.worker_events],
            "worker_files_missing": self.worker_files_missing, "counts": self.counts,
            "clients_peak": self.clients_peak, "associations_peak": self.associations_peak,
            "verdict_note": self.note(),
        }
