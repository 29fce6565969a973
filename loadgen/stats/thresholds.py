"""Pass/fail verdicts for a run's thresholds (handshake and ping percentiles, errors, rate), judged on its
:class:`~loadgen.stats.run.RunStats`."""

from __future__ import annotations

from dataclasses import dataclass

from loadgen.scenario import Thresholds
from loadgen.stats.run import RunStats


@dataclass(frozen=True)
class Verdict:
    """One threshold: ``actual`` against ``limit``; ``upper`` means actual must not exceed limit."""

    name: str
    limit: float
    actual: float | None
    upper: bool
    unit: str

    @property
    def passed(self) -> bool:
        if self.actual is None:
            return False
        return self.actual <= self.limit if self.upper else self.actual >= self.limit

    def describe(self) -> str:
        def fmt(v: float) -> str:
            return f"{v * 1000:.1f} ms" if self.unit == "s" else f"{v:.4g}{self.unit}"

        if self.actual is None:
            return f"FAIL {self.name}: no data (limit {fmt(self.limit)})"
        sign = "<=" if self.upper else ">="
        if self.passed:
            return f"pass {self.name}: {fmt(self.actual)} {sign} {fmt(self.limit)}"
        off = abs(self.actual - self.limit)
        ratio = f" ({off / self.limit:.0%})" if self.limit else ""
        return (f"FAIL {self.name}: {fmt(self.actual)}, limit {sign} {fmt(self.limit)}, "
                f"off by {fmt(off)}{ratio}")


def evaluate(thresholds: Thresholds, stats: RunStats, elapsed: float) -> list[Verdict]:
    """Verdicts for every threshold the scenario sets, in a stable order."""
    hs, pings = stats.handshakes, stats.pings
    ended = hs.completed + hs.failed + pings.completed + pings.failed
    checks: list[tuple[str, float | None, float | None, bool, str]] = [
        ("handshake_p95", thresholds.handshake_p95, hs.percentile(95), True, "s"),
        ("handshake_p99", thresholds.handshake_p99, hs.percentile(99), True, "s"),
        ("ping_p99", thresholds.ping_p99, pings.percentile(99), True, "s"),
        ("error_ratio", thresholds.error_ratio, (hs.failed + pings.failed) / ended if ended else None, True, ""),
        ("min_handshake_rate", thresholds.min_handshake_rate, hs.completed / elapsed if elapsed > 0 else None,
         False, "/s"),
    ]
    return [Verdict(name, limit, actual, upper, unit) for name, limit, actual, upper, unit in checks
            if limit is not None]
