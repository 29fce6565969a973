"""``loadgen run`` (headless, web, distributed), ``loadgen validate`` and ``loadgen locustfile``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from loadgen.cli.argtypes import duration, positive
from loadgen.cli.exit_status import EXIT_THRESHOLD, exit_status
from loadgen.cli.outputs import add_output_options, apply_output_options, junit_path, write_junit
from loadgen.protocol.errors import ConfigError
from loadgen.scenario.syntax import parse_host_port

if TYPE_CHECKING:
    from loadgen.scenario import Scenario


def add_run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``run``: the scenario, load overrides, exit status, web and distributed modes, workload, outputs."""
    run = sub.add_parser("run", help="run a scenario: headless (default), --web, or distributed")
    run.add_argument("scenario", help="the scenario file (YAML)")
    load = run.add_argument_group("load (override the scenario; not with its stages)")
    load.add_argument("-u", "--users", type=positive(int), default=None, metavar="N",
                      help="clients (default: the scenario's clients.count)")
    load.add_argument("-r", "--spawn-rate", type=positive(float), default=None, metavar="R",
                      help="clients started per second (default: the scenario's clients.spawn_rate)")
    load.add_argument("-t", "--run-time", type=duration, default=None, metavar="TIME",
                      help="how long the run lasts: 90, 30s, 2m, 1h30m, 500ms (default: the scenario's run_time)")
    run.add_argument("--exit-code-on-error", type=exit_status, default=EXIT_THRESHOLD, metavar="N",
                     help="exit status when any handshake or ping failed and the scenario has no thresholds "
                          "(thresholds decide when it has them)")
    run.add_argument("--web", action="store_true", help="serve Locust's web UI instead of starting at once")
    run.add_argument("--web-host", default="127.0.0.1", help="--web: address of the web UI")
    run.add_argument("--web-port", type=int, default=8089, help="--web: port of the web UI")
    _distributed_options(run)
    add_workload_options(run)
    add_output_options(run)


def _distributed_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--processes", type=int, default=0, metavar="N",
                     help="start N Locust worker processes on this machine and act as their master (default 0: none)")
    run.add_argument("--master", action="store_true", help="be a Locust master; workers connect to it")
    run.add_argument("--expect-workers", type=int, default=1, metavar="N",
                     help="master: wait for N workers before a headless run starts")
    run.add_argument("--master-port", type=int, default=5557, help="master: the port workers connect to")
    run.add_argument("--worker", action="store_true", help="be a Locust worker of a master")
    run.add_argument("--master-host", default="127.0.0.1", help="worker: the master's address")
    run.add_argument("--workers", type=int, default=None, metavar="N",
                     help="worker: how many workers there are (keeps device numbers dense: n = index + k*N; "
                          "default: numbered by the master)")
    run.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument("--builtin-address", default=None, metavar="HOST:PORT",
                     help="worker: the master's built-in server (printed by the master; default: the "
                          "scenario's targets)")
    run.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    run.add_argument("--server-workers", type=int, default=1, metavar="N",
                     help="a scenario without targets: run the built-in server as N processes on its one port "
                          "(SO_REUSEPORT, as `loadgen serve dtls --workers N`) when one core does not keep up "
                          "(default 1)")


def add_workload_options(parser: argparse.ArgumentParser) -> None:
    """``--workload`` and ``--period`` (``run`` and ``capacity``)."""
    parser.add_argument("--workload", choices=("steady", "churn"), default="steady",
                        help="steady: clients connect once and ping (the scenario's behaviour); churn: each client "
                             "handshakes once per --period and closes (measures handshake capacity)")
    parser.add_argument("--period", type=duration, default=1.0, metavar="TIME",
                        help="churn: time between one client's handshakes (default 1s)")


def add_validate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``locustfile`` and ``validate``."""
    sub.add_parser("locustfile", help="print the path of loadgen's locustfile (for plain `locust -f`)")
    validate = sub.add_parser("validate", help="check a scenario file without running it")
    validate.add_argument("scenario", help="the scenario file (YAML)")


def run_command(args: argparse.Namespace) -> int:
    """``loadgen run``: 0 when the run passed, 1 when a threshold failed or no attempt ended, else
    ``--exit-code-on-error`` (see :meth:`~loadgen.results.summary.RunOutcome.exit_status`)."""
    import locust  # noqa: F401 - monkey-patches the standard library for gevent; must come first

    from loadgen.locust.environment import RunOptions
    from loadgen.locust.run import run
    from loadgen.scenario import load_scenario

    scenario = with_load_options(apply_output_options(load_scenario(args.scenario), args), args)
    junit = junit_path(args)
    if args.processes < 0 or (args.workers is not None and args.workers < 1) or args.server_workers < 1:
        raise ConfigError("--processes, --workers and --server-workers must be positive")
    options = RunOptions(
        web=args.web, web_host=args.web_host, web_port=args.web_port, processes=args.processes,
        master=args.master, worker=args.worker, master_host=args.master_host, master_port=args.master_port,
        expect_workers=args.expect_workers, worker_index=args.worker_index,
        workers=args.workers, builtin_address=_builtin_address(args.builtin_address),
        run_dir=Path(args.run_dir) if args.run_dir else None, workload=args.workload, period=args.period,
        server_workers=args.server_workers,
    )
    outcome = run(scenario, options)
    write_junit(junit, outcome, failures_fail=args.exit_code_on_error != 0)
    return outcome.exit_status(args.exit_code_on_error)


def _builtin_address(text: str | None) -> tuple[str, int] | None:
    """``--builtin-address HOST:PORT`` (None when not given)."""
    if not text:
        return None
    return parse_host_port(text, "--builtin-address")


def with_load_options(scenario: Scenario, args: argparse.Namespace) -> Scenario:
    """``scenario`` with ``-u``, ``-r`` and ``-t`` applied. A scenario with stages is refused them:
    its stages set clients, spawn rates and the run's length, and which to override would be a guess."""
    given = [flag for flag, value in (("-u/--users", args.users), ("-r/--spawn-rate", args.spawn_rate),
                                      ("-t/--run-time", args.run_time)) if value is not None]
    if not given:
        return scenario
    if scenario.stages:
        raise ConfigError(f"{', '.join(given)}: {args.scenario} has stages, which set the clients, spawn rates "
                          "and run time; edit its stages, or remove them to use -u, -r and -t")
    clients = dataclasses.replace(scenario.clients, count=args.users or scenario.clients.count,
                                  spawn_rate=args.spawn_rate or scenario.clients.spawn_rate)
    return dataclasses.replace(scenario, clients=clients, run_time=args.run_time or scenario.run_time)


def locustfile_command(args: argparse.Namespace) -> int:
    """``loadgen locustfile``: the path of loadgen's locustfile."""
    from loadgen import locustfile

    print(locustfile.__file__)
    return 0


def validate_command(args: argparse.Namespace) -> int:
    """``loadgen validate``: exit 0 for a valid scenario (with a warning when this machine could not run it)."""
    from loadgen.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    print(f"{args.scenario}: scenario {scenario.name!r} is valid")
    from loadgen.locust.limits import advice

    for problem in advice(scenario):  # what `loadgen run` would stop at (exit 2)
        print(f"loadgen: WARNING: on this machine `loadgen run` would not start: {problem}")
    return 0
