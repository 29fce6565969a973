"""Per-step measurements of a stepped run: offered load, throughput, latency, errors, generator CPU.

A step is one ramp stage. Its first seconds are spent spawning clients and letting
the new ones settle, so each step is measured over its later seconds only (see
:func:`settle_time`). Counts and percentiles come from the exact per-second cells of
:class:`~loadgen.stats.run.RunStats`, merged over the step's seconds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from loadgen.protocol.errors import PingTimeout
from loadgen.scenario import Scenario, Stage
from loadgen.stats.cells import Cell
from loadgen.stats.facts import HANDSHAKE, is_plain, request_kinds
from loadgen.stats.run import RunStats

Workload = Literal["steady", "churn"]
#: Error code of a ping that got no answer in time: what "loss" means for pings.
LOSS_CODE = PingTimeout.code


def settle_time(duration: float) -> float:
    """Seconds at the start of a step left out of its measurement: a quarter, at least 1 s, at most half."""
    return min(max(1.0, duration / 4), duration / 2)


@dataclass(frozen=True)
class KindFigures:
    """One kind of attempt during a step's measured window."""

    completed: int
    failed: int
    rate: float  # completed per second
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    retransmits: int
    errors: dict[str, int]

    @classmethod
    def of(cls, cell: Cell, seconds: float) -> KindFigures:
        pct = cell.percentiles_ms()
        return cls(cell.completed, cell.failed, cell.completed / seconds if seconds > 0 else 0.0,
                   pct["p50"], pct["p95"], pct["p99"], cell.retransmits, dict(cell.failures))


@dataclass(frozen=True)
class StepResult:
    """What one step offered and what it got."""

    index: int  # 1-based
    clients: int  # offered clients (the stage's target)
    start: float  # stage start, seconds into the run
    end: float
    measured_from: float  # measurement window (seconds into the run)
    measured_to: float
    seconds: float  # seconds actually measured (sum of row durations)
    users: float  # mean running clients in the window
    offered_rate: float | None  # attempts per second the clients would make if served at once
    throughput: float  # the workload's completions per second
    handshake: KindFigures
    ping: KindFigures  # a plain run's pings; with request steps all requests together (not notifications)
    error_ratio: float | None  # failed / ended attempts, all kinds
    loss_ratio: float | None  # pings (requests) unanswered / ended
    cpu_max: float  # busiest load process, mean over the window, % of one core
    cpu_peak: float
    kinds: dict[str, KindFigures] = field(default_factory=dict)  # with request steps: each request kind

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.kinds:  # a plain run's steps keep the shape they had
            del data["kinds"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepResult:
        values = dict(data)
        values["handshake"] = KindFigures(**data["handshake"])
        values["ping"] = KindFigures(**data["ping"])
        values["kinds"] = {kind: KindFigures(**figures) for kind, figures in (data.get("kinds") or {}).items()}
        return cls(**values)


def offered_rate(scenario: Scenario, clients: int, workload: Workload, period: float) -> float | None:
    """Attempts per second ``clients`` make when served at once: handshakes (churn) or pings (steady);
    with request steps, their periodic requests (steps with an interval, and the weighted steps on the
    ping section's shared interval; ``once`` steps do not recur). None for device groups (each has its own)."""
    per_client = len(scenario.targets) if scenario.clients.connect == "all" and scenario.targets else 1
    if workload == "churn":
        return clients * per_client / period
    if scenario.devices:
        return None
    if not scenario.requests:
        return clients * per_client / scenario.ping.interval
    steps = [step for step in scenario.requests if not step.once]
    per_second = sum(1 / step.interval for step in steps if step.interval and step.weight is None)
    if any(step.weight is not None for step in steps):
        per_second += 1 / scenario.ping.interval
    return clients * per_client * per_second


def _merged(cells: dict[str, Cell], kinds: tuple[str, ...]) -> Cell:
    total = Cell()
    for kind in kinds:
        total.add(cells[kind])
    return total


def measure_steps(stats: RunStats, stages: tuple[Stage, ...], scenario: Scenario, workload: Workload,
                  period: float) -> list[StepResult]:
    """One :class:`StepResult` per stage that has at least one fully measured second."""
    results = []
    start = 0.0
    for n, stage in enumerate(stages, 1):
        end = start + stage.duration
        first = math.ceil(start + settle_time(stage.duration))
        last = math.floor(end)  # seconds [first, last) lie inside the step
        cells, rows = stats.span(first, last)
        start_of_next = end
        if rows:
            seconds = sum(r.duration for r in rows)
            hs, ping = cells[HANDSHAKE], _merged(cells, request_kinds(cells))
            ended = sum(cell.completed + cell.failed for cell in cells.values())
            ping_ended = ping.completed + ping.failed
            primary = hs if workload == "churn" else ping
            results.append(StepResult(
                index=n, clients=stage.clients, start=start, end=end, measured_from=float(first),
                measured_to=float(last), seconds=seconds, users=sum(r.users for r in rows) / len(rows),
                offered_rate=offered_rate(scenario, stage.clients, workload, period),
                throughput=primary.completed / seconds if seconds > 0 else 0.0,
                handshake=KindFigures.of(hs, seconds), ping=KindFigures.of(ping, seconds),
                error_ratio=sum(cell.failed for cell in cells.values()) / ended if ended else None,
                loss_ratio=ping.failures.get(LOSS_CODE, 0) / ping_ended if ping_ended else None,
                cpu_max=sum(r.cpu_max for r in rows) / len(rows), cpu_peak=max(r.cpu_max for r in rows),
                kinds={} if is_plain(cells) else {kind: KindFigures.of(cell, seconds) for kind, cell in cells.items()
                                                  if kind != HANDSHAKE},
            ))
        start = start_of_next
    return results
