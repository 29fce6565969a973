"""``loadgen capacity`` (a stepped run that finds the knee) and ``loadgen report`` (a run's report rebuilt)."""

from __future__ import annotations

import argparse
from pathlib import Path

from loadgen.cli.argtypes import duration
from loadgen.cli.outputs import add_output_options, apply_output_options, junit_path, write_junit
from loadgen.cli.run import add_workload_options
from loadgen.protocol.errors import ConfigError


def add_capacity_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def capacity_command(args: argparse.Namespace) -> int:
    """``loadgen capacity``: stepped run; exit 0 when the knee was found or not reached, 1 otherwise."""
    import locust  # noqa: F401 - monkey-patches the standard library for gevent; must come first

    from loadgen.capacity import KNEE_FOUND, stepped
    from loadgen.locust.environment import RunOptions
    from loadgen.locust.run import run
    from loadgen.scenario import load_scenario

    scenario = apply_output_options(load_scenario(args.scenario), args)
    junit = junit_path(args)
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
    write_junit(junit, outcome)
    knee = outcome.analysis.knee if outcome.analysis is not None else None
    return 0 if knee is not None and knee.limited_by in KNEE_FOUND else 1


def report_command(args: argparse.Namespace) -> int:
    """``loadgen report``: rebuild ``RUN_DIR/report.html``; exit 0."""
    from loadgen.report import rebuild

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: not a directory")
    path = rebuild(run_dir)
    print(f"loadgen: report written to {path}")
    return 0
