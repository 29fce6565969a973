"""Pass/fail verdicts for a run's thresholds (handshake and ping percentiles, errors, rate), judged on its
:class:`~loadgen.stats.run.RunStats`."""

from __future__ import annotations

from dataclasses import dataclass

from loadgen.scenario import Thresholds
from loadgen.stats.facts import PING, request_kinds
from loadgen.stats.run import RunStats


@dataclass(frozen=True)
class Verdict:
    """One threshold: ``actual`` against ``limit``; ``upper`` means actual must not exceed limit."""

    name: str
    limit: float
    actual: float | None
    upper: bool
    unit: str
    kind: str = ""  # the request kind a per-kind threshold (ping_p99) judges; "" for a plain run's pings

    @property
    def label(self) -> str:
        """What the actual figure is, for messages: "telemetry p99 " for a request kind, else nothing."""
        return f"{self.kind} {self.name.rsplit('_', 1)[-1]} " if self.kind else ""

    @property
    def passed(self) -> bool:
        if self.actual is None:
            return False
        return self.actual <= self.limit if self.upper else self.actual >= self.limit

    def describe(self) -> str:
        def fmt(v: float) -> str:
            if self.unit != "s":
                return f"{v:.4g}{self.unit}"
            # Below 0.1 ms, one decimal would print a limit of 1 us as "0.0 ms".
            return f"{v * 1000:.1f} ms" if v == 0 or v >= 1e-4 else f"{v * 1000:.2g} ms"

        if self.actual is None:
            return f"FAIL {self.name}: {self.label}no data (limit {fmt(self.limit)})"
        sign = "<=" if self.upper else ">="
        if self.passed:
            return f"pass {self.name}: {self.label}{fmt(self.actual)} {sign} {fmt(self.limit)}"
        off = abs(self.actual - self.limit)
        ratio = f" ({off / self.limit:.0%})" if self.limit else ""
        return (f"FAIL {self.name}: {self.label}{fmt(self.actual)}, limit {sign} {fmt(self.limit)}, "
                f"off by {fmt(off)}{ratio}")

    def to_json(self) -> dict[str, object]:
        """The summary's entry: name, limit, actual, passed (and the kind a per-kind threshold judged)."""
        data: dict[str, object] = {"name": self.name, "limit": self.limit, "actual": self.actual,
                                   "passed": self.passed}
        if self.kind:
            data["kind"] = self.kind
        return data


def evaluate(thresholds: Thresholds, stats: RunStats, elapsed: float) -> list[Verdict]:
    """Verdicts for every threshold the scenario sets, in a stable order. ``ping_p99`` judges each
    request kind that was attempted (notification intervals are not latencies: never judged), one
    verdict each; error_ratio covers every attempt of every kind."""
    hs = stats.handshakes
    kinds = stats.kinds
    ended = sum(cell.completed + cell.failed for cell in kinds.values())
    failed = sum(cell.failed for cell in kinds.values())
    checks: list[tuple[str, float | None, float | None, bool, str, str]] = [
        ("handshake_p95", thresholds.handshake_p95, hs.percentile(95), True, "s", ""),
        ("handshake_p99", thresholds.handshake_p99, hs.percentile(99), True, "s", ""),
        *(("ping_p99", thresholds.ping_p99, _p99(stats, kind), True, "s", "" if kind == PING else kind)
          for kind in _judged_requests(stats)),
        ("error_ratio", thresholds.error_ratio, failed / ended if ended else None, True, "", ""),
        ("min_handshake_rate", thresholds.min_handshake_rate, hs.completed / elapsed if elapsed > 0 else None,
         False, "/s", ""),
    ]
    return [Verdict(name, limit, actual, upper, unit, kind) for name, limit, actual, upper, unit, kind in checks
            if limit is not None]


def _p99(stats: RunStats, kind: str) -> float | None:
    cell = stats.kinds.get(kind)
    return cell.percentile(99) if cell is not None else None


def _judged_requests(stats: RunStats) -> tuple[str, ...]:
    """The request kinds ``ping_p99`` judges: those attempted; with none attempted, the first (no data)."""
    kinds = request_kinds(stats.kind_names)
    attempted = tuple(kind for kind in kinds if stats.kinds[kind].attempted)
    return attempted or kinds[:1] or (PING,)
