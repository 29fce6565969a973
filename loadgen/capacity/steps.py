"""Per-step measurements of a stepped run: offered load, throughput, latency, errors, generator CPU.

A step is one ramp stage. Its first seconds are spent spawning clients and letting
the new ones settle, so each step is measured over its later seconds only (see
:func:`settle_time`). Counts and percentiles come from the exact per-second cells of
:class:`~loadgen.stats.run.RunStats`, merged over the step's seconds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from loadgen.protocol.errors import PingTimeout
from loadgen.scenario import Scenario, Stage
from loadgen.stats.cells import Cell
from loadgen.stats.facts import HANDSHAKE, PING
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
    ping: KindFigures
    error_ratio: float | None  # failed / ended attempts, all kinds
    loss_ratio: float | None  # pings unanswered / pings ended
    cpu_max: float  # busiest load process, mean over the window, % of one core
    cpu_peak: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepResult:
        values = dict(data)
        values["handshake"] = KindFigures(**data["handshake"])
        values["ping"] = KindFigures(**data["ping"])
        return cls(**values)


def offered_rate(scenario: Scenario, clients: int, workload: Workload, period: float) -> float | None:
    """Attempts per second ``clients`` make when served at once: handshakes (churn) or pings (steady)."""
    per_client = len(scenario.targets) if scenario.clients.connect == "all" and scenario.targets else 1
    return clients * per_client / (period if workload == "churn" else scenario.ping.interval)


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
            hs, ping = cells[HANDSHAKE], cells[PING]
            ended = hs.completed + hs.failed + ping.completed + ping.failed
            ping_ended = ping.completed + ping.failed
            primary = hs if workload == "churn" else ping
            results.append(StepResult(
                index=n, clients=stage.clients, start=start, end=end, measured_from=float(first),
                measured_to=float(last), seconds=seconds, users=sum(r.users for r in rows) / len(rows),
                offered_rate=offered_rate(scenario, stage.clients, workload, period),
                throughput=primary.completed / seconds if seconds > 0 else 0.0,
                handshake=KindFigures.of(hs, seconds), ping=KindFigures.of(ping, seconds),
                error_ratio=(hs.failed + ping.failed) / ended if ended else None,
                loss_ratio=ping.failures.get(LOSS_CODE, 0) / ping_ended if ping_ended else None,
                cpu_max=sum(r.cpu_max for r in rows) / len(rows), cpu_peak=max(r.cpu_max for r in rows),
            ))
        start = start_of_next
    return results
