"""The capacity-planning report: one self-contained ``report.html`` that opens offline and prints on A4.

Interactive time-series charts (:mod:`loadgen.report.charts`: hover read-outs, drag to
zoom; the charting library and the data are inlined), SVG charts for what is not a time
series, and only the panels that apply to the run (:class:`~loadgen.report.panels.View`).
:func:`render_report` works from plain data only (the JSON summary, the per-second rows,
the redacted scenario), so ``loadgen report RUN_DIR`` rebuilds exactly what the run wrote
from its saved files (:func:`rebuild`).
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from loadgen.protocol.errors import ConfigError
from loadgen.report.charts import chart_assets
from loadgen.report.header import header, server_line
from loadgen.report.panels import View, against_load, failures_over_time, over_time, panel
from loadgen.report.params import parameters
from loadgen.report.svg import bar_chart
from loadgen.report.tables import (
    request_tables,
    steps_table,
    summary_kinds,
    table,
    targets_table,
    thresholds_line,
)

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1000px;
color:#222;padding:0 12px}
h1{font-size:22px;margin:0 0 6px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.verdict{font-size:16px;background:#f3f7fb;border-left:4px solid #1f77b4;padding:10px 14px;margin:12px 0}
.verdict.fail{border-color:#d62728;background:#fdf3f3}
.outcome{font-weight:bold;padding:1px 8px;border-radius:3px;color:#fff;background:#2ca02c}
.outcome.failed{background:#d62728} .outcome.interrupted{background:#ff7f0e}
dl.run{display:grid;grid-template-columns:max-content auto;gap:2px 12px;margin:8px 0} dl.run dt{color:#555}
dl.run dd{margin:0}
table{border-collapse:collapse;margin:8px 0;font-size:13px} td,th{border:1px solid #ddd;padding:3px 6px;
text-align:right} th{background:#f6f6f6} td.l,th.l{text-align:left} .muted{color:#777}
.tag{display:inline-block;background:#fdf3f3;border:1px solid #e8b4b4;border-radius:3px;padding:0 4px;margin:1px;
cursor:help;white-space:nowrap}
svg.chart{display:block;margin:10px 0;background:#fff;max-width:100%;height:auto} .knee td{background:#fff6d6}
@page{size:A4;margin:12mm}
@media print{body{max-width:none;margin:0;padding:0;font-size:11px} table{font-size:9.5px;width:100%}
td,th{padding:1px 3px} tr,.panel,svg.chart{break-inside:avoid;page-break-inside:avoid} h2{break-after:avoid}}
"""


def rebuild(run_dir: Path) -> Path:
    """Write ``RUN_DIR/report.html`` again from ``summary.json``, ``series.json`` and ``scenario.json``."""
    from loadgen.stats.run import RunStats

    summary_path, series_path = run_dir / "summary.json", run_dir / "series.json"
    for path in (summary_path, series_path):
        if not path.is_file():
            raise ConfigError(f"{path}: not found (the run must have been made with json output on)")
    try:
        summary = json.loads(summary_path.read_text())
        stats = RunStats.from_json(json.loads(series_path.read_text()))
        scenario_path = run_dir / "scenario.json"
        scenario = json.loads(scenario_path.read_text()) if scenario_path.is_file() else {}
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{run_dir}: cannot read the saved run: {exc}") from None
    out = run_dir / "report.html"
    out.write_text(render_report(summary, stats.rows(), scenario), encoding="utf-8")
    return out


def render_report(summary: dict[str, Any], rows: list[dict[str, Any]], scenario: dict[str, Any]) -> str:
    """The whole HTML page (see the module doc); only the panels that apply to the run (see :class:`View`)."""
    view = View.of(summary)
    analysis = summary.get("analysis") or {}
    name = str(summary.get("scenario", "run"))
    body = [*header(summary, scenario, view), thresholds_line(summary)]
    if not view.plain:  # a run of request steps: its requests first (a plain run's page keeps its sections)
        body += ['<h2 id="requests">Requests</h2>', request_tables(summary)]
    if load := against_load(rows, view, str(analysis.get("unit", "per s"))):
        body += ["<h2>Throughput and latency against offered load</h2>", *load]
    body += ["<h2>Over time</h2>", *over_time(rows, view), "<h2>Errors</h2>", _errors(summary, rows, view)]
    if view.steps:
        body += ["<h2>Steps</h2>", panel("steps", steps_table(view.steps, view.knee, analysis, view.plain))]
    body += ["<h2>Per target</h2>", panel("targets", targets_table(summary, view.kinds)),
             "<h2>Run parameters</h2>", _parameters(scenario, summary, view)]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>loadgen: {escape(name)}</title>'
            f"<style>{_CSS}</style>{chart_assets()}</head><body>{''.join(body)}</body></html>\n")


def _errors(summary: dict[str, Any], rows: list[dict[str, Any]], view: View) -> str:
    """Failed attempts by code (whole run) and failures / retransmissions per second, when there are any."""
    figures = summary_kinds(summary)
    bars = [(f"{kind}: {code}", float(n)) for kind in view.kinds for code, n in
            (figures[kind].get("errors") or {}).items()]
    if not bars:
        return '<p class="muted">No failed attempts.</p>' + failures_over_time(rows, view)
    chart = bar_chart("Errors by code (whole run)", bars, x_label="failed attempts")
    return panel("errors", chart) + failures_over_time(rows, view)


def _parameters(scenario: dict[str, Any], summary: dict[str, Any], view: View) -> str:
    rows = [[escape(k), escape(v)] for k, v in parameters(scenario, view.churn)]
    if server := server_line(summary):
        rows.append(["built-in server", escape(server)])
    return table(["parameter", "value"], rows, left=True) if rows else '<p class="muted">not recorded</p>'
