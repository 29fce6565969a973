"""A run read back from its directory (``results/<run-id>/``) for ``loadgen compare``.

Every way of running (``run``, ``capacity``, distributed) writes the same ``summary.json`` and
``series.json`` (:mod:`loadgen.results.files`); a directory without them, or with files that do not
parse, is unusable input: :class:`~loadgen.protocol.errors.ConfigError` naming the file and what is
wrong, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loadgen.protocol.errors import ConfigError
from loadgen.results.compare import SavedRun
from loadgen.stats.run import RunStats


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: not found (a run's directory holds summary.json and series.json; "
                          "was the run made with json output off?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot be read as JSON: {exc}") from None


def _stats(path: Path, data: Any) -> RunStats:
    """The run's stats with every total's histogram decoded now, so a corrupt one is named here."""
    if not isinstance(data, dict) or not isinstance(data.get("totals"), list):
        raise ConfigError(f"{path}: not a loadgen series.json (no 'totals' list)")
    try:
        stats = RunStats.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path}: unexpected content: {type(exc).__name__} {exc}") from None
    for (kind, target), cell in stats.totals.items():
        try:
            cell.hist()
        except Exception as exc:  # hdrh raises its own classes (HdrLengthException, zlib.error, ...)
            raise ConfigError(f"{path}: the histogram of {kind} [{target}] is corrupt: {exc}") from None
    try:
        stats.rows()  # the per-second histograms too (the charts read them); their figures stay cached
    except Exception as exc:  # as above
        raise ConfigError(f"{path}: a per-second histogram is corrupt: {exc}") from None
    return stats


def _check_analysis(path: Path, summary: dict[str, Any]) -> None:
    """The parts of ``analysis`` compare reads (a stepped run's stages and knee) have their types."""
    analysis = summary.get("analysis")
    if analysis is None:
        return
    knee = analysis.get("knee") if isinstance(analysis, dict) else None
    stages = analysis.get("stages") if isinstance(analysis, dict) else None
    numbers = [knee.get(k) for k in ("capacity", "knee_clients")] if isinstance(knee, dict) else []
    numbers += [s.get("duration") for s in stages or [] if isinstance(s, dict)]
    if (not isinstance(analysis, dict) or not isinstance(knee, dict | None) or not isinstance(stages, list | None)
            or not all(isinstance(s, dict) for s in stages or [])
            or not all(n is None or isinstance(n, int | float) for n in numbers)):
        raise ConfigError(f"{path}: 'analysis' is not as loadgen writes it (stages, knee: capacity, knee_clients)")


def load_run(directory: Path) -> SavedRun:
    """``directory``'s ``summary.json`` and ``series.json`` (see the module doc)."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a run directory (it does not exist or is not a directory)")
    summary_path = directory / "summary.json"
    summary = _read_json(summary_path)
    if not isinstance(summary, dict) or not isinstance(summary.get("elapsed_s"), int | float):
        raise ConfigError(f"{summary_path}: not a loadgen summary.json (no 'elapsed_s')")
    _check_analysis(summary_path, summary)
    series_path = directory / "series.json"
    stats = _stats(series_path, _read_json(series_path))
    return SavedRun(str(directory), summary, stats)
