"""The output options of ``loadgen run`` and ``loadgen capacity``: collectors and files that override
the scenario's ``outputs`` section (see :mod:`loadgen.results.files` and :mod:`loadgen.exporters`)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadgen.protocol.errors import ConfigError
from loadgen.scenario.syntax import parse_host_port

LOOPBACK = "127.0.0.1"  # where a collector listens or sends when HOST is left out

if TYPE_CHECKING:
    from loadgen.results.summary import RunOutcome
    from loadgen.scenario import Scenario


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """Collector switches that override the scenario's ``outputs``."""
    group = parser.add_argument_group("outputs (override the scenario's outputs section)")
    group.add_argument("--prometheus", metavar="HOST:PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics (default: the scenario's, off)")
    group.add_argument("--statsd", metavar="HOST:PORT",
                       help="send StatsD metrics (UDP) to HOST:PORT (default: the scenario's, off)")
    group.add_argument("--statsd-prefix", metavar="PREFIX",
                       help="StatsD metric name prefix (default: the scenario's, loadgen)")
    group.add_argument("--junit", metavar="FILE",
                       help="write the run's verdict and thresholds as JUnit XML test cases to FILE (for CI)")
    group.add_argument("--results-dir", metavar="DIR",
                       help="where result directories go (default: the scenario's, results/)")
    for name, what in (("csv", "timeseries.csv"), ("json", "summary.json and series.json"),
                       ("report", "report.html")):
        group.add_argument(f"--{name}", dest=name, action="store_true", default=None,
                           help=f"write {what} (default: as the scenario says, on)")
        group.add_argument(f"--no-{name}", dest=name, action="store_false", help=f"do not write {what}")


def apply_output_options(scenario: Scenario, args: argparse.Namespace) -> Scenario:
    """``scenario`` with the output options in ``args`` applied (see :func:`with_overrides`)."""
    return with_overrides(scenario, prometheus=args.prometheus, statsd=args.statsd, statsd_prefix=args.statsd_prefix,
                          csv=args.csv, json=args.json, report=args.report, results_dir=args.results_dir)


def with_overrides(scenario: Scenario, *, prometheus: str | None = None, statsd: str | None = None,
                   statsd_prefix: str | None = None, csv: bool | None = None, json: bool | None = None,
                   report: bool | None = None, results_dir: str | None = None) -> Scenario:
    """``scenario`` with its ``outputs`` changed by command-line options (None: keep the scenario's)."""
    from loadgen.scenario.model import PrometheusConfig, StatsdConfig

    outputs = scenario.outputs
    changes: dict[str, Any] = {}
    if prometheus is not None:
        host, port = parse_host_port(prometheus, "--prometheus", default_host=LOOPBACK)
        changes["prometheus"] = PrometheusConfig(host, port)
    if statsd is not None or statsd_prefix is not None:
        base = outputs.statsd or StatsdConfig()
        host, port = (parse_host_port(statsd, "--statsd", default_host=LOOPBACK) if statsd is not None
                      else (base.host, base.port))
        changes["statsd"] = StatsdConfig(host, port, statsd_prefix if statsd_prefix is not None else base.prefix)
    for name, value in (("csv", csv), ("json", json), ("report", report)):
        if value is not None:
            changes[name] = value
    if results_dir is not None:
        changes["results_dir"] = Path(results_dir)
    return dataclasses.replace(scenario, outputs=dataclasses.replace(outputs, **changes)) if changes else scenario


def junit_path(args: argparse.Namespace) -> Path | None:
    """``--junit FILE`` checked before the run (a run is long to lose to a typo), or None."""
    if not args.junit:
        return None
    if getattr(args, "worker", False):
        raise ConfigError("--junit: a worker does not judge the run; give --junit to the master")
    path = Path(args.junit)
    if path.is_dir():
        raise ConfigError(f"--junit {path}: is a directory; give a file name (junit.xml)")
    return path


def write_junit(path: Path | None, outcome: RunOutcome, failures_fail: bool = True) -> None:
    """The run's JUnit file (see :mod:`loadgen.results.run_junit`), when ``--junit`` asked for one."""
    if path is None:
        return
    from loadgen.results.run_junit import write_run_junit

    try:
        write_run_junit(path, outcome, failures_fail)
    except OSError as exc:
        raise ConfigError(f"--junit {path}: cannot write: {exc.strerror or exc}") from None
    print(f"loadgen: JUnit test cases written to {path}")
