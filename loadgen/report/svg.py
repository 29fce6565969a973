"""Small inline-SVG charts: lines (linear or log y) and horizontal bars.

For what is not a time series (the report's per-step and error charts, and the web UI's
live page): no script needed, every data point carries a ``<title>`` so hovering shows its
value. Time series are :mod:`loadgen.report.charts`' interactive charts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")

Point = tuple[float, float | None]


@dataclass
class Series:
    """One line: ``points`` are (x, y) with y None for gaps."""

    name: str
    points: list[Point]
    color: str = ""
    dashed: bool = False
    markers: bool = True


@dataclass
class Chart:
    """Geometry shared by the chart functions."""

    width: int = 940
    height: int = 300
    left: int = 64
    right: int = 16
    top: int = 46
    bottom: int = 48
    notes: list[str] = field(default_factory=list)

    @property
    def plot_w(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> int:
        return self.height - self.top - self.bottom


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering ``lo..hi`` (steps of 1, 2 or 5 times a power of ten)."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    ticks = [round(math.floor(lo / step) * step, 10)]
    while ticks[-1] < hi - step * 1e-9:  # the last tick covers hi
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten (and 2x, 5x when the range is narrow) covering ``lo..hi`` (> 0)."""
    low, high = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mults = (1, 2, 5) if high - low <= 3 else (1,)
    return [m * 10 ** e for e in range(low, high + 1) for m in mults if lo / 1.0001 <= m * 10 ** e <= hi * 1.0001]


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value - round(value)) < 1e-9:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.1f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def line_chart(title: str, series: list[Series], *, x_label: str, y_label: str, log_y: bool = False,
               vlines: list[tuple[float, str]] | None = None, chart: Chart | None = None) -> str:
    """An SVG line chart; ``vlines`` mark x positions (e.g. the knee)."""
    c = chart or Chart()
    legend_rows = len({y for _, y in _legend_layout(c, [s.name for s in series])})
    if legend_rows > 1:  # make room under the title for a wrapped legend
        c = replace(c, top=c.top + 14 * (legend_rows - 1), height=c.height + 14 * (legend_rows - 1))
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points if y is not None and (y > 0 or not log_y)]
    if not xs or not ys:
        return _empty(title, c, "no data")
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    yticks, ypos = _y_scale(c, ys, log_y)

    def xpos(v: float) -> float:
        return c.left + c.plot_w * (v - x_lo) / (x_hi - x_lo)

    parts = [_open(title, c)]
    parts.append(_axes(c, [(xpos(t), fmt(t)) for t in nice_ticks(x_lo, x_hi, 8) if x_lo <= t <= x_hi],
                       [(ypos(t), fmt(t)) for t in yticks], x_label, y_label))
    for i, s in enumerate(series):
        parts += _series_lines(s, s.color or PALETTE[i % len(PALETTE)], xpos, ypos, log_y)
    for x, label in vlines or []:
        if x_lo <= x <= x_hi:
            px = xpos(x)
            parts.append(f'<line class="marker" x1="{px:.1f}" y1="{c.top}" x2="{px:.1f}" y2="{c.top + c.plot_h}" '
                         f'stroke="#333" stroke-dasharray="2,3"/><text x="{px + 4:.1f}" y="{c.top + 12}" '
                         f'font-size="11">{escape(label)}</text>')
    parts.append(_legend(c, [(s.name, s.color or PALETTE[i % len(PALETTE)], s.dashed) for i, s in enumerate(series)]))
    parts.append("</svg>")
    return "".join(parts)


def _y_scale(c: Chart, ys: list[float], log_y: bool) -> tuple[list[float], Callable[[float], float]]:
    """The y ticks and the value -> pixel mapping: decades for a log axis, nice ticks from 0 otherwise."""
    if log_y:
        y_lo, y_hi = min(ys), max(ys)
        y_lo, y_hi = 10 ** math.floor(math.log10(y_lo)), 10 ** math.ceil(math.log10(y_hi * 1.0001))

        def ypos(v: float) -> float:
            return c.top + c.plot_h * (1 - (math.log10(v) - math.log10(y_lo)) / (math.log10(y_hi) - math.log10(y_lo)))

        return log_ticks(y_lo, y_hi), ypos
    yticks = nice_ticks(min(0.0, min(ys)), max(ys) * 1.05 if max(ys) > 0 else 1.0)
    lo, hi = yticks[0], yticks[-1]

    def ypos_linear(v: float) -> float:
        return c.top + c.plot_h * (1 - (v - lo) / (hi - lo))

    return yticks, ypos_linear


def _series_lines(s: Series, color: str, xpos: Callable[[float], float], ypos: Callable[[float], float],
                  log_y: bool) -> list[str]:
    """One series as polylines (one per run without gaps), with dots where they stay readable."""
    parts = []
    dash = ' stroke-dasharray="5,4"' if s.dashed else ""
    for run in _runs(s.points, log_y):
        pts = " ".join(f"{xpos(x):.1f},{ypos(y):.1f}" for x, y in run)
        parts.append(f'<polyline class="series" data-series="{escape(s.name)}" data-n="{len(run)}" '
                     f'points="{pts}" fill="none" stroke="{color}" stroke-width="1.8"{dash}/>')
        if (s.markers and len(run) <= 120) or len(run) == 1:  # a lone point needs its dot to show
            parts += [f'<circle cx="{xpos(x):.1f}" cy="{ypos(y):.1f}" r="2.6" fill="{color}">'
                      f'<title>{escape(s.name)}: {fmt(y)} at {fmt(x)}</title></circle>' for x, y in run]
    return parts


def bar_chart(title: str, bars: list[tuple[str, float]], *, x_label: str, chart: Chart | None = None) -> str:
    """Horizontal bars, one per (label, value), longest first."""
    if not bars:
        return _empty(title, chart or Chart(height=120), "none")
    bars = sorted(bars, key=lambda b: -b[1])
    c = chart or Chart(height=60 + 26 * len(bars), left=220)
    top = max(v for _, v in bars) or 1.0
    ticks = nice_ticks(0.0, top)
    scale = c.plot_w / ticks[-1]
    parts = [_open(title, c)]
    parts.append(_axes(c, [(c.left + t * scale, fmt(t)) for t in ticks], [], x_label, ""))
    for i, (label, value) in enumerate(bars):
        y = c.top + 6 + i * 26
        parts.append(f'<text x="{c.left - 6}" y="{y + 13}" font-size="11" text-anchor="end">{escape(label)}</text>'
                     f'<rect class="bar" x="{c.left}" y="{y}" width="{max(value * scale, 1):.1f}" height="18" '
                     f'fill="{PALETTE[1]}"><title>{escape(label)}: {fmt(value)}</title></rect>'
                     f'<text x="{c.left + value * scale + 4:.1f}" y="{y + 13}" font-size="11">{fmt(value)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# -- pieces -----------------------------------------------------------------------------


def _runs(points: list[Point], log_y: bool) -> list[list[tuple[float, float]]]:
    """Split at gaps (None, or <= 0 on a log axis) into drawable runs."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None or (log_y and y <= 0):
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((x, y))
    return [r for r in runs if r]


def _open(title: str, c: Chart) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{c.width}" height="{c.height}" '
            f'viewBox="0 0 {c.width} {c.height}" role="img" aria-label="{escape(title)}">'
            f'<text x="{c.left}" y="18" font-size="14" font-weight="bold">{escape(title)}</text>')


def _empty(title: str, c: Chart, why: str) -> str:
    return (_open(title, c) + f'<text class="empty" x="{c.width / 2:.0f}" y="{c.height / 2:.0f}" '
            f'text-anchor="middle" fill="#888">{escape(why)}</text></svg>')


def _axes(c: Chart, xticks: list[tuple[float, str]], yticks: list[tuple[float, str]], x_label: str,
          y_label: str) -> str:
    bottom = c.top + c.plot_h
    out = [f'<rect x="{c.left}" y="{c.top}" width="{c.plot_w}" height="{c.plot_h}" fill="none" stroke="#999"/>']
    for px, label in xticks:
        out.append(f'<line x1="{px:.1f}" y1="{bottom}" x2="{px:.1f}" y2="{bottom + 4}" stroke="#999"/>'
                   f'<text x="{px:.1f}" y="{bottom + 16}" font-size="10" text-anchor="middle">{label}</text>')
    for py, label in yticks:
        out.append(f'<line x1="{c.left}" y1="{py:.1f}" x2="{c.left + c.plot_w}" y2="{py:.1f}" stroke="#eee"/>'
                   f'<text x="{c.left - 5}" y="{py + 3:.1f}" font-size="10" text-anchor="end">{label}</text>')
    out.append(f'<text x="{c.left + c.plot_w / 2:.0f}" y="{c.height - 8}" font-size="11" '
               f'text-anchor="middle">{escape(x_label)}</text>')
    if y_label:
        out.append(f'<text transform="translate(14,{c.top + c.plot_h / 2:.0f}) rotate(-90)" font-size="11" '
                   f'text-anchor="middle">{escape(y_label)}</text>')
    return "".join(out)


def _legend_layout(c: Chart, names: list[str]) -> list[tuple[float, float]]:
    """Positions of legend entries: left to right under the title, wrapping at the chart's width."""
    out, x, y = [], float(c.left), 32.0
    for name in names:
        width = 30 + 6.2 * len(name)
        if x + width > c.width - c.right and x > c.left:
            x, y = float(c.left), y + 14
        out.append((x, y))
        x += width
    return out


def _legend(c: Chart, entries: list[tuple[str, str, bool]]) -> str:
    out = []
    for (name, color, dashed), (x, y) in zip(entries, _legend_layout(c, [e[0] for e in entries]), strict=True):
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        out.append(f'<line x1="{x:.0f}" y1="{y:.0f}" x2="{x + 18:.0f}" y2="{y:.0f}" stroke="{color}" '
                   f'stroke-width="2"{dash}/>'
                   f'<text x="{x + 22:.0f}" y="{y + 4:.0f}" font-size="11">{escape(name)}</text>')
    return "".join(out)
