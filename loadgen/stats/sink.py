"""The hot path: a sink that counts facts into this second's cells, and the per-second delta it rolls.

Facts arrive ~20,000 per second per process, so :meth:`StatsSink.record` does the
least it can: one dict lookup per fact, integer additions, one HDR ``record_value``
per success. Everything else (totals, percentiles, merging, exporting) happens once
a second, when :meth:`StatsSink.roll` hands the second's cells over as a
:class:`SecondDelta`: the one unit that local runs apply, workers send to their
master, and masters merge (by second index), so all three agree exactly.

Tests and benchmarks, which never roll, read their totals from the sink itself
(:attr:`StatsSink.handshakes`, :attr:`StatsSink.pings`): the same cells a run counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from loadgen.stats.cells import Cell, count_code, new_histogram
from loadgen.stats.facts import HANDSHAKE, PING, RESET_ERROR, RST, Ended, Fact, Finished, Started, run_kinds

Key = tuple[str, str]  # (kind, target)


@dataclass
class SecondDelta:
    """What one process counted during one second (or the last, partial one) of a run."""

    index: int  # seconds since this process started counting (0-based)
    wall: float  # epoch time at which the second began
    duration: float  # seconds covered (1.0 but for the last, partial one)
    cpu: float  # CPU seconds this process used meanwhile (time.process_time)
    users: int  # Locust users (simulated clients) running at its end
    cells: dict[Key, Cell] = field(default_factory=dict)
    lag: float = 0.0  # worst event-loop lag in the second (s): how late a timer could run (loadgen.locust.health)
    stop_lag: float = 0.0  # the same once stopping began (Locust stops every user at once): not starvation

    def to_wire(self) -> dict[str, Any]:
        return {
            "i": self.index, "t": self.wall, "dt": self.duration, "cpu": self.cpu, "users": self.users,
            "lag": self.lag, "stop_lag": self.stop_lag,
            "cells": [[kind, target, cell.to_wire()] for (kind, target), cell in self.cells.items()],
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> SecondDelta:
        cells = {(kind, target): Cell.from_wire(wire) for kind, target, wire in data["cells"]}
        return cls(int(data["i"]), float(data["t"]), float(data["dt"]), float(data["cpu"]), int(data["users"]),
                   cells, float(data.get("lag", 0.0)), float(data.get("stop_lag", 0.0)))

    @property
    def cpu_percent(self) -> float:
        """This process's CPU use over the second, in % of one core."""
        return 100.0 * self.cpu / self.duration if self.duration > 0 else 0.0


class StatsSink:
    """Counts facts per (kind, target) into the current second; :meth:`roll` closes the second.

    Between rolls :attr:`kinds` (and :attr:`handshakes`, :attr:`pings`) read what was counted
    so far: a sink that is never rolled (tests, benchmarks) holds the totals of everything.
    """

    facts = (Started, Finished, Ended)

    def __init__(self) -> None:
        self._cells: dict[Key, Cell] = {}
        self.reset()

    def reset(self) -> None:
        """Start counting afresh at second 0 (a new run); what was counted is dropped."""
        self._cells = {}
        self._index = 0
        self._wall = time.time()
        self._mono = time.monotonic()
        self._cpu = time.process_time()

    def record(self, fact: Fact) -> None:
        # Runs per fact: type() is, not isinstance() (facts are final classes); no helper calls.
        if type(fact) is Finished:
            key = (fact.kind, fact.target)
            cell = self._cells.get(key)
            if cell is None:
                cell = self._cells[key] = Cell()
            cell.retransmits += fact.retransmits
            cell.sent_bytes += fact.sent_bytes
            cell.received_bytes += fact.received_bytes
            code = fact.code
            if code is not None:  # a CoAP reply: count its code (bounded), and resets
                count_code(cell.codes, code)
                if code == RST:
                    cell.rsts += 1
            elif fact.error is not None and fact.error.code == RESET_ERROR:
                cell.rsts += 1
            if fact.error is None:
                cell.completed += 1
                cell.resumed += fact.resumed
                hist = cell.histogram
                if hist is None:
                    hist = cell.histogram = new_histogram()
                us = int(fact.elapsed * 1e6)  # as cells.latency_us(), inlined
                hist.record_value(us if us > 0 else 1)
            else:
                cell.failures[fact.error.code] += 1
        elif type(fact) is Started:
            key = (fact.kind, fact.target)
            cell = self._cells.get(key)
            if cell is None:
                cell = self._cells[key] = Cell()
            cell.attempted += 1
        elif type(fact) is Ended:
            key = (HANDSHAKE, fact.target)
            cell = self._cells.get(key)
            if cell is None:
                cell = self._cells[key] = Cell()
            cell.ended += 1

    def counted(self, kind: str) -> Cell:
        """What was counted of ``kind`` since the last roll, over all targets: a fresh cell (a snapshot)."""
        total = Cell()
        for (counted_kind, _), cell in self._cells.items():
            if counted_kind == kind:
                total.add(cell)
        return total

    @property
    def kinds(self) -> dict[str, Cell]:
        """:meth:`counted` of every kind, in :func:`~loadgen.stats.facts.run_kinds` order (handshake first;
        ping when nothing else was counted), as in :class:`~loadgen.stats.run.RunStats`."""
        return {kind: self.counted(kind) for kind in run_kinds(kind for kind, _ in self._cells)}

    @property
    def handshakes(self) -> Cell:
        """Handshakes counted since the last roll."""
        return self.counted(HANDSHAKE)

    @property
    def pings(self) -> Cell:
        """Pings counted since the last roll."""
        return self.counted(PING)

    def roll(self, users: int = 0, lag: float = 0.0, stop_lag: float = 0.0) -> SecondDelta:
        """Close the current second: its cells, this process's CPU use and loop lag, as a delta."""
        cells, self._cells = self._cells, {}
        mono, cpu = time.monotonic(), time.process_time()
        delta = SecondDelta(self._index, self._wall, mono - self._mono, cpu - self._cpu, users, cells, lag, stop_lag)
        self._index += 1
        self._wall += delta.duration
        self._mono, self._cpu = mono, cpu
        return delta
