"""What a run leaves behind: its directory ``results/<run-id>/`` and the files in it.

Each file is switched on in the scenario's ``outputs`` or on the command line
(:mod:`loadgen.cli.outputs`):

- ``scenario.json``: the scenario as run, its secrets removed (always)
- ``summary.md``: verdict, targets, workload, figures and thresholds in Markdown, for CI job
  summaries and chat tools (always; see :mod:`loadgen.results.markdown`)
- ``summary.json`` (``json``): totals, per target and per kind, thresholds, steps, verdict
  (see :func:`loadgen.results.summary.summary_data`)
- ``series.json`` (``json``): the per-second series with its HDR histograms; what
  ``loadgen report`` rebuilds the report from
- ``timeseries.csv`` (``csv``): one row per second
- ``report.html`` (``report``): see :mod:`loadgen.report`

The live collectors (Prometheus, StatsD) are :mod:`loadgen.exporters`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from loadgen.results.markdown import render_markdown
from loadgen.results.summary import RunOutcome, summary_data
from loadgen.scenario import Scenario
from loadgen.stats.cells import PERCENTILES
from loadgen.stats.facts import KINDS, is_notification
from loadgen.stats.run import RunStats


def new_run_dir(scenario: Scenario) -> Path:
    """A fresh ``results/<UTC time>-<scenario name>/`` directory."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = scenario.outputs.results_dir
    run_dir = base / f"{stamp}-{scenario.name}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = base / f"{stamp}-{scenario.name}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def write_results(outcome: RunOutcome, run_dir: Path) -> Path:
    """The scenario with its secrets removed, and what ``outputs`` asks for (see :func:`write_files`)."""
    scenario_json = json.loads(json.dumps(outcome.scenario.redacted(), default=str))
    (run_dir / "scenario.json").write_text(json.dumps(scenario_json, indent=2) + "\n")
    (run_dir / "summary.md").write_text(render_markdown(outcome, run_dir), encoding="utf-8")
    write_files(run_dir, outcome.scenario, outcome.stats, summary_data(outcome), scenario_json)
    return run_dir


def _csv_header(kinds: Sequence[str]) -> list[str]:
    head = ["second", "time_utc", "duration_s", "users", "active_associations", "processes",
            "cpu_busiest_pct", "cpu_total_pct"]
    for kind in kinds:
        head += [f"{kind}_{c}" for c in ("attempted", "completed", "failed", "retransmits")]
        # A notification kind's percentiles are of the interval between notifications.
        timing = "interval_" if is_notification(kind) else ""
        head += [f"{kind}_{timing}{name}_ms" for name, _ in PERCENTILES]
        head.append(f"{kind}_errors")
        if kind not in KINDS:  # request kinds: resets and response codes (a plain run keeps its columns)
            head += [f"{kind}_rsts", f"{kind}_codes"]
    return head


def _counts(counts: dict[str, int]) -> str:
    return ";".join(f"{code}={n}" for code, n in sorted(counts.items()))


def write_timeseries_csv(rows: list[dict[str, Any]], target: Path | TextIO) -> None:
    """One line per second; errors and response codes as ``code=n;code=n``; empty percentile cells for
    seconds without data. Columns per kind of the run (those of the rows), in its order."""
    if isinstance(target, Path):
        with target.open("w", newline="") as f:
            write_timeseries_csv(rows, f)
        return
    kinds = list(rows[0]["kinds"]) if rows else list(KINDS)
    writer = csv.writer(target)
    writer.writerow(_csv_header(kinds))
    for row in rows:
        line: list[Any] = [row["second"], datetime.fromtimestamp(row["time"], UTC).isoformat(timespec="seconds"),
                           f"{row['duration']:.3f}", row["users"], row["active"], row["processes"],
                           f"{row['cpu_max']:.1f}", f"{row['cpu_total']:.1f}"]
        for kind in kinds:
            fig = row["kinds"][kind]
            line += [fig["attempted"], fig["completed"], fig["failed"], fig["retransmits"]]
            line += ["" if fig[name] is None else f"{fig[name]:.3f}" for name, _ in PERCENTILES]
            line.append(_counts(fig["errors"]))
            if kind not in KINDS:
                line += [fig["rsts"], _counts(fig["codes"])]
        writer.writerow(line)


def write_files(run_dir: Path, scenario: Scenario, stats: RunStats, summary: dict[str, Any],
                scenario_json: dict[str, Any]) -> list[Path]:
    """summary.json, series.json, timeseries.csv and report.html, as ``scenario.outputs`` asks."""
    from loadgen.report import render_report  # the report pulls in the chart code only when asked for

    outputs = scenario.outputs
    written = []
    rows = stats.rows()
    if outputs.json:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (run_dir / "series.json").write_text(json.dumps(stats.to_json(), separators=(",", ":")) + "\n")
        written += [run_dir / "summary.json", run_dir / "series.json"]
    if outputs.csv:
        write_timeseries_csv(rows, run_dir / "timeseries.csv")
        written.append(run_dir / "timeseries.csv")
    if outputs.report:
        (run_dir / "report.html").write_text(render_report(summary, rows, scenario_json), encoding="utf-8")
        written.append(run_dir / "report.html")
    return written
