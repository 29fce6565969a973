"""``summary.md``: a run's short Markdown summary, shown as is by CI job summaries (GitHub's
``$GITHUB_STEP_SUMMARY``, GitLab, Jenkins' Markdown plugins) and chat tools.

The verdict line, the targets, the workload, one table row per target and kind, and the thresholds.
Every figure is written as words and numbers: no Python structure (``{}``, ``[]``, ``None``) reaches it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from loadgen.capacity.knee import unit_of
from loadgen.stats.cells import Cell
from loadgen.stats.facts import is_notification
from loadgen.stats.words import counts_text

if TYPE_CHECKING:
    from loadgen.results.summary import RunOutcome
    from loadgen.scenario import Scenario

NO_DATA = "-"
FIGURE_COLUMNS = ("Target", "Kind", "Attempts", "Completed", "Failed", "In flight", "Rate /s", "p50 ms", "p95 ms",
                  "p99 ms", "Errors")


def cell_text(text: str) -> str:
    """``text`` safe in a Markdown table cell: pipes escaped, line breaks as spaces."""
    return " ".join(text.replace("|", "\\|").split())


def _ms(seconds: float | None) -> str:
    return NO_DATA if seconds is None else f"{seconds * 1000:.2f}"


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cell_text(c) for c in cells) + " |"


def _table(head: tuple[str, ...], rows: list[list[str]], numeric: range = range(0)) -> list[str]:
    """A Markdown table; the ``numeric`` columns (by index) right-aligned."""
    rule = "| " + " | ".join("---:" if i in numeric else "---" for i in range(len(head))) + " |"
    return [_row(head), rule, *(_row(r) for r in rows)]


def verdict_word(outcome: RunOutcome) -> str:
    """PASS, FAIL or INTERRUPTED, as the verdict sentence and the exit status say."""
    return "INTERRUPTED" if outcome.interrupted else "PASS" if outcome.passed else "FAIL"


def targets_text(outcome: RunOutcome) -> list[str]:
    """One ``name = host:port`` (protocol) per target, the built-in server's real address included."""
    targets = outcome.targets or outcome.scenario.targets
    if not targets:
        return ["`builtin` = the reference server started for the run (dtls)"]
    return [f"`{t.name} = {t.host}:{t.port}` ({t.protocol})" for t in targets]


def workload_text(scenario: Scenario, outcome: RunOutcome) -> str:
    """What the clients did: steady or churn, how many, for how long (or the steps), and what they sent."""
    analysis = outcome.analysis
    workload = analysis.workload if analysis is not None else "steady"
    if scenario.stages:
        counts = [s.clients for s in scenario.stages]
        load = (f"{len(counts)} stages of {', '.join(map(str, counts))} clients, "
                f"{sum(s.duration for s in scenario.stages):g} s planned")
    else:
        load = f"{scenario.clients.count} clients (started at {scenario.clients.spawn_rate:g}/s), " \
               f"{scenario.run_time:g} s planned"
    if workload == "churn":
        period = analysis.period if analysis is not None else 1.0
        what = f"churn: each client handshakes once every {period:g} s and closes"
    else:
        steps = [step.name for group in scenario.fleet() for step in group.requests]
        what = f"steady: requests {', '.join(dict.fromkeys(steps))}" if steps else \
            f"steady: a ping every {scenario.ping.interval:g} s"
    groups = f"; device groups {', '.join(g.name for g in scenario.devices)}" if scenario.devices else ""
    return f"{what}; {load}, {outcome.elapsed:.1f} s ran{groups}"


def _figure_row(target: str, kind: str, cell: Cell, elapsed: float) -> list[str]:
    label = f"{kind} (interval)" if is_notification(kind) else kind
    return [target, label, str(cell.attempted), str(cell.completed), str(cell.failed), str(cell.in_flight),
            f"{cell.completed / max(elapsed, 1e-9):.1f}", _ms(cell.percentile(50)), _ms(cell.percentile(95)),
            _ms(cell.percentile(99)), counts_text(cell.failures)]


def figures_table(outcome: RunOutcome) -> list[str]:
    """Per target and kind, then every target's total when there is more than one target."""
    stats = outcome.stats
    rows = [_figure_row(target, kind, stats.cell(kind, target), outcome.elapsed)
            for target in stats.targets for kind in stats.kinds_of(target)]
    if len(stats.targets) != 1:
        rows += [_figure_row("all", kind, cell, outcome.elapsed) for kind, cell in stats.kinds.items()]
    return _table(FIGURE_COLUMNS, rows, numeric=range(2, 10))


def _ms_figure(value: float | None) -> str:
    return NO_DATA if value is None else f"{value:.2f}"


def steps_lines(outcome: RunOutcome) -> list[str]:
    """A stepped run's steps: offered clients, throughput, p99, errors, and each step's health."""
    analysis = outcome.analysis
    if analysis is None or analysis.knee is None:
        return []
    health = {h.step: h for h in analysis.knee.health}
    primary = "handshake" if analysis.workload == "churn" else "ping"
    rows = []
    for step in analysis.steps:
        figures = step.handshake if primary == "handshake" else step.ping
        judged = health.get(step.index)
        verdict = NO_DATA if judged is None else "healthy" if judged.healthy else "; ".join(judged.reasons)
        errors = NO_DATA if step.error_ratio is None else f"{step.error_ratio:.2%}"
        rows.append([str(step.index), str(step.clients), f"{step.throughput:.1f}", _ms_figure(figures.p99_ms),
                     errors, verdict])
    head = ("Step", "Clients", f"Throughput {unit_of(analysis.workload)}", f"{primary} p99 ms", "Errors", "Health")
    return ["", "### Steps", "", *_table(head, rows, numeric=range(4))]


def thresholds_lines(outcome: RunOutcome) -> list[str]:
    """The thresholds' table, or a sentence saying what decides without them."""
    if not outcome.verdicts:
        if outcome.analysis is not None and outcome.analysis.knee is not None:
            return ["A stepped run is judged by its knee (the verdict above; each step's health in Steps)."]
        return ["No thresholds set: any failed attempt fails the run."]
    rows = [[v.name + (f" ({v.kind})" if v.kind else ""), "pass" if v.passed else "FAIL",
             v.describe().partition(": ")[2]] for v in outcome.verdicts]
    return _table(("Threshold", "Result", "Observed"), rows)


def render_markdown(outcome: RunOutcome, run_dir: Path | None = None) -> str:
    """The whole ``summary.md`` (``run_dir``: where the run's files are, named in it)."""
    scenario = outcome.scenario
    word = verdict_word(outcome)
    sentence = outcome.analysis.verdict if outcome.analysis is not None else word
    lines = [f"## loadgen: {cell_text(scenario.name)}: {word}", "", f"**{cell_text(sentence)}**", ""]
    lines += [f"- Targets: {', '.join(targets_text(outcome))}",
              f"- Workload: {cell_text(workload_text(scenario, outcome))}"]
    if run_dir is not None:
        lines.append(f"- Results: `{run_dir}`")
    lines += ["", "### Figures", "", *figures_table(outcome), *steps_lines(outcome),
              "", "### Thresholds", "", *thresholds_lines(outcome)]
    return "\n".join(lines) + "\n"
