"""What a run leaves behind and exports: files under ``results/<run-id>/`` and live metric endpoints.

Each collector is switched on in the scenario's ``outputs`` or on the command line
(:func:`with_overrides`):

- ``summary.json`` (``json``): totals, per target and per kind, thresholds, steps, verdict
- ``series.json`` (``json``): the per-second series with its HDR histograms; what
  ``loadgen report`` rebuilds the report from
- ``timeseries.csv`` (``csv``): one row per second
- ``report.html`` (``report``): see :mod:`loadgen.report`
- a Prometheus endpoint (``prometheus``) and StatsD output (``statsd``) while the run lasts
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from .errors import ConfigError
from .exporters.prometheus import PrometheusEndpoint
from .exporters.statsd import StatsdExporter
from .scenario import Scenario
from .scenario.model import PrometheusConfig, StatsdConfig
from .stats.cells import PERCENTILES
from .stats.run import KINDS, RunStats


def parse_host_port(text: str, where: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` / ``PORT`` (host defaults to loopback)."""
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where}: expected HOST:PORT, got {text!r}")
    return host.strip("[]") or default_host, int(port)


def with_overrides(scenario: Scenario, *, prometheus: str | None = None, statsd: str | None = None,
                   statsd_prefix: str | None = None, csv: bool | None = None, json: bool | None = None,
                   report: bool | None = None, results_dir: str | None = None) -> Scenario:
    """``scenario`` with its ``outputs`` changed by command-line options (None: keep the scenario's)."""
    outputs = scenario.outputs
    changes: dict[str, Any] = {}
    if prometheus is not None:
        host, port = parse_host_port(prometheus, "--prometheus")
        changes["prometheus"] = PrometheusConfig(host, port)
    if statsd is not None or statsd_prefix is not None:
        base = outputs.statsd or StatsdConfig()
        host, port = parse_host_port(statsd, "--statsd") if statsd is not None else (base.host, base.port)
        changes["statsd"] = StatsdConfig(host, port, statsd_prefix if statsd_prefix is not None else base.prefix)
    for name, value in (("csv", csv), ("json", json), ("report", report)):
        if value is not None:
            changes[name] = value
    if results_dir is not None:
        changes["results_dir"] = Path(results_dir)
    return dataclasses.replace(scenario, outputs=dataclasses.replace(outputs, **changes)) if changes else scenario


class Exporters:
    """The live collectors of a run (Prometheus, StatsD), started and stopped together."""

    def __init__(self, scenario: Scenario, stats: RunStats, users: Callable[[], int]) -> None:
        self.prometheus: PrometheusEndpoint | None = None
        self.statsd: StatsdExporter | None = None
        outputs = scenario.outputs
        if outputs.prometheus is not None:
            self.prometheus = PrometheusEndpoint(stats, outputs.prometheus.host, outputs.prometheus.port, users)
        if outputs.statsd is not None:
            self.statsd = StatsdExporter(stats, outputs.statsd.host, outputs.statsd.port, outputs.statsd.prefix, users)

    def start(self, out: TextIO) -> Exporters:
        if self.prometheus is not None:
            try:
                self.prometheus.start()
            except OSError as exc:
                raise ConfigError(f"prometheus: cannot listen: {exc.strerror or exc}") from None
            host, port = self.prometheus.address
            print(f"loadgen: Prometheus metrics at http://{host}:{port}/metrics", file=out, flush=True)
        if self.statsd is not None:
            self.statsd.start()
        return self

    def stop(self) -> None:
        """Final StatsD flush (so its counters add up to the totals), then close the endpoint."""
        if self.statsd is not None:
            self.statsd.stop()
        if self.prometheus is not None:
            self.prometheus.stop()


# -- summary --------------------------------------------------------------------------


def targets_summary(stats: RunStats, elapsed: float) -> dict[str, Any]:
    """Per target: per-kind totals (with exact percentiles) and active associations."""
    out: dict[str, Any] = {}
    for target in stats.targets:
        out[target] = {kind: stats.cell(kind, target).summary(elapsed) for kind in KINDS}
        out[target]["active_associations"] = stats.active(target)
    return out


# -- files --------------------------------------------------------------------------


def _csv_header() -> list[str]:
    head = ["second", "time_utc", "duration_s", "users", "active_associations", "processes",
            "cpu_busiest_pct", "cpu_total_pct"]
    for kind in KINDS:
        head += [f"{kind}_{c}" for c in ("attempted", "completed", "failed", "retransmits")]
        head += [f"{kind}_{name}_ms" for name, _ in PERCENTILES]
        head.append(f"{kind}_errors")
    return head


def write_timeseries_csv(rows: list[dict[str, Any]], target: Path | TextIO) -> None:
    """One line per second; errors as ``code=n;code=n``; empty percentile cells for seconds without data."""
    if isinstance(target, Path):
        with target.open("w", newline="") as f:
            write_timeseries_csv(rows, f)
        return
    writer = csv.writer(target)
    writer.writerow(_csv_header())
    for row in rows:
        line: list[Any] = [row["second"], datetime.fromtimestamp(row["time"], UTC).isoformat(timespec="seconds"),
                           f"{row['duration']:.3f}", row["users"], row["active"], row["processes"],
                           f"{row['cpu_max']:.1f}", f"{row['cpu_total']:.1f}"]
        for kind in KINDS:
            fig = row[kind]
            line += [fig["attempted"], fig["completed"], fig["failed"], fig["retransmits"]]
            line += ["" if fig[name] is None else f"{fig[name]:.3f}" for name, _ in PERCENTILES]
            line.append(";".join(f"{code}={n}" for code, n in sorted(fig["errors"].items())))
        writer.writerow(line)


def write_files(run_dir: Path, scenario: Scenario, stats: RunStats, summary: dict[str, Any],
                scenario_json: dict[str, Any]) -> list[Path]:
    """summary.json, series.json, timeseries.csv and report.html, as ``scenario.outputs`` asks."""
    from .report import render_report  # the report pulls in the chart code only when asked for

    outputs = scenario.outputs
    written = []
    rows = stats.rows()
    if outputs.json:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (run_dir / "series.json").write_text(json.dumps(stats.to_json(), separators=(",", ":")) + "\n")
        written += [run_dir / "summary.json", run_dir / "series.json"]
    if outputs.csv:
        write_timeseries_csv(rows, run_dir / "timeseries.csv")
        written.append(run_dir / "timeseries.csv")
    if outputs.report:
        (run_dir / "report.html").write_text(render_report(summary, rows, scenario_json), encoding="utf-8")
        written.append(run_dir / "report.html")
    return written
