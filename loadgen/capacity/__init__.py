"""Capacity planning: stepped load, per-step measurements, the knee and a one-sentence verdict.

``loadgen capacity SCENARIO`` turns a scenario into stepped stages (:func:`stepped`)
and runs it; any run whose scenario has stages is analysed the same way afterwards
(:func:`analyze`), and a run without stages still gets a verdict sentence from its
totals and thresholds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from loadgen.capacity.knee import Knee, find_knee, unit_of
from loadgen.capacity.steps import StepResult, Workload, measure_steps, settle_time
from loadgen.scenario import Scenario, Stage, Thresholds
from loadgen.stats.facts import is_plain
from loadgen.stats.run import RunStats

__all__ = ["Analysis", "Knee", "StepResult", "Workload", "analyze", "nothing_ended", "run_verdict", "settle_time",
           "stepped"]


@dataclass(frozen=True)
class Analysis:
    """Steps (empty without stages), the knee (None without stages) and the verdict sentence,
    which starts with PASS, FAIL or INTERRUPTED (see :func:`judgement`)."""

    verdict: str
    workload: Workload = "steady"
    period: float = 1.0
    steps: tuple[StepResult, ...] = ()
    knee: Knee | None = None
    stages: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "interrupted": self.interrupted, "workload": self.workload,
                "period": self.period,
                "unit": unit_of(self.workload), "stages": list(self.stages),
                "steps": [s.to_json() for s in self.steps], "knee": self.knee.to_json() if self.knee else None}


def stepped(scenario: Scenario, *, start: int, step: int, steps: int, step_time: float,
            spawn_rate: float | None = None) -> Scenario:
    """``scenario`` with ``steps`` stages of ``start, start + step, ...`` clients, ``step_time`` each."""
    if start < 1 or step < 0 or steps < 1 or step_time <= 0:
        raise ValueError("capacity steps need start >= 1, step >= 0, steps >= 1 and a step time > 0")
    counts = [start + k * step for k in range(steps)]
    # New clients of a step should all be there within its settle time, so the step is measured at full load.
    rate = spawn_rate or max(scenario.clients.spawn_rate, max(step, start) / max(settle_time(step_time) / 2, 0.5))
    stages = tuple(Stage(step_time, n, rate) for n in counts)
    clients = dataclasses.replace(scenario.clients, count=max(counts), spawn_rate=rate)
    return dataclasses.replace(scenario, stages=stages, clients=clients, run_time=step_time * steps)


def is_stepped(stages: tuple[Stage, ...]) -> bool:
    """Whether the stages raise the load step by step (what a knee can be found in)."""
    return len(stages) >= 2 and all(b.clients > a.clients for a, b in zip(stages, stages[1:], strict=False))


#: Knee outcomes that answer the capacity question (``loadgen capacity`` exits 0 for them).
KNEE_FOUND = ("server", "not-reached")


def nothing_ended(stats: RunStats) -> bool:
    """Whether no attempt of any kind ended, completed or failed: every one was still in flight at the
    stop (a run cut short during its first handshakes, a server that never answers). Such a run measured
    nothing and fails whatever else it shows: "0 failed" and "0.0% errors" of no attempts are not a pass.
    (A run whose every attempt failed is judged by the failure rules: thresholds, else any failure.)"""
    return not any(cell.completed or cell.failed for cell in stats.kinds.values())


def judgement(stats: RunStats, failed_thresholds: int, total_thresholds: int, interrupted: bool,
              counts_lost: bool = False) -> str:
    """The verdict's first word: INTERRUPTED (stopped before its planned end), else PASS or FAIL as
    the exit status decides: FAIL when no attempt ended or counts were lost (the health's
    ACCOUNTING); else thresholds when the scenario has them, otherwise any failed attempt."""
    if interrupted:
        return "INTERRUPTED"
    if nothing_ended(stats) or counts_lost:
        return "FAIL"
    if total_thresholds:
        return "FAIL" if failed_thresholds else "PASS"
    return "FAIL" if any(cell.failed for cell in stats.kinds.values()) else "PASS"


def analyze(stats: RunStats, scenario: Scenario, elapsed: float, failed_thresholds: int, total_thresholds: int,
            workload: Workload = "steady", period: float = 1.0, *, interrupted: bool = False,
            counts_lost: bool = False) -> Analysis:
    """Per-step figures and the knee for stepped runs; otherwise a verdict from the run's totals.
    ``interrupted``: the run was stopped (Ctrl-C, SIGTERM) before its planned end. ``counts_lost``:
    a worker's counts or some of Locust's are missing (:meth:`~loadgen.locust.health.Health.accounting`):
    the run fails, stepped or not."""
    stages = tuple({"duration": s.duration, "clients": s.clients, "spawn_rate": s.spawn_rate}
                   for s in scenario.stages)
    early = f"stopped after {elapsed:.0f} s of the planned {planned_time(scenario):.0f} s; " if interrupted else ""
    if not is_stepped(scenario.stages):
        word = judgement(stats, failed_thresholds, total_thresholds, interrupted, counts_lost)
        sentence = run_verdict(stats, elapsed, failed_thresholds, total_thresholds, workload)
        return Analysis(f"{word}: {early}{sentence}", workload, period, stages=stages, interrupted=interrupted)
    steps = tuple(measure_steps(stats, scenario.stages, scenario, workload, period))
    knee = find_knee(list(steps), scenario.thresholds, workload, interrupted=interrupted)
    # A stepped run is judged by its knee, as ``loadgen capacity``'s exit status is: failures past
    # the knee are what finding it takes.
    word = "INTERRUPTED" if interrupted else "PASS" if knee.limited_by in KNEE_FOUND and not counts_lost else "FAIL"
    return Analysis(f"{word}: {early}{knee.verdict}", workload, period, steps, knee, stages,
                    interrupted=interrupted)


def planned_time(scenario: Scenario) -> float:
    """How long the scenario means to run (s): its stages, else its run time."""
    return sum(s.duration for s in scenario.stages) if scenario.stages else scenario.run_time


def reanalyze(stats: RunStats, scenario: Scenario, data: dict[str, Any], thresholds: Thresholds) -> Analysis:
    """The analysis of a saved run (``loadgen report``): same stages, workload and thresholds."""
    stages = tuple(Stage(float(s["duration"]), int(s["clients"]), float(s["spawn_rate"]))
                   for s in data.get("stages", []))
    scenario = dataclasses.replace(scenario, stages=stages, thresholds=thresholds)
    workload: Workload = "churn" if data.get("workload") == "churn" else "steady"
    if not is_stepped(stages):
        return Analysis(str(data.get("verdict", "")), workload, float(data.get("period", 1.0)), stages=tuple(
            data.get("stages", [])))
    health = data.get("health") or {}
    lost = bool(health.get("worker_files_missing")) or any(
        c.get("locust") != c.get("loadgen") for c in (health.get("counts") or {}).values())
    return analyze(stats, scenario, 0.0, 0, 0, workload, float(data.get("period", 1.0)),
                   interrupted=bool(data.get("interrupted", False)), counts_lost=lost)


def run_verdict(stats: RunStats, elapsed: float, failed: int, total: int, workload: Workload = "steady") -> str:
    """One sentence for a run without steps: what was held, how fast, and the thresholds."""
    hs, pings = stats.handshakes, stats.requests  # with request steps: all requests (is_plain says)
    what = "ping" if is_plain(stats.kind_names) else "request"
    seconds = max(elapsed, 1e-9)
    ended = sum(cell.completed + cell.failed for cell in stats.kinds.values())
    failures = sum(cell.failed for cell in stats.kinds.values())
    errors = f"{failures / ended:.1%}" if ended else "- (none ended)"
    rows = stats.rows()
    peak_active = max((r["active"] for r in rows), default=stats.active())
    p99 = pings.percentile(99) if pings.completed else hs.percentile(99)
    which = what if pings.completed else "handshake"
    latency = f", {which} p99 {p99 * 1000:.1f} ms" if p99 is not None else ""
    if total:
        judged = f"{failed} of {total} thresholds FAILED" if failed else "every threshold met"
    else:  # without thresholds any failed attempt fails the run (the exit status says so too)
        judged = f"FAILED, {failures} attempts failed with no thresholds set" if failures else "no thresholds set"
    if nothing_ended(stats):
        in_flight = sum(cell.in_flight for cell in stats.kinds.values())
        judged = f"FAILED, no attempt ended ({in_flight} in flight at the stop): nothing was measured"
    cpu = max((r["cpu_max"] for r in rows if r["duration"] >= 0.5), default=0.0)  # not the last instant
    load = f"{hs.completed / seconds:.1f} handshakes/s" if workload == "churn" else \
        f"{peak_active} associations up at peak, {pings.completed / seconds:.1f} {what}s/s"
    return (f"Held {load}{latency}, errors {errors} over {elapsed:.0f} s: {judged} "
            f"(no stepped stages, so no knee; generator CPU at most {cpu:.0f}% of a core).")
