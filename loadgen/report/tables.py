"""The report's tables: thresholds, steps, per target, and one per request kind.

They read the JSON summary only (:func:`summary_kinds` says where each kind's figures are).
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

from loadgen.stats.facts import HANDSHAKE, KINDS, is_notification


def summary_kinds(figures: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each kind's figures in a summary (or one target's part of it), in the run's order: a plain
    run's "handshake" and "ping" at the top, request kinds under "requests"
    (see :func:`loadgen.results.summary.by_kind`)."""
    out = {kind: figures[kind] for kind in KINDS if isinstance(figures.get(kind), dict)}
    out.update(figures.get("requests") or {})
    return out


def timing(figures: dict[str, Any]) -> dict[str, Any]:
    """A kind's percentiles (ms): latencies, or a notification kind's intervals between notifications."""
    return figures.get("latency_ms") or figures.get("interval_ms") or {}


def kind_label(kind: str) -> str:
    """How a kind is named in tables: a notification kind says its figures are intervals."""
    return f"{kind} (interval)" if is_notification(kind) else kind


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else escape(str(value))


def table(head: list[str], rows: list[list[Any]], classes: list[str] | None = None, *, left: bool = False) -> str:
    """An HTML table; ``str`` cells are HTML already (escape them), others are numbers. The first
    column is aligned left, every column with ``left``."""
    def align(i: int) -> str:
        return "l" if left or i == 0 else ""

    out = ["<table><tr>", *(f'<th class="{align(i)}">{escape(h)}</th>' for i, h in enumerate(head)), "</tr>"]
    for n, row in enumerate(rows):
        cls = f' class="{classes[n]}"' if classes and classes[n] else ""
        out.append(f"<tr{cls}>" + "".join(f'<td class="{align(i)}">{v if isinstance(v, str) else _num(v)}'
                                          "</td>" for i, v in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def thresholds_line(summary: dict[str, Any]) -> str:
    items = summary.get("thresholds") or []
    if not items:
        return '<p class="muted">No thresholds set.</p>'
    parts = []
    for t in items:
        fmt = _threshold_ms if t["name"].endswith(("p95", "p99")) else _threshold_number
        what = f"{t['name']} ({t['kind']})" if t.get("kind") else t["name"]
        parts.append(f"{'pass' if t['passed'] else 'FAIL'} {what} {fmt(t['actual'])} (limit {fmt(t['limit'])})")
    return f"<p>Thresholds: {escape('; '.join(parts))}.</p>"


def _threshold_ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def _threshold_number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def steps_table(steps: list[dict[str, Any]], knee: dict[str, Any], analysis: dict[str, Any], plain: bool) -> str:
    """One row per step; a run of request steps shows all its requests where a plain run shows pings, a
    churn run neither. Health reasons are short tags, each with its sentence on hover."""
    health = {h["step"]: h for h in knee.get("health") or []}
    churn = analysis.get("workload") == "churn"
    what = [] if churn else ["pings/s", "ping p95 ms", "ping p99 ms"] if plain else [
        "requests/s", "req p95 ms", "req p99 ms"]
    head = ["step", "clients", "measured s", f"offered {analysis.get('unit', '/s')}", "throughput", "handshakes/s",
            "hs p95 ms", "hs p99 ms", *what, "errors", *([] if churn else ["loss"]), "CPU %", "health"]
    rows, classes = [], []
    for s in steps:
        pings = [] if churn else [s["ping"]["rate"], s["ping"]["p95_ms"], s["ping"]["p99_ms"]]
        loss = [] if churn else [_ratio(s["loss_ratio"])]
        rows.append([str(s["index"]), s["clients"], s["seconds"], s.get("offered_rate"), s["throughput"],
                     s["handshake"]["rate"], s["handshake"]["p95_ms"], s["handshake"]["p99_ms"], *pings,
                     _ratio(s["error_ratio"]), *loss, s["cpu_max"], _health(health.get(s["index"], {}))])
        classes.append("knee" if s["index"] == knee.get("knee_step") else "")
    return table(head, rows, classes)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


#: Short tags for the knee analysis' reasons (loadgen.capacity.knee), first match wins.
_TAGS = ((re.compile(r"^handshake (p\d+)"), r"hs \1"), (re.compile(r"^(ping p\d+)"), r"\1"),
         (re.compile(r"^errors"), "errors"), (re.compile(r"^ping loss"), "loss"),
         (re.compile(r"^throughput stopped growing"), "no growth"), (re.compile(r"fell behind"), "behind offered"))


def reason_tag(reason: str) -> str:
    """A health reason's short tag ("hs p95", "no growth"); its first word for one not known here."""
    for pattern, tag in _TAGS:
        if match := pattern.search(reason):
            return match.expand(tag)
    return reason.split(" ", 1)[0]


def _health(h: dict[str, Any]) -> str:
    if h.get("healthy"):
        return "ok"
    tags = [f'<span class="tag" title="{escape(r, quote=True)}">{escape(reason_tag(r))}</span>'
            for r in h.get("reasons") or []]
    return " ".join(tags) or "-"


def _codes(counts: dict[str, int], empty: str = "none") -> str:
    return escape(", ".join(f"{code} {n}" for code, n in sorted(counts.items())) or empty)


def targets_table(summary: dict[str, Any], kinds: tuple[str, ...]) -> str:
    """Each target's row per kind of ``kinds`` (those the report shows) that it counted."""
    head = ["target", "kind", "attempted", "completed", "failed", "retransmits", "p50 ms", "p95 ms", "p99 ms",
            "p99.9 ms", "max ms", "errors", "active"]
    rows = []
    for target, data in sorted((summary.get("targets") or {}).items()):
        for kind, d in summary_kinds(data).items():
            if kind not in kinds:
                continue
            lat = timing(d)
            rows.append([escape(target), escape(kind_label(kind)), d["attempted"], d["completed"], d["failed"],
                         d["retransmits"], lat.get("p50"), lat.get("p95"), lat.get("p99"), lat.get("p99.9"),
                         lat.get("p100"), _codes(d["errors"]),
                         data["active_associations"] if kind == HANDSHAKE else "-"])
    return table(head, rows)


def request_tables(summary: dict[str, Any]) -> str:
    """One table per request kind: each target's row (``group@target`` with device groups) and all
    targets': count, rate, percentiles (of latency, or of the interval for notifications), errors by
    code, retransmissions, RSTs and response codes."""
    kinds = {kind: figures for kind, figures in summary_kinds(summary).items() if kind != HANDSHAKE}
    targets = sorted((summary.get("targets") or {}).items())
    out = []
    for kind, total in kinds.items():
        measure = "interval" if is_notification(kind) else "latency"
        head = ["target", "attempted", "completed", "failed", "rate /s", f"{measure} p50 ms", f"{measure} p95 ms",
                f"{measure} p99 ms", "errors by code", "retransmits", "RSTs", "response codes"]
        rows = [_request_row(target, d) for target, data in targets
                if isinstance(d := summary_kinds(data).get(kind), dict)]
        rows.append(_request_row("all targets", total))
        note = (' <span class="muted">(Observe: the time between notifications, not a latency)</span>'
                if is_notification(kind) else "")
        out.append(f'<div class="request-kind" data-kind="{escape(kind, quote=True)}"><h3>{escape(kind)}{note}</h3>'
                   f"{table(head, rows)}</div>")
    return "".join(out)


def _request_row(target: str, d: dict[str, Any]) -> list[Any]:
    lat = timing(d)
    return [escape(target), d["attempted"], d["completed"], d["failed"], d.get("rate_per_s"), lat.get("p50"),
            lat.get("p95"), lat.get("p99"), _codes(d["errors"]), d["retransmits"], d.get("rsts", 0),
            _codes(d.get("codes") or {}, "-")]
