"""Where a stepped run's knee is, and whether the server or the generator set it.

A step is *healthy* when it meets the scenario's thresholds (defaults below when the
scenario sets none) and its throughput still grows with the offered load. The knee is
the last healthy step before the first unhealthy one; its throughput is the
sustainable capacity. When a load process ran near one full core at or before the
step that broke, the generator, not the server, is the bottleneck: the verdict says
so and reports the server's figure as a lower bound instead of a false limit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from loadgen.capacity.steps import StepResult, Workload
from loadgen.scenario import Thresholds

#: A load process above this share of one core (%) cannot be trusted to offer more load.
SATURATED_CPU = 85.0
#: Without a latency threshold: p95 may grow to this many times the first step's (and by DEFAULT_LATENCY_SLACK).
DEFAULT_LATENCY_FACTOR = 3.0
DEFAULT_LATENCY_SLACK_MS = 50.0
#: Without an error threshold: at most this share of attempts may fail (or pings be lost).
DEFAULT_ERROR_RATIO = 0.01
#: Throughput must grow by at least this share of the offered growth from one step to the next ...
MIN_MARGINAL_GAIN = 0.5
#: ... and keep this share of the first step's throughput per offered attempt.
MIN_EFFICIENCY = 0.93


@dataclass(frozen=True)
class StepHealth:
    step: int
    healthy: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Knee:
    """The outcome of the analysis, with the one-sentence verdict."""

    verdict: str
    unit: str
    limited_by: str  # "server", "generator", "not-reached", "interrupted", "first-step", "no-data"
    knee_step: int | None = None
    knee_clients: int | None = None
    capacity: float | None = None  # throughput at the knee (a lower bound when limited_by is "generator")
    peak: float | None = None
    peak_step: int | None = None
    broke_step: int | None = None
    health: tuple[StepHealth, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def unit_of(workload: Workload) -> str:
    return "handshakes/s" if workload == "churn" else "pings/s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def step_health(steps: list[StepResult], thresholds: Thresholds, workload: Workload) -> list[StepHealth]:
    """Judge every step against the thresholds (or defaults) and the growth of its throughput."""
    out: list[StepHealth] = []
    ref = steps[0] if steps else None
    primary = "handshake" if workload == "churn" else "ping"
    for i, step in enumerate(steps):
        reasons: list[str] = []
        figures = {"handshake": step.handshake, "ping": step.ping}
        checks = [("handshake p95", thresholds.handshake_p95, step.handshake.p95_ms),
                  ("handshake p99", thresholds.handshake_p99, step.handshake.p99_ms),
                  ("ping p99", thresholds.ping_p99, step.ping.p99_ms)]
        for name, limit, actual in checks:
            if limit is not None and actual is not None and actual > limit * 1000:
                reasons.append(f"{name} {_ms(actual)} > {_ms(limit * 1000)}")
        has_latency_threshold = (thresholds.handshake_p95 or thresholds.handshake_p99) if primary == "handshake" \
            else thresholds.ping_p99
        ref_p95 = figures[primary].p95_ms if ref is None else (ref.handshake if primary == "handshake"
                                                                else ref.ping).p95_ms
        actual_p95 = figures[primary].p95_ms
        if not has_latency_threshold and i > 0 and ref_p95 is not None and actual_p95 is not None:
            allowed = max(DEFAULT_LATENCY_FACTOR * ref_p95, ref_p95 + DEFAULT_LATENCY_SLACK_MS)
            if actual_p95 > allowed:
                reasons.append(f"{primary} p95 {_ms(actual_p95)} (first step {_ms(ref_p95)})")
        error_limit = thresholds.error_ratio if thresholds.error_ratio is not None else DEFAULT_ERROR_RATIO
        if step.error_ratio is not None and step.error_ratio > error_limit:
            reasons.append(f"errors {step.error_ratio:.1%} > {error_limit:.1%}")
        if thresholds.error_ratio is None and step.loss_ratio is not None and step.loss_ratio > DEFAULT_ERROR_RATIO:
            reasons.append(f"ping loss {step.loss_ratio:.1%}")
        if i > 0:
            reasons += _scaling(steps[0], steps[i - 1], step)
        out.append(StepHealth(step.index, not reasons, tuple(reasons)))
    return out


def _scaling(first: StepResult, prev: StepResult, step: StepResult) -> list[str]:
    reasons = []
    offered_growth = step.clients / prev.clients - 1 if prev.clients else 0.0
    if offered_growth > 0 and prev.throughput > 0:
        growth = step.throughput / prev.throughput - 1
        if growth < MIN_MARGINAL_GAIN * offered_growth:
            reasons.append(f"throughput stopped growing ({growth:+.0%} for {offered_growth:+.0%} offered)")
    if step.offered_rate and first.offered_rate and first.throughput > 0:
        efficiency = (step.throughput / step.offered_rate) / (first.throughput / first.offered_rate)
        if efficiency < MIN_EFFICIENCY and not reasons:
            reasons.append(f"throughput {step.throughput:.0f}/s fell behind the offered {step.offered_rate:.0f}/s")
    return reasons


def find_knee(steps: list[StepResult], thresholds: Thresholds, workload: Workload, *,
              interrupted: bool = False) -> Knee:
    """The knee of ``steps`` and the verdict sentence (see the module doc). ``interrupted``: the run
    was stopped before its last step, so not reaching a knee says nothing about the server's limit."""
    unit = unit_of(workload)
    if not steps:
        return Knee("No step was measured: make the steps longer (each needs a few whole seconds).", unit, "no-data")
    health = step_health(steps, thresholds, workload)
    peak = max(steps, key=lambda s: s.throughput)
    broke = next((i for i, h in enumerate(health) if not h.healthy), None)
    last = broke if broke is not None else len(steps) - 1
    hot = [s for s in steps[:last + 1] if s.cpu_max >= SATURATED_CPU]
    base = Knee("", unit, "", peak=peak.throughput, peak_step=peak.index, health=tuple(health),
                broke_step=steps[broke].index if broke is not None else None)
    if hot:
        return _generator_limited(base, hot[0], max(steps[:last + 1], key=lambda x: x.throughput))
    if broke == 0:
        s = steps[0]
        return replace(
            base, verdict=f"Over capacity already at the first step ({s.clients} clients: "
            f"{'; '.join(health[0].reasons)}); start lower to find the knee.", limited_by="first-step")
    if broke is None:
        return _no_knee(base, steps[-1], workload, interrupted)
    knee, bad = steps[broke - 1], steps[broke]
    cpu = max(s.cpu_max for s in steps[:broke + 1])
    return replace(
        base, verdict=f"Knee at {knee.clients} clients: the server sustains {knee.throughput:.0f} {unit} within the "
        f"thresholds ({_figures(knee, workload)}); at {bad.clients} clients {'; '.join(health[broke].reasons)} "
        f"(peak {peak.throughput:.0f} {unit}; generator CPU at most {cpu:.0f}% of a core, so the limit is "
        f"the server's).",
        limited_by="server", knee_step=knee.index, knee_clients=knee.clients, capacity=knee.throughput)


def _generator_limited(base: Knee, hot: StepResult, best: StepResult) -> Knee:
    """The load generator saturated (at step ``hot``) before the server broke: ``best`` is a lower bound."""
    return replace(
        base, verdict=f"No server limit found: the load generator saturated first (its busiest process ran at "
        f"{hot.cpu_max:.0f}% of a core at {hot.clients} clients), so the server sustained at least "
        f"{best.throughput:.0f} {base.unit}; add --processes or load machines to find the server's knee.",
        limited_by="generator", knee_step=best.index, knee_clients=best.clients, capacity=best.throughput)


def _no_knee(base: Knee, s: StepResult, workload: Workload, interrupted: bool) -> Knee:
    """Every step ``s`` and before was healthy: the run ended (or was interrupted) below the knee."""
    if interrupted:
        return replace(
            base, verdict=f"No knee up to {s.clients} clients before the run was interrupted: the server sustained "
            f"{s.throughput:.0f} {base.unit} within the thresholds ({_figures(s, workload)}); the later steps were "
            f"not run, so run it to its end to find the knee.", limited_by="interrupted", knee_step=s.index,
            knee_clients=s.clients, capacity=s.throughput)
    return replace(
        base, verdict=f"No knee within the tested load: up to {s.clients} clients the server sustained "
        f"{s.throughput:.0f} {base.unit} within the thresholds ({_figures(s, workload)}); raise the load to find "
        f"its limit.", limited_by="not-reached", knee_step=s.index, knee_clients=s.clients,
        capacity=s.throughput)


def _figures(step: StepResult, workload: Workload) -> str:
    kind = step.handshake if workload == "churn" else step.ping
    errors = f"errors {step.error_ratio:.1%}" if step.error_ratio is not None else "no errors"
    return f"p95 {_ms(kind.p95_ms)}, p99 {_ms(kind.p99_ms)}, {errors}"
