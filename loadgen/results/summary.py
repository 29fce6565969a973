"""A finished run's outcome, the summary printed at its end and the data of its ``summary.json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from locust.env import Environment

from loadgen.capacity import KNEE_FOUND, Analysis, nothing_ended
from loadgen.locust.health import Health
from loadgen.scenario import Scenario, Target
from loadgen.stats.cells import Cell
from loadgen.stats.facts import KINDS, is_notification, is_plain, plural
from loadgen.stats.run import RunStats
from loadgen.stats.thresholds import Verdict
from loadgen.stats.words import counts_text


@dataclass
class RunOutcome:
    """What a finished run leaves behind."""

    scenario: Scenario
    environment: Environment
    stats: RunStats  # exact totals per kind and target, and the per-second series
    elapsed: float
    verdicts: list[Verdict] = field(default_factory=list)
    results_dir: Path | None = None
    server_summary: str = ""
    analysis: Analysis | None = None  # steps, knee, verdict sentence (not on workers)
    health: Health | None = None  # loop lag, workers marked missing, Locust vs loadgen counts (not on workers)
    interrupted: bool = False  # stopped (Ctrl-C, SIGTERM) before its planned end
    targets: tuple[Target, ...] = ()  # as run: the built-in server's real address (empty: the scenario's)

    @property
    def outcome(self) -> str:
        """``passed``, ``failed`` or ``interrupted``: what the verdict's first word says."""
        return "interrupted" if self.interrupted else "passed" if self.passed else "failed"

    @property
    def failed_attempts(self) -> int:
        """Attempts of every kind that failed (attempts still in flight at the stop are neither)."""
        return sum(t.failed for t in self.stats.kinds.values())

    @property
    def measured_nothing(self) -> bool:
        """No attempt of any kind ended: all were in flight at the stop (see
        :func:`~loadgen.capacity.nothing_ended`). Judged for the whole run only: a worker may have been
        given no users at all."""
        return self.analysis is not None and nothing_ended(self.stats)

    @property
    def counts_lost(self) -> list[str]:
        """Why the counts are not the whole run (:meth:`~loadgen.locust.health.Health.accounting`);
        empty when they are, and on a worker (the master judges)."""
        return self.health.accounting() if self.health is not None else []

    @property
    def passed(self) -> bool:
        """A run whose counts were lost fails (a worker's file missing, Locust's and loadgen's counts
        apart). A stepped run is a capacity search, judged by its knee as its verdict is (failures past
        the knee are what finding it takes). A run in which no attempt ended fails. Otherwise thresholds
        decide when the scenario has them; without, any failed attempt fails the run (Locust's
        convention: ``locust`` exits 1 on any failure)."""
        if self.counts_lost:
            return False
        if self.analysis is not None and self.analysis.knee is not None:
            return self.analysis.knee.limited_by in KNEE_FOUND
        if self.measured_nothing:
            return False
        if self.verdicts:
            return all(v.passed for v in self.verdicts)
        return self.failed_attempts == 0

    def exit_status(self, on_error: int) -> int:
        """0 when the run passed; 1 when a threshold failed, no attempt ended or counts were lost; else
        ``on_error`` (``--exit-code-on-error``: failed attempts in a run without thresholds, which 0
        tolerates; it does not apply to a run that measured nothing or lost counts: no failure of
        the server's made it fail)."""
        if self.passed:
            return 0
        return 1 if self.verdicts or self.measured_nothing or self.counts_lost else on_error


# -- the console summary ----------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def print_summary(outcome: RunOutcome, out: TextIO) -> None:
    """loadgen's exact totals and percentiles first, Locust's counts of the same attempts, the thresholds.

    Locust's latency columns are left out: it keeps response times rounded (to whole ms below
    100 ms, 2 significant digits above), so its median read 0.0 ms against an exact 0.43 ms and
    a distributed p99 came out above the max. Its counts are exact and are the cross-check."""
    _print_exact_figures(outcome, out)
    _print_locust_counts(outcome, out)
    if outcome.server_summary:
        print(outcome.server_summary, file=out)
    for v in outcome.verdicts:
        print(f"threshold {v.describe()}", file=out)
    _print_result(outcome, out)
    _print_health(outcome, out)
    if outcome.analysis is not None:
        print(f"loadgen: verdict: {outcome.analysis.verdict}", file=out)


def _print_exact_figures(outcome: RunOutcome, out: TextIO) -> None:
    print("\nloadgen's exact figures (every attempt, HDR histograms):", file=out)
    stats = outcome.stats
    for kind, t in stats.kinds.items():
        print(_figures_line(f"{plural(kind):<11}" if kind in KINDS else f"{kind}:", kind, t), file=out)
    # Per target (each device group's ``group@target``) when there is more than a plain run's totals.
    if len(stats.targets) > 1 and not (is_plain(stats.kind_names) and not any("@" in t for t in stats.targets)):
        for target in stats.targets:
            for kind in stats.kinds_of(target):
                print(_figures_line(f"  {target} {kind}:", kind, stats.cell(kind, target)), file=out)


def _figures_line(head: str, kind: str, t: Cell) -> str:
    """One kind's counts, percentiles and error codes; response codes, RSTs and retransmissions
    for request kinds (notifications: the interval between them, not a latency)."""
    codes = counts_text(t.failures)
    timing = "interval p50" if is_notification(kind) else "p50"
    line = (f"{head} attempted {t.attempted}, completed {t.completed}, failed {t.failed}, "
            f"in flight at stop {t.in_flight}; {timing} {_ms(t.percentile(50))} ms, p99 {_ms(t.percentile(99))} ms;"
            f" errors: {codes}")
    # Plain request steps have no response codes: the tail only where there is something to say (CoAP).
    if t.shows_codes(kind) and (t.codes or t.rsts or t.retransmits):
        replies = counts_text(t.codes)
        line += f"; retransmits {t.retransmits}, RSTs {t.rsts}, response codes: {replies}"
    return line


def _print_locust_counts(outcome: RunOutcome, out: TextIO) -> None:
    stats = outcome.environment.stats
    print("Locust's request counts (the same attempts; for latencies use loadgen's figures above):", file=out)
    entries = sorted(stats.entries.values(), key=lambda e: (e.name, e.method))
    # As wide as the longest name ("gw1 observe time notification" ran into the type column).
    width = max([28, *(len(e.name) + 2 for e in entries)])
    print(f"{'name':<{width}}{'type':<6}{'count':>9}{'fail':>7}{'per s':>9}", file=out)
    for e in entries:
        print(f"{e.name:<{width}}{e.method:<6}{e.num_requests:>9}{e.num_failures:>7}"
              f"{e.num_requests / max(outcome.elapsed, 1e-9):>9.1f}", file=out)


def _print_result(outcome: RunOutcome, out: TextIO) -> None:
    """Interrupted, thresholds met or not, or failed attempts in a run without thresholds."""
    if outcome.interrupted:
        print("loadgen: INTERRUPTED: stopped before the planned end; the figures cover the part that ran", file=out)
    if outcome.verdicts:
        failed = sum(not v.passed for v in outcome.verdicts)
        result = f"FAILED: {failed} of {len(outcome.verdicts)} thresholds not met" if failed else \
            "passed: every threshold met"
        print(f"loadgen: {result}", file=out)
    elif outcome.failed_attempts:
        print(f"loadgen: FAILED: {outcome.failed_attempts} attempts failed and the scenario sets no thresholds "
              "(then any failure fails the run; set thresholds.error_ratio to allow some)", file=out)
    if outcome.measured_nothing:
        print(f"loadgen: FAILED: {nothing_ended_text(outcome)}", file=out)
    if lost := outcome.counts_lost:
        print(f"loadgen: FAILED: {counts_lost_text(lost)}", file=out)


def counts_lost_text(problems: list[str]) -> str:
    """Why a run whose counts were lost failed."""
    return (f"counts were lost ({'; '.join(problems)}): the figures above are not the whole run, so it "
            "cannot pass (see the health line)")


def nothing_ended_text(outcome: RunOutcome) -> str:
    """Why a run in which no attempt ended failed, and what to do about it."""
    attempted = sum(c.attempted for c in outcome.stats.kinds.values())
    what = f"attempted {attempted}, every one in flight at the stop" if attempted else "none was started"
    return (f"no attempt ended in the run's {outcome.elapsed:.1f} s ({what}): nothing was measured; run "
            "longer (-t or run_time) or check that the target answers")


def _print_health(outcome: RunOutcome, out: TextIO) -> None:
    if (h := outcome.health) is None:
        return
    same = "equal" if not h.counts_differ else "DIFFER"
    counts = ", ".join(f"{plural(kind)} {c['locust']}/{c['loadgen']}" for kind, c in h.counts.items())
    missed = ", ".join(map(str, h.missed)) or "none"
    workers = f"workers {h.workers}, marked missing: {missed}; " if h.workers else ""
    print(f"loadgen: health: {workers}event-loop lag max {h.lag_max * 1000:.0f} ms "
          f"({h.stop_lag_max * 1000:.0f} ms while stopping); "
          f"Locust/loadgen counts {same} ({counts})", file=out)


# -- summary.json ---------------------------------------------------------------------


def summary_data(outcome: RunOutcome) -> dict[str, Any]:
    """The JSON summary: totals, percentiles (ms), error codes per kind, thresholds; ``interrupted``
    and ``outcome`` (passed / failed / interrupted) as the verdict's first word says."""
    # Locust's counts only: its latencies are rounded (see print_summary); the exact ones are above.
    locust_view = {
        f"{e.method} {e.name}": {"requests": e.num_requests, "failures": e.num_failures}
        for e in outcome.environment.stats.entries.values()
    }
    return {
        "scenario": outcome.scenario.name, "elapsed_s": outcome.elapsed,
        "interrupted": outcome.interrupted, "outcome": outcome.outcome, **_kinds_data(outcome),
        "locust": locust_view,
        "thresholds": [v.to_json() for v in outcome.verdicts],
        "server": outcome.server_summary,
        # Issue 5: exact figures per target, the run's start, the steps / knee / verdict.
        "targets": targets_summary(outcome.stats, outcome.elapsed),
        "endpoints": [{"name": t.name, "host": t.host, "port": t.port, "protocol": t.protocol}
                      for t in outcome.targets or outcome.scenario.targets],
        "active_associations": outcome.stats.active(),
        "started_utc": _started_utc(outcome.stats),
        "analysis": outcome.analysis.to_json() if outcome.analysis is not None else None,
        "health": outcome.health.to_json() if outcome.health is not None else None,
    }


def _kinds_data(outcome: RunOutcome) -> dict[str, Any]:
    """Per kind: totals, error codes, bytes, rate and exact percentiles (ms); request kinds also
    response codes and RSTs. See :func:`by_kind` for where each kind goes."""
    kinds = {}
    for kind, t in outcome.stats.kinds.items():
        data = t.summary(outcome.elapsed, kind)
        timing = "interval_ms" if is_notification(kind) else "latency_ms"
        data[timing] = {f"p{p:g}": (None if (v := t.percentile(p)) is None else v * 1000)
                        for p in (50, 90, 95, 99, 99.9, 100)}
        kinds[kind] = data
    return by_kind(kinds)


def by_kind(figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Where a summary keeps each kind's figures: a plain run's "handshake" and "ping" at the top, as
    they always were; request kinds, in the run's order, under "requests" (a request may be named
    like any other key)."""
    out: dict[str, Any] = {kind: data for kind, data in figures.items() if kind in KINDS}
    requests = {kind: data for kind, data in figures.items() if kind not in KINDS}
    if requests:
        out["requests"] = requests
    return out


def targets_summary(stats: RunStats, elapsed: float) -> dict[str, Any]:
    """Per target (``group@target`` with device groups): its kinds' totals (with exact percentiles,
    placed as :func:`by_kind` says) and active associations."""
    out: dict[str, Any] = {}
    for target in stats.targets:
        out[target] = by_kind({kind: stats.cell(kind, target).summary(elapsed, kind)
                               for kind in stats.kinds_of(target)})
        out[target]["active_associations"] = stats.active(target)
    return out


def _started_utc(stats: RunStats) -> str | None:
    first = min(stats.seconds.values(), key=lambda row: row.index, default=None)
    return datetime.fromtimestamp(first.wall, UTC).isoformat(timespec="seconds") if first else None
