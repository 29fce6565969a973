"""A run's statistics, one source of truth: totals per (kind, target) and a per-second series.

:class:`RunStats` is built only by applying :class:`~loadgen.stats.sink.SecondDelta`
objects, whether they come from this process's sink (local runs, workers) or from
workers' messages (a master). Totals are the sum of the deltas, so the summary, the
time series, the exporters and Locust's counts all describe the same facts. Deltas of
one second index from several workers merge into one :class:`SecondRow`; percentiles
of a row come from the merged HDR histogram, hence equal those of all raw samples.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from loadgen.stats.cells import Cell
from loadgen.stats.facts import HANDSHAKE, KINDS, PING, is_plain, request_kinds, run_kinds
from loadgen.stats.sink import Key, SecondDelta


@dataclass
class SecondRow:
    """One second of the run, merged over targets and processes."""

    index: int
    wall: float
    duration: float = 0.0
    users: int = 0
    processes: int = 0
    cpu_max: float = 0.0  # busiest process, % of one core: near 100 means that generator is saturated
    cpu_total: float = 0.0  # all processes together, % of one core
    lag_max: float = 0.0  # worst event-loop lag of any process in this second (s)
    stop_lag_max: float = 0.0  # the same while the processes were stopping their users
    kinds: dict[str, Cell] = field(default_factory=dict)  # the kinds counted in this second
    _figures: dict[str, dict[str, Any]] | None = None  # cached per-kind figures

    def merge(self, delta: SecondDelta, per_kind: dict[str, Cell]) -> None:
        self.wall = min(self.wall, delta.wall)
        self.duration = max(self.duration, delta.duration)
        self.users += delta.users
        self.processes += 1
        self.cpu_max = max(self.cpu_max, delta.cpu_percent)
        self.cpu_total += delta.cpu_percent
        self.lag_max = max(self.lag_max, delta.lag)
        self.stop_lag_max = max(self.stop_lag_max, delta.stop_lag)
        for kind, cell in per_kind.items():
            mine = self.kinds.setdefault(kind, Cell())
            mine.add(cell)
            mine.pack()  # an hour of rows stays small: see loadgen.stats.cells
        self._figures = None

    def figures(self, kind: str) -> dict[str, Any]:
        """Counts and percentiles (ms) of ``kind`` in this second."""
        if self._figures is None:
            self._figures = {}
        if kind not in self._figures:
            cell = self.kinds.get(kind) or Cell()
            self._figures[kind] = {
                "attempted": cell.attempted, "completed": cell.completed, "failed": cell.failed,
                "retransmits": cell.retransmits, "ended": cell.ended, "sent_bytes": cell.sent_bytes,
                "received_bytes": cell.received_bytes, "errors": dict(cell.failures), "rsts": cell.rsts,
                "codes": dict(cell.codes), **cell.percentiles_ms(),
            }
            cell.pack()
        return self._figures[kind]


class RunStats:
    """Totals per (kind, target) and the per-second series of one run (see the module doc).

    ``kinds``: the kinds the run will count, in report order (:func:`~loadgen.stats.facts.scenario_kinds`);
    they are shown, with zeros, before they are first seen. Kinds seen but not declared follow them.
    """

    def __init__(self, kinds: Iterable[str] = ()) -> None:
        self.declared = tuple(kinds)
        self.totals: dict[Key, Cell] = {}
        self.seconds: dict[int, SecondRow] = {}
        self.deltas = 0
        self._kinds: dict[str, Cell] | None = None

    def reset(self) -> None:
        """Forget everything (a new run from the web UI starts from zero, as Locust's stats do)."""
        self.totals = {}
        self.seconds = {}
        self.deltas = 0
        self._kinds = None

    # -- building --------------------------------------------------------------------

    def apply(self, delta: SecondDelta) -> None:
        """Add one process's second: to the totals and to the row of its second index."""
        by_kind: dict[str, list[Cell]] = {}
        for key, cell in delta.cells.items():
            total = self.totals.get(key)
            if total is None:
                total = self.totals[key] = Cell()
            total.add(cell)
            by_kind.setdefault(key[0], []).append(cell)
        per_kind: dict[str, Cell] = {}
        for kind, cells in by_kind.items():
            per_kind[kind] = cells[0]  # usually one target: no copy
            if len(cells) > 1:
                per_kind[kind] = Cell()
                for cell in cells:
                    per_kind[kind].add(cell)
        row = self.seconds.get(delta.index)
        if row is None:
            row = self.seconds[delta.index] = SecondRow(delta.index, delta.wall)
        row.merge(delta, per_kind)
        self.deltas += 1
        self._kinds = None

    # -- reading: the interface thresholds and summaries use ---------------------------------

    @property
    def kinds(self) -> dict[str, Cell]:
        """Totals per kind over all targets (fresh cells; cached until the next delta)."""
        if self._kinds is None:
            kinds = {kind: Cell() for kind in run_kinds([*self.declared, *(kind for kind, _ in self.totals)])}
            for (kind, _), cell in self.totals.items():
                kinds[kind].add(cell)
            self._kinds = kinds
        return self._kinds

    @property
    def kind_names(self) -> tuple[str, ...]:
        """The run's kinds in report order: "handshake", then the declared kinds and those seen
        (in first-seen order); "ping" when there is no other (see :func:`~loadgen.stats.facts.run_kinds`)."""
        return tuple(self.kinds)

    def kinds_of(self, target: str) -> tuple[str, ...]:
        """The kinds ``target`` counted, in report order (handshake always; ping when it has no other).
        With device groups each ``group@target`` has its own group's kinds."""
        mine = [kind for kind in self.kind_names if kind == HANDSHAKE or (kind, target) in self.totals]
        if len(mine) == 1 and PING in self.kinds:
            mine.append(PING)
        return tuple(mine)

    def lag_max(self) -> float:
        """Worst event-loop lag any load process had in any second (s)."""
        return max((row.lag_max for row in self.seconds.values()), default=0.0)

    def stop_lag_max(self) -> float:
        """Worst event-loop lag while the load processes stopped their users (s)."""
        return max((row.stop_lag_max for row in self.seconds.values()), default=0.0)

    @property
    def handshakes(self) -> Cell:
        return self.kinds[HANDSHAKE]

    @property
    def pings(self) -> Cell:
        """The "ping" kind's totals (an empty cell in a run of request steps)."""
        return self.kinds.get(PING) or Cell()

    @property
    def requests(self) -> Cell:
        """Every request/response attempt (all kinds but handshakes and notifications) merged: the pings
        of a plain run, all request steps' requests otherwise. A fresh cell."""
        total = Cell()
        for kind in request_kinds(self.kind_names):
            total.add(self.kinds[kind])
        return total

    @property
    def targets(self) -> list[str]:
        return sorted({target for _, target in self.totals})

    def cell(self, kind: str, target: str) -> Cell:
        return self.totals.get((kind, target)) or Cell()

    def active(self, target: str | None = None) -> int:
        """Associations up now: completed handshakes minus associations ended."""
        cells = [c for (k, t), c in self.totals.items() if k == HANDSHAKE and (target is None or t == target)]
        return sum(c.completed - c.ended for c in cells)

    def rows(self) -> list[dict[str, Any]]:
        """The per-second series, oldest first, as plain data (latencies in ms)."""
        out = []
        active = 0
        names = self.kind_names
        for index in sorted(self.seconds):
            row = self.seconds[index]
            hs = row.figures(HANDSHAKE)
            active += hs["completed"] - hs["ended"]
            figures = {kind: row.figures(kind) for kind in names}
            out.append({
                "second": index, "time": row.wall, "duration": row.duration, "users": row.users,
                "processes": row.processes, "cpu_max": row.cpu_max, "cpu_total": row.cpu_total,
                "lag_max": row.lag_max, "stop_lag_max": row.stop_lag_max, "active": active,
                # A plain run's kinds also at the top, as before request steps; request names only
                # under "kinds" (a request may be called "users").
                **{kind: figures[kind] for kind in KINDS if kind in figures}, "kinds": figures,
            })
        return out

    def span(self, first: int, end: int) -> tuple[dict[str, Cell], list[SecondRow]]:
        """Per-kind cells and the rows of seconds ``first <= index < end`` (exact merge)."""
        rows = [self.seconds[i] for i in sorted(self.seconds) if first <= i < end]
        cells = {kind: Cell() for kind in self.kind_names}
        for row in rows:
            for kind, cell in row.kinds.items():
                cells.setdefault(kind, Cell()).add(cell)
                cell.pack()
        return cells, rows

    # -- saving -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Everything needed to rebuild this object (histograms included): ``series.json``."""
        order = {kind: n for n, kind in enumerate(self.kind_names)}  # from_json rebuilds the run's kind order
        # A plain run's file keeps its old keys; a run of request steps records its declared kinds.
        declared = {} if is_plain(self.declared) else {"declared": list(self.declared)}
        return {
            "version": 1, **declared,
            "totals": [[kind, target, cell.to_json()] for (kind, target), cell in
                       sorted(self.totals.items(), key=lambda item: (order[item[0][0]], item[0][1]))],
            "seconds": [
                {"second": row.index, "time": row.wall, "duration": row.duration, "users": row.users,
                 "processes": row.processes, "cpu_max": row.cpu_max, "cpu_total": row.cpu_total,
                 "lag_max": row.lag_max, "stop_lag_max": row.stop_lag_max,
                 "kinds": {kind: (row.kinds.get(kind) or Cell()).to_json() for kind in self.kind_names}}
                for row in (self.seconds[i] for i in sorted(self.seconds))
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunStats:
        stats = cls(data.get("declared", ()))
        for kind, target, wire in data.get("totals", []):
            stats.totals[(kind, target)] = Cell.from_wire(wire)
        for item in data.get("seconds", []):
            row = SecondRow(int(item["second"]), float(item["time"]), float(item["duration"]), int(item["users"]),
                            int(item["processes"]), float(item["cpu_max"]), float(item["cpu_total"]),
                            float(item.get("lag_max", 0.0)), float(item.get("stop_lag_max", 0.0)))
            row.kinds.update({kind: Cell.from_wire(wire) for kind, wire in item["kinds"].items()})
            stats.seconds[row.index] = row
        return stats

