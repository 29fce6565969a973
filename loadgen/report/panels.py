"""Which panels a run's report shows, and its time-series panels.

A report shows what applies to its run (:class:`View`): the kinds that were attempted
(a churn run only handshakes: no ping panel, no ping column), throughput against offered
load only when the run offered two or more levels, handshake panels over the seconds in
which handshakes happened (a steady run's handshakes are its first seconds, not its hour),
failure panels only when something failed or was retransmitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loadgen.report.charts import time_chart
from loadgen.report.svg import Series, line_chart
from loadgen.report.tables import summary_kinds
from loadgen.stats.facts import HANDSHAKE, PING, is_notification, is_plain, plural

#: Seconds shown either side of the handshakes in a handshake panel.
_SPAN_MARGIN = 2


@dataclass(frozen=True)
class View:
    """What a run's report shows, read from its summary."""

    kinds: tuple[str, ...]  # handshake, then each kind attempted (never ping in a churn run)
    plain: bool  # handshakes and pings only (no request steps)
    churn: bool
    levels: int  # distinct offered levels (client counts of steps or stages; 1 without)
    steps: list[dict[str, Any]]
    knee: dict[str, Any]
    bands: list[tuple[float, float, str]]  # every other stage, shaded in time charts

    @classmethod
    def of(cls, summary: dict[str, Any]) -> View:
        analysis = summary.get("analysis") or {}
        churn = analysis.get("workload") == "churn"
        figures = summary_kinds(summary)
        kinds = tuple(kind for kind, d in figures.items() if kind == HANDSHAKE or (
            d.get("attempted") and not (churn and kind == PING)))
        steps = analysis.get("steps") or []
        levels = {s["clients"] for s in steps} or {s["clients"] for s in analysis.get("stages") or []}
        return cls(kinds, is_plain(figures), churn, max(len(levels), 1), steps, analysis.get("knee") or {},
                   _step_bands(analysis))


def _step_bands(analysis: dict[str, Any]) -> list[tuple[float, float, str]]:
    bands, start = [], 0.0
    for n, stage in enumerate(analysis.get("stages") or [], 1):
        if n % 2:
            bands.append((start, start + stage["duration"], f"step {n}: {stage['clients']} clients"))
        start += stage["duration"]
    return bands


def over_time(rows: list[dict[str, Any]], view: View) -> list[str]:
    """The time-series panels: throughput, each kind's percentiles, associations, generator CPU."""
    x = [float(r["second"]) for r in rows]
    whole = [r["duration"] >= 0.5 for r in rows]  # the last, partial second would read as a drop
    throughput = [(_per_s(kind), [_rate(r, kind) if w else None for r, w in zip(rows, whole, strict=True)])
                  for kind in view.kinds]
    panels = [time_chart("Throughput per second", "/s", x, throughput, bands=view.bands, panel="throughput")]
    panels += [_percentiles(rows, kind, view) for kind in view.kinds]
    panels.append(time_chart("Active associations and clients", "", x, [
        ("active associations", [r["active"] for r in rows]), ("clients", [r["users"] for r in rows])],
        dashed={"clients"}, bands=view.bands, panel="active"))
    panels.append(time_chart("Generator CPU (% of one core)", "%", x, [
        ("busiest load process", [r["cpu_max"] if w else None for r, w in zip(rows, whole, strict=True)]),
        ("all load processes", [r["cpu_total"] if w else None for r, w in zip(rows, whole, strict=True)])],
        dashed={"all load processes"}, bands=view.bands, panel="cpu"))
    return panels


def _percentiles(rows: list[dict[str, Any]], kind: str, view: View) -> str:
    """One kind's p50..p100 per second; handshakes over the seconds they happened in (see the module doc)."""
    if kind == HANDSHAKE and not view.churn:
        rows = handshake_span(rows)
    what = "interval between notifications" if is_notification(kind) else "latency"
    series = [(f"{kind} {p}", [r["kinds"][kind][p] for r in rows]) for p in ("p50", "p95", "p99", "p100")]
    return time_chart(f"{kind[:1].upper()}{kind[1:]} {what} percentiles per second", "ms",
                      [float(r["second"]) for r in rows], series, log=True, bands=view.bands,
                      panel=f"latency {kind}")


def handshake_span(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows from shortly before the first second with handshake attempts to shortly after the last."""
    busy = [i for i, r in enumerate(rows) if _counted(r["kinds"][HANDSHAKE])]
    if not busy:
        return rows
    return rows[max(busy[0] - _SPAN_MARGIN, 0):busy[-1] + _SPAN_MARGIN + 1]


def failures_over_time(rows: list[dict[str, Any]], view: View) -> str:
    """Failures per second of each kind, and retransmissions (handshakes; request kinds' CoAP ones);
    empty when nothing failed or was retransmitted."""
    x = [float(r["second"]) for r in rows]
    series = [(f"{kind} failures/s", [r["kinds"][kind]["failed"] for r in rows]) for kind in view.kinds]
    # A plain run's pings are never retransmitted.
    series += [(f"{kind} retransmits/s", [r["kinds"][kind]["retransmits"] for r in rows])
               for kind in view.kinds if kind == HANDSHAKE or not view.plain]
    if not any(v for _, values in series for v in values):
        return ""
    return time_chart("Failures and retransmissions per second", "/s", x, series,
                      dashed={label for label, _ in series if label.endswith("retransmits/s")}, bands=view.bands,
                      panel="failures")


def _counted(figures: dict[str, Any]) -> int:
    return int(figures["attempted"] or figures["completed"] or figures["failed"])


def _rate(row: dict[str, Any], kind: str) -> float:
    return float(row["kinds"][kind]["completed"] / row["duration"]) if row["duration"] > 0 else 0.0


def _per_s(kind: str) -> str:
    """A kind's rate in a chart's legend: "pings/s", "telemetry/s"."""
    return plural(kind) + "/s"


# -- against offered load (SVG: x is the offered load, not time) ----------------------------


def against_load(rows: list[dict[str, Any]], view: View, unit: str) -> list[str]:
    """Throughput against offered load, and latency per step when the run was stepped: only for a run
    that offered two or more levels."""
    if view.levels < 2:
        return []
    if not view.steps:
        return [panel("throughput-vs-load", _mean_at_each_level(rows, view))]
    return [panel("throughput-vs-load", _throughput_per_step(view, unit)),
            panel("latency-per-step", _latency_per_step(view))]


def panel(name: str, html: str) -> str:
    """``html`` in a block named ``name`` (``data-panel``: what tests and styles find a panel by)."""
    return f'<div class="panel" data-panel="{name}">{html}</div>'


def _throughput_per_step(view: View, unit: str) -> str:
    steps, knee = view.steps, view.knee
    series = [Series("handshakes/s", [(s["clients"], s["handshake"]["rate"]) for s in steps])]
    if not view.churn:
        series.append(Series("pings/s" if view.plain else "requests/s", [(s["clients"], s["ping"]["rate"])
                                                                         for s in steps]))
    if any(s.get("offered_rate") for s in steps):
        series.append(Series(f"offered {unit}", [(s["clients"], s.get("offered_rate")) for s in steps],
                             color="#999", dashed=True))
    marks = [(float(knee["knee_clients"]), f"knee {knee['capacity']:.0f} {unit}")] \
        if knee.get("knee_clients") is not None and knee.get("capacity") is not None else []
    return line_chart("Throughput vs offered load (per step)", series, x_label="offered clients",
                      y_label="completed per second", vlines=marks)


def _mean_at_each_level(rows: list[dict[str, Any]], view: View) -> str:
    """Stages that are not steps (up, then down): the mean of the whole seconds at each client count."""
    by_users: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if row["duration"] >= 0.5:
            by_users.setdefault(row["users"], []).append(row)
    points = sorted(by_users.items())
    series = [Series(_per_s(kind), [(u, sum(_rate(r, kind) for r in rs) / len(rs)) for u, rs in points])
              for kind in view.kinds]
    return line_chart("Throughput vs offered load (mean per second at each client count)", series,
                      x_label="running clients", y_label="completed per second")


def _latency_per_step(view: View) -> str:
    series = []
    for kind in (HANDSHAKE,) if view.churn else (HANDSHAKE, PING):
        for p in ("p50", "p95", "p99"):
            label = kind if view.plain or kind == HANDSHAKE else "requests"  # a step's "ping": all its requests
            series.append(Series(f"{label} {p}", [(s["clients"], s[kind][f"{p}_ms"]) for s in view.steps],
                                 dashed=kind == PING))
    marks = [(float(view.knee["knee_clients"]), "knee")] if view.knee.get("knee_clients") is not None else []
    return line_chart("Latency percentiles per step", series, x_label="offered clients", y_label="ms (log)",
                      log_y=True, vlines=marks)
