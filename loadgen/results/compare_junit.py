"""A comparison as JUnit XML (``loadgen compare --junit FILE``): one test case per compared figure and
later run, a regression as a failed case, so CI shows which figure got worse and by how much."""

from __future__ import annotations

from pathlib import Path

from loadgen.results.compare import Comparison, label, show, show_delta
from loadgen.results.junit import Case, write

CLASSNAME = "loadgen.compare"


def compare_cases(comparison: Comparison) -> list[Case]:
    """A case per figure with a delta (``ping p99 [ref] B vs A``); failed when it is a regression."""
    cases = []
    for figure in comparison.figures:
        base = show(figure.values[0], figure.unit)
        for i, (value, delta) in enumerate(zip(figure.values[1:], figure.deltas, strict=True), 1):
            if delta is None:
                continue
            moved = f"{base} -> {show(value, figure.unit)}{figure.suffix}, {show_delta(delta, figure.unit)}"
            failure = (f"{figure.title}: {moved}, worse than {comparison.max_regression:.0%}"
                       if delta.regression else None)
            detail = f"A = {comparison.runs[0].label}, {label(i)} = {comparison.runs[i].label}: {moved}"
            cases.append(Case(f"{figure.title} {label(i)} vs A", CLASSNAME, failure, detail))
    return cases


def write_junit(comparison: Comparison, path: Path) -> Path:
    """``path``: the cases of :func:`compare_cases` as one JUnit suite, ``loadgen compare``."""
    write(path, "loadgen compare", compare_cases(comparison))
    return path
