"""``loadgen compare RUN_A RUN_B [RUN_C ...]``: did it get worse? Saved runs side by side.

The judgement is :mod:`loadgen.results.compare`; this module reads the directories, prints the
console table and writes ``compare.json`` and ``compare.html`` (and ``--junit FILE``). Exit status:
1 when a later run regressed against the baseline A, 0 otherwise, 2 on unusable input.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from loadgen.cli.exit_status import EXIT_THRESHOLD
from loadgen.protocol.errors import ConfigError
from loadgen.results.compare import DEFAULT_MAX_REGRESSION, Comparison, compare, label, show, show_delta


def percent(text: str) -> float:
    """An argparse type: a share given in percent, ``10`` or ``10%`` (returned as 0.10)."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage like 10 or 10%, got {text!r}") from None
    if not 0 <= value < 1e6:
        raise argparse.ArgumentTypeError(f"expected a percentage >= 0, got {text!r}")
    return value / 100


def add_compare_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``compare`` subcommand."""
    cmp = sub.add_parser(
        "compare", help="compare saved runs against the first: regressions in latency, throughput, errors",
        description="Compare runs (results/<run-id> directories) against the first, the baseline: per target\n"
                    "and kind, throughput, p50..max latency (from the saved HDR histograms), error ratio by code,\n"
                    "retransmissions; peak active associations; for stepped runs the knee and sustainable capacity.\n"
                    "Prints a table, writes compare.json and compare.html. Exit 1 when a later run regressed,\n"
                    "0 when none did, 2 when a directory is unusable.")
    cmp.add_argument("runs", nargs="+", metavar="RUN", help="run directories, the baseline first")
    cmp.add_argument("--max-regression", type=percent, default=DEFAULT_MAX_REGRESSION, metavar="PCT",
                     help="a figure worse than the baseline by more than PCT percent (and by more than the "
                          "histograms' resolution) is a regression (default: 10%%)")
    cmp.add_argument("--out", metavar="DIR", default=None,
                     help="where compare.json and compare.html go (default: a new compare-<UTC time>/ next to "
                          "the first run, e.g. results/compare-20261202-151500)")
    cmp.add_argument("--junit", metavar="FILE", default=None,
                     help="also write every compared figure as a JUnit test case, a regression as a failure")


def compare_command(args: argparse.Namespace) -> int:
    """``loadgen compare``: see the module doc."""
    from loadgen.results.compare_html import render_compare
    from loadgen.results.saved import load_run

    if len(args.runs) < 2:
        raise ConfigError("compare needs at least two run directories (the baseline first)")
    comparison = compare([load_run(Path(p)) for p in args.runs], args.max_regression)
    print_table(comparison, sys.stdout)
    out = Path(args.out) if args.out else _default_out(Path(args.runs[0]))
    written = [out / "compare.json", out / "compare.html"]
    try:
        out.mkdir(parents=True, exist_ok=True)
        written[0].write_text(json.dumps(comparison.to_json(), indent=2) + "\n")
        written[1].write_text(render_compare(comparison), encoding="utf-8")
        if args.junit:
            from loadgen.results.compare_junit import write_junit

            written.append(write_junit(comparison, Path(args.junit)))
    except OSError as exc:  # --out naming a file, a read-only directory, ...
        raise ConfigError(f"{exc.filename or out}: cannot write the comparison: {exc.strerror or exc}") from None
    print(f"loadgen: compare: {comparison.verdict}")
    print(f"loadgen: written {', '.join(map(str, written))}")
    return EXIT_THRESHOLD if comparison.regressions else 0


def _default_out(first: Path) -> Path:
    """``compare-<UTC time>/`` next to the first run (under results/ as runs are), never an existing one."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = (first.parent if first.name else first.resolve().parent) / f"compare-{stamp}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def table_rows(comparison: Comparison) -> list[list[str]]:
    """The console table's cells, the header first."""
    later = range(1, len(comparison.runs))
    rows = [["target", "kind", "figure", "A", *(h for i in later for h in (label(i), f"delta {label(i)}")), ""]]
    for f in comparison.figures:
        cells = [f.target, f.kind or "-", f.heading, show(f.values[0], f.unit)]
        for value, delta in zip(f.values[1:], f.deltas, strict=True):
            cells += [show(value, f.unit), show_delta(delta, f.unit)]
        rows.append([*cells, "REGRESSION" if f.regressed else ""])
    return rows


def print_table(comparison: Comparison, out: TextIO) -> None:
    """The runs, the notes, then one line per figure, columns aligned (text left, numbers right)."""
    for i, run in enumerate(comparison.runs):
        role = "baseline" if i == 0 else "against A"
        print(f"{label(i)} = {run.label} ({role}; scenario {run.scenario}, {run.elapsed:.0f} s, "
              f"{run.summary.get('outcome') or '?'})", file=out)
    for note in comparison.notes:
        print(f"note: {note}", file=out)
    rows = table_rows(comparison)
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        cells = [cell.ljust(w) if c < 3 or c == len(r) - 1 else cell.rjust(w)
                 for c, (cell, w) in enumerate(zip(r, widths, strict=True))]
        print("  ".join(cells).rstrip(), file=out)
