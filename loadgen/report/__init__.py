"""The capacity-planning report: one self-contained ``report.html`` (inline SVG, no scripts, no links out).

:func:`render_report` works from plain data only (the JSON summary, the per-second
rows, the redacted scenario), so ``loadgen report RUN_DIR`` rebuilds exactly what the
run wrote from its saved files (:func:`rebuild`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from html import escape
from pathlib import Path
from typing import Any

from loadgen.protocol.errors import ConfigError
from loadgen.report.svg import Series, bar_chart, line_chart
from loadgen.report.tables import (
    request_tables,
    steps_table,
    summary_kinds,
    table,
    targets_table,
    thresholds_line,
)
from loadgen.stats.facts import HANDSHAKE, is_notification, is_plain, plural

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1000px;
color:#222;padding:0 12px}
h1{font-size:22px;margin:0 0 6px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.verdict{font-size:16px;background:#f3f7fb;border-left:4px solid #1f77b4;padding:10px 14px;margin:12px 0}
.verdict.fail{border-color:#d62728;background:#fdf3f3}
table{border-collapse:collapse;margin:8px 0;font-size:13px} td,th{border:1px solid #ddd;padding:3px 8px;
text-align:right} th{background:#f6f6f6} td.l,th.l{text-align:left} .muted{color:#777}
svg.chart{display:block;margin:10px 0;background:#fff;max-width:100%;height:auto} .knee td{background:#fff6d6}
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
    """The whole HTML page (see the module doc)."""
    analysis = summary.get("analysis") or {}
    steps = analysis.get("steps") or []
    knee = analysis.get("knee") or {}
    verdict = analysis.get("verdict") or "No verdict recorded."
    failed = any(not t.get("passed", True) for t in summary.get("thresholds", [])) or \
        summary.get("outcome") in ("failed", "interrupted")
    name = str(summary.get("scenario", "run"))
    kinds = list(summary_kinds(summary))
    plain = is_plain(kinds)
    body = [
        f"<h1>loadgen report: {escape(name)}</h1>",
        f'<p class="muted">{escape(str(summary.get("started_utc", "")))} &middot; '
        f'{summary.get("elapsed_s", 0):.0f} s &middot; workload {escape(str(analysis.get("workload", "steady")))}'
        "</p>",
        f'<p id="verdict" class="verdict{" fail" if failed or knee.get("limited_by") == "generator" else ""}">'
        f"{escape(verdict)}</p>",
        thresholds_line(summary),
    ]
    if not plain:  # a run of request steps: its requests first (a plain run's page keeps its sections)
        body += ['<h2 id="requests">Requests</h2>', request_tables(summary)]
    body += [
        "<h2>Throughput and latency against offered load</h2>",
        _throughput_vs_load(steps, knee, rows, analysis, kinds),
    ]
    if steps:
        body.append(_latency_per_step(steps, knee, plain))
    bands = _step_bands(analysis)
    body += [
        "<h2>Over time</h2>",
        _throughput_over_time(rows, bands, kinds),
        *[_latency_over_time(rows, kind, bands) for kind in kinds],
        _active_over_time(rows, bands),
        _cpu_over_time(rows, bands),
        "<h2>Errors</h2>",
        _errors(summary, rows, bands, kinds),
    ]
    if steps:
        body += ["<h2>Steps</h2>", steps_table(steps, knee, analysis, plain)]
    body += ["<h2>Per target</h2>", targets_table(summary),
             "<h2>Run parameters</h2>", _parameters(scenario, summary)]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>loadgen: {escape(name)}</title>'
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


# -- charts ------------------------------------------------------------------------------


def _rate(row: dict[str, Any], kind: str) -> float:
    return row["kinds"][kind]["completed"] / row["duration"] if row["duration"] > 0 else 0.0


def _per_s(kind: str) -> str:
    """A kind's rate in a chart's legend: "pings/s", "telemetry/s"."""
    return plural(kind) + "/s"


def _step_bands(analysis: dict[str, Any]) -> list[tuple[float, float, str]]:
    bands, start = [], 0.0
    for n, stage in enumerate(analysis.get("stages") or [], 1):
        if n % 2:
            bands.append((start, start + stage["duration"], f"step {n}: {stage['clients']} clients"))
        start += stage["duration"]
    return bands


def _throughput_vs_load(steps: list[dict[str, Any]], knee: dict[str, Any], rows: list[dict[str, Any]],
                        analysis: dict[str, Any], kinds: list[str]) -> str:
    unit = analysis.get("unit", "per s")
    if steps:
        series = [Series("handshakes/s", [(s["clients"], s["handshake"]["rate"]) for s in steps]),
                  Series("pings/s" if is_plain(kinds) else "requests/s", [(s["clients"], s["ping"]["rate"])
                                                                          for s in steps])]
        if any(s.get("offered_rate") for s in steps):
            series.append(Series(f"offered {unit}", [(s["clients"], s.get("offered_rate")) for s in steps],
                                 color="#999", dashed=True))
        marks = [(float(knee["knee_clients"]), f"knee {knee['capacity']:.0f} {unit}")] \
            if knee.get("knee_clients") is not None and knee.get("capacity") is not None else []
        return line_chart("Throughput vs offered load (per step)", series, x_label="offered clients",
                          y_label="completed per second", vlines=marks)
    by_users: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["duration"] >= 0.5:
            by_users[row["users"]].append(row)
    points = sorted(by_users.items())
    series = [Series(_per_s(kind), [(u, sum(_rate(r, kind) for r in rs) / len(rs)) for u, rs in points])
              for kind in kinds]
    return line_chart("Throughput vs offered load (mean per second at each client count)", series,
                      x_label="running clients", y_label="completed per second")


def _latency_per_step(steps: list[dict[str, Any]], knee: dict[str, Any], plain: bool) -> str:
    series = []
    for kind in ("handshake", "ping"):
        for p in ("p50", "p95", "p99"):
            label = kind if plain or kind == HANDSHAKE else "requests"  # a step's "ping": all its requests
            series.append(Series(f"{label} {p}", [(s["clients"], s[kind][f"{p}_ms"]) for s in steps],
                                 dashed=kind == "ping"))
    marks = [(float(knee["knee_clients"]), "knee")] if knee.get("knee_clients") is not None else []
    return line_chart("Latency percentiles per step", series, x_label="offered clients", y_label="ms (log)",
                      log_y=True, vlines=marks)


def _throughput_over_time(rows: list[dict[str, Any]], bands: list[tuple[float, float, str]],
                          kinds: list[str]) -> str:
    whole = [r for r in rows if r["duration"] >= 0.5]
    series = [Series(_per_s(kind), [(r["second"], _rate(r, kind)) for r in whole], markers=False)
              for kind in kinds]
    return line_chart("Throughput per second", series, x_label="seconds", y_label="completed per second",
                      bands=bands)


def _latency_over_time(rows: list[dict[str, Any]], kind: str, bands: list[tuple[float, float, str]]) -> str:
    series = [Series(f"{kind} {p}", [(r["second"], r["kinds"][kind][p]) for r in rows], markers=False)
              for p in ("p50", "p95", "p99", "p100")]
    what = "interval between notifications" if is_notification(kind) else "latency"
    return line_chart(f"{kind[:1].upper()}{kind[1:]} {what} percentiles per second", series, x_label="seconds",
                      y_label="ms (log)", log_y=True, bands=bands)


def _active_over_time(rows: list[dict[str, Any]], bands: list[tuple[float, float, str]]) -> str:
    series = [Series("active associations", [(r["second"], r["active"]) for r in rows], markers=False),
              Series("clients", [(r["second"], r["users"]) for r in rows], markers=False, dashed=True)]
    return line_chart("Active associations", series, x_label="seconds", y_label="count", bands=bands)


def _cpu_over_time(rows: list[dict[str, Any]], bands: list[tuple[float, float, str]]) -> str:
    whole = [r for r in rows if r["duration"] >= 0.5]
    series = [Series("busiest load process", [(r["second"], r["cpu_max"]) for r in whole], markers=False),
              Series("all load processes", [(r["second"], r["cpu_total"]) for r in whole], markers=False,
                     dashed=True)]
    return line_chart("Generator CPU (% of one core)", series, x_label="seconds", y_label="%", bands=bands)


def _errors(summary: dict[str, Any], rows: list[dict[str, Any]], bands: list[tuple[float, float, str]],
            kinds: list[str]) -> str:
    figures = summary_kinds(summary)
    bars = [(f"{kind}: {code}", float(n)) for kind in kinds for code, n in (figures[kind].get("errors") or {}).items()]
    chart = bar_chart("Errors by code (whole run)", bars, x_label="failed attempts")
    series = [Series(f"{kind} failures/s", [(r["second"], float(r["kinds"][kind]["failed"])) for r in rows],
                     markers=False) for kind in kinds]
    # A plain run's pings are never retransmitted; request kinds' CoAP retransmissions are drawn too.
    series += [Series(f"{kind} retransmits/s", [(r["second"], float(r["kinds"][kind]["retransmits"])) for r in rows],
                      markers=False, dashed=True) for kind in kinds if kind == HANDSHAKE or not is_plain(kinds)]
    return chart + line_chart("Failures and retransmissions per second", series, x_label="seconds",
                              y_label="per second", bands=bands)


# -- run parameters ----------------------------------------------------------------------


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [item for i, v in enumerate(value) for item in _flatten(v, f"{prefix}[{i}]")]
    return [(prefix, json.dumps(value) if not isinstance(value, str) else value)]


def _parameters(scenario: dict[str, Any], summary: dict[str, Any]) -> str:
    rows = [[escape(k), f'<span style="text-align:left">{escape(v)}</span>'] for k, v in _flatten(scenario)]
    server = summary.get("server")
    if server:
        rows.append(["built-in server", escape(str(server))])
    return table(["parameter", "value"], rows) if rows else '<p class="muted">not recorded</p>'
