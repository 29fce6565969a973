"""``loadgen compare``'s judgement, sans I/O: saved runs in, figures side by side with their deltas out.

Every figure is measured per target and kind from the run's exact totals: throughput, the latency
percentiles read from the HDR histogram merged over the whole run (never from rounded numbers),
the error ratio (all failures and per code), retransmissions; per run the peak of active
associations and, for stepped runs, the knee and the sustainable capacity.

The first run is the baseline. A later run's figure is a *regression* when it moved in its worse
direction (latency and errors up, throughput and capacity down) by more than ``max_regression``
of the baseline's value *and* by more than the figure's resolution: for a latency the width of the
HDR bucket holding it (3 significant figures, 1 us below 2 ms), for counted figures one attempt.
A move inside the resolution is what the measurement cannot tell apart, whatever its percentage.
Loading the run directories is :mod:`loadgen.results.saved`; the outputs are :mod:`loadgen.cli.compare`
and :mod:`loadgen.results.compare_html`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from hdrh.histogram import HdrHistogram

from loadgen.stats.cells import Cell
from loadgen.stats.facts import is_notification
from loadgen.stats.run import RunStats

Worse = Literal["up", "down", "none"]
#: Where the run's own figures (not of one target and kind) go: peak associations, knee, capacity.
RUN = "(run)"
ALL_TARGETS = "all targets"
DEFAULT_MAX_REGRESSION = 0.10
#: The latency percentiles compared, as named in the table ("max" is p100).
LATENCIES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p99.9", 99.9), ("max", 100.0))
#: A percentile p is judged only in a run with this many samples beyond it (at least 10 / (1 - p)):
#: the p99.9 of 150 pings is their slowest one, and two runs of the same server differ there by
#: chance. The max is one sample: shown, never judged.
TAIL_SAMPLES = 10


@dataclass(frozen=True)
class SavedRun:
    """One run as saved in its directory: where it is, ``summary.json`` and ``series.json`` read back."""

    label: str  # the directory as the user named it
    summary: dict[str, Any]
    stats: RunStats

    @property
    def scenario(self) -> str:
        return str(self.summary.get("scenario", "?"))

    @property
    def elapsed(self) -> float:
        return float(self.summary.get("elapsed_s") or 0.0)


@dataclass(frozen=True)
class Measure:
    """One figure of one run: its value and the smallest difference the measurement can tell."""

    value: float | None
    resolution: float = 0.0
    #: False for a figure too few samples decide: shown, never a regression (see :data:`TAIL_SAMPLES`).
    judged: bool = True


@dataclass(frozen=True)
class Delta:
    """A later run's figure against the baseline's: ``change`` = later - baseline; ``ratio`` = change /
    baseline (None when the baseline is 0 and the figure moved: a new failure, say)."""

    change: float
    ratio: float | None
    regression: bool
    within_resolution: bool

    def describe(self) -> str:
        """``+1.2 (+15.0%)``; ``+3 (new)`` from a zero baseline."""
        pct = "new" if self.ratio is None else f"{self.ratio * 100:+.1f}%"
        return f"{_number(self.change, signed=True)} ({pct})"

    def to_json(self) -> dict[str, Any]:
        return {"change": self.change, "ratio": self.ratio, "regression": self.regression,
                "within_resolution": self.within_resolution}


@dataclass(frozen=True)
class Figure:
    """One row of the comparison: a figure of one target and kind in every run, and each later
    run's delta against the first (None where either run has no value)."""

    target: str
    kind: str
    name: str  # "throughput", "p99", "errors", "errors ping-timeout", "knee clients", ...
    unit: str  # "/s", "ms", "ratio", "count", "clients"
    worse: Worse
    measures: tuple[Measure | None, ...]
    deltas: tuple[Delta | None, ...]

    @property
    def values(self) -> tuple[float | None, ...]:
        return tuple(m.value if m is not None else None for m in self.measures)

    @property
    def regressed(self) -> bool:
        return any(d is not None and d.regression for d in self.deltas)

    @property
    def heading(self) -> str:
        """The figure with its unit, as a table's row names it: ``p99 ms``, ``throughput per s``, ``errors``."""
        return self.name + (" per s" if self.unit == "/s" else self.suffix)

    @property
    def suffix(self) -> str:
        """The unit after a value: `` ms``, ``/s``; none for ratios (shown as %) and counts."""
        return "" if self.unit in ("ratio", "count", "clients") else "/s" if self.unit == "/s" else f" {self.unit}"

    @property
    def title(self) -> str:
        """``ping p99 [ref]``: the figure as a sentence names it (JUnit cases, the verdict)."""
        where = "" if self.target == RUN else f" [{self.target}]"
        what = f"{self.kind} {self.name}" if self.kind else self.name
        return f"{what}{where}"

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "kind": self.kind, "figure": self.name, "unit": self.unit,
                "worse": self.worse, "values": list(self.values),
                "resolution": [m.resolution if m is not None else None for m in self.measures],
                "deltas": [None, *(d.to_json() if d is not None else None for d in self.deltas)],
                "regression": self.regressed}


@dataclass(frozen=True)
class Comparison:
    """The runs (baseline first), every compared figure, and notes (different scenarios, missing targets)."""

    runs: tuple[SavedRun, ...]
    figures: tuple[Figure, ...]
    max_regression: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def regressions(self) -> list[Figure]:
        return [f for f in self.figures if f.regressed]

    @property
    def verdict(self) -> str:
        """One sentence, starting with REGRESSION or "no regression"; the regressions that matter most
        first (throughput and capacity, errors, then latency: see :data:`_WEIGHTS`)."""
        bad = self.regressions
        limit = f"{self.max_regression:.0%}"
        if not bad:
            return (f"no regression: no figure of {', '.join(label(i) for i in range(1, len(self.runs)))} is worse "
                    f"than the baseline A by more than {limit} and the histograms' resolution")
        moved = [f"{f.title} {label(i + 1)} {show_delta(d, f.unit)}" for f in sorted(bad, key=_weight)
                 for i, d in enumerate(f.deltas) if d is not None and d.regression]
        more = f" and {len(moved) - 5} more" if len(moved) > 5 else ""
        return (f"REGRESSION: {len(bad)} figures worse than the baseline A by more than {limit} and the "
                f"histograms' resolution: {'; '.join(moved[:5])}{more}")

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.runs[0].label, "max_regression": self.max_regression,
            "runs": [{"label": label(i), "path": r.label, "scenario": r.scenario, "elapsed_s": r.elapsed,
                      "started_utc": r.summary.get("started_utc"), "outcome": r.summary.get("outcome")}
                     for i, r in enumerate(self.runs)],
            "notes": list(self.notes), "regression": bool(self.regressions), "verdict": self.verdict,
            "figures": [f.to_json() for f in self.figures],
        }


#: What the verdict names first: the capacity a server offers, then its failures, then its latency tail.
_WEIGHTS = ("throughput", "sustainable capacity", "knee clients", "errors", "p99", "p95", "p50")


def _weight(figure: Figure) -> int:
    name = figure.name.removeprefix("interval ")
    return next((n for n, w in enumerate(_WEIGHTS) if name == w or name.startswith(w + " ")), len(_WEIGHTS))


def label(index: int) -> str:
    """A run's letter in tables and legends: A (the baseline), B, C, ..."""
    return chr(ord("A") + index) if index < 26 else f"R{index + 1}"


# -- judging one figure ------------------------------------------------------------------


def judge(base: Measure, later: Measure, worse: Worse, max_regression: float) -> Delta | None:
    """``later`` against ``base`` (see the module doc); None when either has no value."""
    if base.value is None or later.value is None:
        return None
    change = later.value - base.value
    ratio = change / base.value if base.value else (0.0 if change == 0 else None)
    within = abs(change) <= max(base.resolution, later.resolution)
    direction = {"up": 1, "down": -1}.get(worse, 0)
    worse_by = change * direction > 0 and (ratio is None or abs(ratio) > max_regression)
    return Delta(change, ratio, worse_by and not within and base.judged and later.judged, within)


def latency_resolution(hist: HdrHistogram, value_us: int) -> float:
    """The width (us) of the HDR bucket holding ``value_us``: values in it cannot be told apart."""
    return float(hist.get_highest_equivalent_value(value_us) - hist.get_lowest_equivalent_value(value_us) + 1)


# -- measuring a run ----------------------------------------------------------------------

Key = tuple[str, str, str]  # target, kind, figure name
Measured = dict[Key, tuple[str, Worse, Measure]]  # unit, worse direction, the run's measure


def cell_figures(cell: Cell, kind: str, elapsed: float) -> Iterator[tuple[str, str, Worse, Measure]]:
    """(name, unit, worse, measure) of one target's kind: throughput, latencies, errors, retransmissions."""
    yield "throughput", "/s", "down", Measure(cell.completed / elapsed if elapsed > 0 else None,
                                              1 / elapsed if elapsed > 0 else 0.0)
    hist = cell.hist()
    # An interval between notifications is not a latency: shown, not judged.
    timing: Worse = "none" if is_notification(kind) else "up"
    prefix = "interval " if is_notification(kind) else ""
    for name, p in LATENCIES:
        if hist is None or not hist.get_total_count():
            yield prefix + name, "ms", timing, Measure(None)
            continue
        value = int(hist.get_max_value() if p == 100.0 else hist.get_value_at_percentile(p))
        enough = p < 100.0 and hist.get_total_count() * (1 - p / 100) >= TAIL_SAMPLES
        yield prefix + name, "ms", timing, Measure(value / 1000, latency_resolution(hist, value) / 1000, enough)
    ended = cell.completed + cell.failed
    one = 1 / ended if ended else 0.0
    yield "errors", "ratio", "up", Measure(cell.failed / ended if ended else None, one)
    for code, n in sorted(cell.failures.items()):
        yield f"errors {code}", "ratio", "up", Measure(n / ended, one)
    yield "retransmits", "count", "none", Measure(float(cell.retransmits), 1.0)


def measure_run(run: SavedRun, targets: dict[str, str], with_all: bool) -> Measured:
    """Every figure of ``run``; ``targets`` maps its target names to the names compared (see :func:`_pairing`)."""
    out: Measured = {}
    stats, elapsed = run.stats, run.elapsed
    cells = [(targets.get(t, t), kind, stats.cell(kind, t)) for t in stats.targets for kind in stats.kinds_of(t)]
    if with_all:
        cells += [(ALL_TARGETS, kind, cell) for kind, cell in stats.kinds.items()]
    for target, kind, cell in cells:
        for name, unit, worse, m in cell_figures(cell, kind, elapsed):
            out[(target, kind, name)] = (unit, worse, m)
    rows = stats.rows()
    out[(RUN, "", "peak active associations")] = ("count", "none", Measure(
        float(max((r["active"] for r in rows), default=stats.active())), 1.0))
    out.update(_knee_figures(run.summary))
    return out


def _knee_figures(summary: dict[str, Any]) -> Measured:
    """A stepped run's knee (clients) and sustainable capacity (throughput at the knee), as it found them."""
    analysis = summary.get("analysis") or {}
    knee = analysis.get("knee") or {}
    if not analysis.get("steps") or not knee:
        return {}
    durations = [float(s.get("duration") or 0) for s in analysis.get("stages") or []]
    step_time = min(durations, default=0.0)
    unit = str(analysis.get("unit") or knee.get("unit") or "/s")
    capacity, clients = knee.get("capacity"), knee.get("knee_clients")
    return {
        (RUN, "", "knee clients"): ("clients", "down", Measure(None if clients is None else float(clients))),
        (RUN, "", "sustainable capacity"): (unit, "down", Measure(
            None if capacity is None else float(capacity), 1 / step_time if step_time > 0 else 0.0)),
    }


# -- the comparison ---------------------------------------------------------------------------


def _pairing(runs: Sequence[SavedRun]) -> tuple[list[dict[str, str]], list[str]]:
    """Target names as compared: by name; when every run has exactly one target under different names
    (``builtin`` against ``ref``), those are compared, under the baseline's name, and a note says so."""
    singles = [r.stats.targets for r in runs]
    if all(len(t) == 1 for t in singles) and len({t[0] for t in singles}) > 1:
        base = singles[0][0]
        note = "one target per run, compared with each other: " + ", ".join(
            f"{label(i)} {t[0]}" for i, t in enumerate(singles))
        return [{t[0]: base} for t in singles], [note]
    return [{} for _ in runs], []


def _notes(runs: Sequence[SavedRun], measured: list[Measured]) -> list[str]:
    notes = []
    scenarios = [r.scenario for r in runs]
    if len(set(scenarios)) > 1:
        notes.append("different scenarios: " + ", ".join(f"{label(i)} {s}" for i, s in enumerate(scenarios)))
    stepped = [label(i) for i, m in enumerate(measured) if (RUN, "", "knee clients") in m]
    if stepped and len(stepped) < len(runs):
        notes.append(f"knee and sustainable capacity only of the stepped runs: {', '.join(stepped)}")
    pairs = {(t, k) for m in measured for t, k, _ in m if t != RUN}
    for target, kind in sorted(pairs):
        missing = [label(i) for i, m in enumerate(measured) if (target, kind, "throughput") not in m]
        if missing:
            notes.append(f"{kind} [{target}] is not in run {', '.join(missing)}")
    return notes


def _order(keys: list[Key]) -> list[Key]:
    """Targets and kinds as first seen (the run's own figures last), each kind's figures in table order."""
    pairs = list(dict.fromkeys((t, k) for t, k, _ in keys if t != RUN)) + [(RUN, "")]
    rank = {name: n for n, name in enumerate(["throughput", *(f"{pre}{name}" for pre in ("", "interval ")
                                                              for name, _ in LATENCIES), "errors"])}
    return sorted(keys, key=lambda key: (pairs.index(key[:2]), rank.get(key[2], len(rank) + key[2].startswith(
        "retransmits"))))


def _fill_codes(measured: list[Measured], keys: list[Key]) -> None:
    """An error code one run had and another did not: 0 in the other (where that kind ended attempts)."""
    for key in keys:
        target, kind, name = key
        if not name.startswith("errors "):
            continue
        for m in measured:
            errors = m.get((target, kind, "errors"))
            if key not in m and errors is not None and errors[2].value is not None:
                m[key] = (errors[0], errors[1], Measure(0.0, errors[2].resolution))


def compare(runs: Sequence[SavedRun], max_regression: float = DEFAULT_MAX_REGRESSION) -> Comparison:
    """Every figure of ``runs`` side by side, each later run judged against the first (see the module doc)."""
    if len(runs) < 2:
        raise ValueError("compare needs at least two runs")
    renames, notes = _pairing(runs)
    with_all = any(len(r.stats.targets) > 1 for r in runs)
    measured = [measure_run(r, names, with_all) for r, names in zip(runs, renames, strict=True)]
    keys = _order(list(dict.fromkeys(key for m in measured for key in m)))
    _fill_codes(measured, keys)
    figures = []
    for key in keys:
        unit, worse, _ = next(m[key] for m in measured if key in m)
        measures = tuple(m[key][2] if key in m else None for m in measured)
        base = measures[0]
        deltas = tuple(judge(base, later, worse, max_regression) if base is not None and later is not None else None
                       for later in measures[1:])
        figures.append(Figure(*key, unit, worse, measures, deltas))
    # A kind without an ended attempt in any run (a churn run's pings) has no error ratio to show.
    shown = tuple(f for f in figures if f.name != "errors" or any(v is not None for v in f.values))
    return Comparison(tuple(runs), shown, max_regression, tuple(notes + _notes(runs, measured)))


def _number(value: float, *, signed: bool = False) -> str:
    """A figure as the table prints it: 3 significant figures, whole numbers as they are."""
    sign = "+" if signed and value > 0 else ""
    if value == 0:
        return "0"
    if math.isfinite(value) and abs(value - round(value)) < 1e-9 and abs(value) >= 1:
        return f"{sign}{value:.0f}"
    return f"{sign}{value:.3g}"


def show(value: float | None, unit: str) -> str:
    """A value in a table cell: ratios as percentages, the rest to 3 significant figures; ``-`` for none."""
    if value is None:
        return "-"
    if unit == "ratio":
        return f"{value * 100:.3g}%"
    return _number(value)


def show_delta(delta: Delta | None, unit: str) -> str:
    """A delta in a table cell: ``+1.2 (+15.0%)``; an error ratio's change in percentage points."""
    if delta is None:
        return "-"
    if unit == "ratio":
        pct = "new" if delta.ratio is None else f"{delta.ratio * 100:+.1f}%"
        return f"{_number(delta.change * 100, signed=True)} pp ({pct})"
    return delta.describe()


__all__ = ["ALL_TARGETS", "RUN", "Comparison", "Delta", "Figure", "Measure", "SavedRun", "compare", "judge",
           "label", "show", "show_delta"]
