"""Command-line pieces for stats, outputs and capacity planning (``loadgen capacity``, ``loadgen report``).

Kept out of :mod:`loadgen.cli` so that module stays a table of contents: it calls the
``add_*`` functions to build its parser and hands these commands over.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .scenario import Scenario


#: One part of a duration: a number and its unit ("ms" before "m", so "500ms" is not 500 minutes and a second).
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """Seconds (argparse type) from a scenario's syntax (``10``, ``10s``, ``500ms``, ``2m``, ``1.5h``) or
    Locust's ``-t`` syntax, which chains units (``1h30m``, ``2m30s``); a bare number is seconds."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        if not re.fullmatch(f"(?:{_DURATION_PART.pattern})+", text):
            raise argparse.ArgumentTypeError(
                f"expected a duration like 30s, 500ms, 2m or 1h30m, got {text!r}") from None
        value = sum(float(number) * _UNITS[unit] for number, unit in _DURATION_PART.findall(text))
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a duration > 0, got {text!r}")
    return value


def positive(text: str) -> float:
    """A number > 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """Collector switches that override the scenario's ``outputs``."""
    group = parser.add_argument_group("outputs (override the scenario's outputs section)")
    group.add_argument("--prometheus", metavar="HOST:PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics (default: the scenario's, off)")
    group.add_argument("--statsd", metavar="HOST:PORT",
                       help="send StatsD metrics (UDP) to HOST:PORT (default: the scenario's, off)")
    group.add_argument("--statsd-prefix", metavar="PREFIX",
                       help="StatsD metric name prefix (default: the scenario's, loadgen)")
    group.add_argument("--results-dir", metavar="DIR",
                       help="where result directories go (default: the scenario's, results/)")
    for name, what in (("csv", "timeseries.csv"), ("json", "summary.json and series.json"),
                       ("report", "report.html")):
        group.add_argument(f"--{name}", dest=name, action="store_true", default=None,
                           help=f"write {what} (default: as the scenario says, on)")
        group.add_argument(f"--no-{name}", dest=name, action="store_false", help=f"do not write {what}")


def add_workload_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workload", choices=("steady", "churn"), default="steady",
                        help="steady: clients connect once and ping (the scenario's behaviour); churn: each client "
                             "handshakes once per --period and closes (measures handshake capacity)")
    parser.add_argument("--period", type=duration, default=1.0, metavar="TIME",
                        help="churn: time between one client's handshakes (default 1s)")


def add_throttle_options(parser: argparse.ArgumentParser) -> None:
    """``serve dtls`` throttles: an overloaded server, to test capacity planning against."""
    group = parser.add_argument_group("throttles (drop silently above a rate, as an overloaded server would)")
    group.add_argument("--max-handshake-rate", type=positive, default=None, metavar="N",
                       help="accept at most N new handshakes per second (ClientHellos with a valid cookie; "
                            "default: no limit)")
    group.add_argument("--max-ping-rate", type=positive, default=None, metavar="N",
                       help="answer at most N application-data records (pings) per second (default: no limit)")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``capacity`` and ``report`` subcommands."""
    cap = sub.add_parser("capacity", help="raise the load step by step and find the knee",
                         description="Run SCENARIO in steps of START, START+STEP, ... clients (STEP-TIME each), "
                                     "measure each step and report the knee and the sustainable capacity.")
    cap.add_argument("scenario", help="the scenario file (YAML)")
    cap.add_argument("--start", type=int, default=None, metavar="N", help="clients in the first step "
                     "(default: the scenario's clients.count / --steps)")
    cap.add_argument("--step", type=int, default=None, metavar="N", help="clients added per step (default: --start)")
    cap.add_argument("--steps", type=int, default=8, metavar="K", help="number of steps (default 8)")
    cap.add_argument("--step-time", type=duration, default=15.0, metavar="TIME", help="length of a step (default 15s)")
    cap.add_argument("--spawn-rate", type=float, default=None, metavar="R",
                     help="clients started per second (default: fast enough to reach a step in its first seconds)")
    cap.add_argument("--processes", type=int, default=0, metavar="N",
                     help="start N Locust worker processes here and be their master (when one core is not enough)")
    add_workload_options(cap)
    add_output_options(cap)

    report = sub.add_parser("report", help="rebuild RUN_DIR/report.html from the run's saved data")
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run's directory, results/<run-id>")


def apply_output_options(scenario: Scenario, args: argparse.Namespace) -> Scenario:
    from .outputs import with_overrides

    return with_overrides(scenario, prometheus=args.prometheus, statsd=args.statsd, statsd_prefix=args.statsd_prefix,
                          csv=args.csv, json=args.json, report=args.report, results_dir=args.results_dir)


def capacity(args: argparse.Namespace) -> int:
    """``loadgen capacity``: stepped run; exit 0 when the knee was found or not reached, 1 otherwise."""
    import locust  # noqa: F401 - monkey-patches the standard library for gevent; must come first

    from .capacity import KNEE_FOUND, stepped
    from .runner import RunOptions, run
    from .scenario import load_scenario

    scenario = apply_output_options(load_scenario(args.scenario), args)
    if args.steps < 1 or args.processes < 0:
        raise ConfigError("--steps must be >= 1 and --processes >= 0")
    start = args.start if args.start is not None else max(1, scenario.clients.count // args.steps)
    step = args.step if args.step is not None else start
    try:
        scenario = stepped(scenario, start=start, step=step, steps=args.steps, step_time=args.step_time,
                           spawn_rate=args.spawn_rate)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print(f"loadgen: capacity steps: {', '.join(str(s.clients) for s in scenario.stages)} clients, "
          f"{args.step_time:g} s each, workload {args.workload}", flush=True)
    outcome = run(scenario, RunOptions(processes=args.processes, workload=args.workload, period=args.period))
    knee = outcome.analysis.knee if outcome.analysis is not None else None
    return 0 if knee is not None and knee.limited_by in KNEE_FOUND else 1


def report(args: argparse.Namespace) -> int:
    from .report import rebuild

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: not a directory")
    path = rebuild(run_dir)
    print(f"loadgen: report written to {path}")
    return 0
