"""When each request step is due: ``once`` steps first, then each ``interval`` step on its own
timer and the ``weight`` steps on one shared timer, picked by weight (as Locust picks tasks).

Sans-I/O like the tracker: time is passed in; the jitter is ``uniform``'s. A step whose
window (``in_flight``) is full waits: its request goes out when a slot frees, and its next
one is due an interval after that one was due (never a burst to catch up), as the ping's.
"""

from __future__ import annotations

from collections.abc import Sequence

from loadgen.scenario.model import RequestStep
from loadgen.traffic.workload import Uniform

INF = float("inf")


class StepSchedule:
    """The due times of ``steps`` and their windows. ``shared_interval`` is the weighted steps'
    interval and ``jitter`` the fraction of an interval applied +- to each (both the ping
    section's). The caller counts what each step has under way in :attr:`busy`."""

    def __init__(self, steps: Sequence[RequestStep], *, shared_interval: float, jitter: float,
                 uniform: Uniform) -> None:
        self._steps = tuple(steps)
        self._shared = shared_interval
        self._jitter = jitter
        self._uniform = uniform
        self._once = [i for i, s in enumerate(steps) if s.once]
        self._interval = [i for i, s in enumerate(steps) if not s.once and s.weight is None]
        self._timed = self._once + self._interval  # the steps with a due time of their own
        self._weighted = [i for i, s in enumerate(steps) if not s.once and s.weight is not None]
        self._total_weight = sum(steps[i].weight or 0.0 for i in self._weighted)
        self._limits = [s.in_flight for s in steps]
        #: Per step: its requests (and observations) under way; at its ``in_flight`` its window is full.
        self.busy = [0] * len(steps)
        self._next = [INF] * len(steps)  # per once or interval step
        self._shared_next = INF
        self._picked: int | None = None  # the weighted step drawn for the shared slot, not sent yet
        self._once_left = len(self._once)

    def start(self, now: float) -> None:
        """The association is up: the ``once`` steps are due now, the others once those ended."""
        for i in self._once:
            self._next[i] = now
        if not self._once:
            self._begin(now)

    def once_ended(self, now: float) -> None:
        """A ``once`` step's request ended (either way): after the last one, the others begin."""
        self._once_left -= 1
        if self._once_left == 0:
            self._begin(now)

    def halt(self) -> None:
        """Nothing is due again, whatever ends (the run is stopping: :class:`~.workload.Gate`)."""
        self._timed, self._interval, self._weighted = [], [], []
        self._shared_next = INF
        self._picked = None

    def due(self, now: float) -> int | None:
        """The step to send now (its window open and its time come), or None."""
        busy, limits, nxt = self.busy, self._limits, self._next
        for i in self._timed:
            if nxt[i] <= now and busy[i] < limits[i]:
                return i
        if self._shared_next <= now:
            if self._picked is None:
                self._picked = self._pick()
            if busy[self._picked] < limits[self._picked]:
                return self._picked
        return None

    def next_time(self) -> float:
        """When :meth:`due` may return a step next (inf: when a window opens, or never)."""
        busy, limits, nxt = self.busy, self._limits, self._next
        best = INF
        for i in self._timed:
            if nxt[i] < best and busy[i] < limits[i]:
                best = nxt[i]
        if self._weighted and self._shared_next < best:
            picked = self._picked
            if picked is None or busy[picked] < limits[picked]:
                best = self._shared_next
        return best

    def sent(self, index: int, now: float) -> None:
        """Step ``index``'s request went out at ``now``: its next one is due an interval later."""
        step = self._steps[index]
        if step.once:
            self._next[index] = INF
        elif step.weight is None:
            self._next[index] = self._after(self._next[index], step.interval or self._shared, now)
        else:
            self._picked = None
            self._shared_next = self._after(self._shared_next, self._shared, now)

    def _begin(self, now: float) -> None:
        for i in self._interval:
            self._next[i] = now
        if self._weighted:
            self._shared_next = now

    def _after(self, due: float, interval: float, now: float) -> float:
        spread = interval * self._jitter
        jitter = self._uniform(-spread, spread) if spread else 0.0
        return max(due + interval + jitter, now)

    def _pick(self) -> int:
        draw = self._uniform(0.0, self._total_weight)
        for i in self._weighted:
            draw -= self._steps[i].weight or 0.0
            if draw < 0:
                return i
        return self._weighted[-1]
