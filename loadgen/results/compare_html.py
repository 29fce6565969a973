"""``compare.html``: one self-contained page (inlined scripts, no links out) of a comparison:
the runs, the verdict, the figures side by side with their deltas, the runs' time series overlaid.

The charts are the report's interactive ones (:func:`loadgen.report.charts.time_chart`: hover
read-outs, drag to zoom), drawn by :func:`draw_chart` alone.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any

from loadgen.report.charts import chart_assets, time_chart
from loadgen.results.compare import Comparison, Figure, SavedRun, label, show, show_delta
from loadgen.stats.facts import is_notification, plural

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1000px;
color:#222;padding:0 12px} h1{font-size:22px;margin:0 0 6px} h2{font-size:17px;margin:28px 0 8px;
border-bottom:1px solid #ddd} .verdict{font-size:16px;padding:10px 14px;margin:12px 0;background:#f3f7fb;
border-left:4px solid #2ca02c} .verdict.fail{border-color:#d62728;background:#fdf3f3}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f6f6f6} .l{text-align:left} tr.regression td{background:#fdecec} td.flag{color:#d62728;
font-weight:bold} .muted{color:#777}
@media print{body{margin:0;max-width:none}}
"""


def draw_chart(title: str, unit: str, x: list[float], series: list[tuple[str, list[float | None]]],
               log: bool = False) -> str:
    """The page's one chart call: ``series`` (label, values aligned with ``x``; None is a gap) over the
    seconds ``x``, the baseline solid, later runs dashed."""
    return time_chart(title, unit, x, series, log=log, dashed=[name for name, _ in series[1:]],
                      x_label="seconds since the run's start", panel=title)


def overlay_charts(runs: tuple[SavedRun, ...]) -> list[str]:
    """The runs' per-second series drawn over each other: throughput and p99 per kind, active associations."""
    rows = [{row["second"]: row for row in r.stats.rows()} for r in runs]
    x = sorted({second for by_second in rows for second in by_second})
    kinds = list(dict.fromkeys(kind for r in runs for kind in r.stats.kind_names))

    def overlay(title: str, unit: str, value: Callable[[dict[str, Any]], float | None], log: bool = False) -> str:
        series = [(f"{label(i)} {run.scenario}", [value(by_second[s]) if s in by_second else None for s in x])
                  for i, (run, by_second) in enumerate(zip(runs, rows, strict=True))]
        return draw_chart(title, unit, [float(s) for s in x], series, log)

    def rate(kind: str) -> Callable[[dict[str, Any]], float | None]:
        # A second's last fraction (the run's end) is not a rate worth drawing.
        return lambda row: (row["kinds"][kind]["completed"] / row["duration"]
                            if kind in row["kinds"] and row["duration"] >= 0.5 else None)

    def p99(kind: str) -> Callable[[dict[str, Any]], float | None]:
        return lambda row: row["kinds"][kind]["p99"] if kind in row["kinds"] else None

    charts = []
    for kind in kinds:
        what = "interval between notifications" if is_notification(kind) else "latency"
        charts += [overlay(f"{plural(kind)} completed per second", "/s", rate(kind)),
                   overlay(f"{kind} p99 {what} per second", "ms", p99(kind), log=True)]
    charts.append(overlay("Active associations", "count", lambda row: float(row["active"])))
    return charts


def _started(run: SavedRun) -> str:
    """``2026-12-02 14:45:45``: the run's start as summary.json has it (ISO, UTC), for a narrow cell."""
    return str(run.summary.get("started_utc") or "-").replace("T", " ").removesuffix("+00:00")


def _runs_table(comparison: Comparison) -> str:
    head = "<tr><th>run</th><th class='l'>directory</th><th class='l'>scenario</th><th>started (UTC)</th>" \
           "<th>length</th><th>outcome</th></tr>"
    rows = [f"<tr><td>{label(i)}{' (baseline)' if i == 0 else ''}</td><td class='l'>{escape(r.label)}</td>"
            f"<td class='l'>{escape(r.scenario)}</td><td>{escape(_started(r))}</td>"
            f"<td>{r.elapsed:.0f} s</td><td>{escape(str(r.summary.get('outcome') or '-'))}</td></tr>"
            for i, r in enumerate(comparison.runs)]
    return f'<table id="runs">{head}{"".join(rows)}</table>'


def _figure_row(figure: Figure) -> str:
    cells = [f"<td class='l'>{escape(figure.target)}</td><td class='l'>{escape(figure.kind)}</td>"
             f"<td class='l'>{escape(figure.heading)}</td><td>{escape(show(figure.values[0], figure.unit))}</td>"]
    for value, delta in zip(figure.values[1:], figure.deltas, strict=True):
        cells.append(f"<td>{escape(show(value, figure.unit))}</td><td>{escape(show_delta(delta, figure.unit))}</td>")
    flag = "REGRESSION" if figure.regressed else ""
    css = ' class="regression"' if figure.regressed else ""
    return f"<tr{css}>{''.join(cells)}<td class='flag'>{flag}</td></tr>"


def _figures_table(comparison: Comparison) -> str:
    later = "".join(f"<th>{label(i)}</th><th>&Delta; {label(i)}</th>" for i in range(1, len(comparison.runs)))
    head = ("<tr><th class='l'>target</th><th class='l'>kind</th><th class='l'>figure</th>"
            f"<th>A</th>{later}<th></th></tr>")
    return f'<table id="figures">{head}{"".join(_figure_row(f) for f in comparison.figures)}</table>'


def render_compare(comparison: Comparison) -> str:
    """The whole page (see the module doc)."""
    names = " vs ".join(escape(r.scenario) for r in comparison.runs)
    fail = " fail" if comparison.regressions else ""
    notes = "".join(f'<p class="note muted">{escape(n)}</p>' for n in comparison.notes)
    body = [
        f"<h1>loadgen compare: {names}</h1>", _runs_table(comparison), notes,
        f'<p id="verdict" class="verdict{fail}">{escape(comparison.verdict)}</p>',
        f'<p class="muted">Each later run against the baseline A; a regression is worse by more than '
        f"{comparison.max_regression:.0%} and by more than the figure's resolution (the HDR histograms' bucket "
        "for latencies, one attempt for counts). Latencies from the histograms merged over each run.</p>",
        "<h2>Figures</h2>", _figures_table(comparison),
        "<h2>Over time</h2>", *overlay_charts(comparison.runs),
    ]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>loadgen compare: {names}</title>'
            f"<style>{_CSS}</style>{chart_assets()}</head><body>{''.join(body)}</body></html>\n")
