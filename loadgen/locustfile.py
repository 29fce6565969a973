"""loadgen devices for plain ``locust``: the web UI, headless runs and workers as Locust users know them.

    locust -f "$(loadgen locustfile)" --scenario scenarios/quickstart.yaml
    LOADGEN_SCENARIO=scenarios/quickstart.yaml locust -f "$(loadgen locustfile)" --headless -u 100 -r 50 -t 30s

A scenario without targets gets the built-in server, started by each process that
runs users (so with plain Locust workers, give targets, or use ``loadgen run --processes``).
Ramp stages become the run's LoadTestShape.

When Locust quits, the local runner or the master writes ``results/<run>/`` (summary, series,
CSV, report, verdict) and prints loadgen's summary, as ``loadgen run`` does
(:func:`loadgen.locust.run.finish_run`), and sets the exit status the same way: 0 when the run
passed, 1 when a threshold failed, ``--exit-code-on-error`` (default 1) when the scenario has no
thresholds and an attempt failed. Quitting while users still run (Ctrl-C) marks it interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
from typing import Any

import gevent
import greenlet
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from loadgen.locust import shape  # not the class itself: Locust instantiates every shape class it finds here
from loadgen.locust.numbering import WorkerPlace, number_workers
from loadgen.locust.runclock import RunClock
from loadgen.locust.users import PingUser, Session, user_classes
from loadgen.scenario import Scenario, load_scenario
from loadgen.servers.launcher import ServerProcess
from loadgen.stats.facts import scenario_kinds
from loadgen.stats.live import LiveStats, Role
from loadgen.stats.run import RunStats
from loadgen.stats.sink import StatsSink


class Device(PingUser):
    """A simulated device of the scenario given with --scenario / LOADGEN_SCENARIO."""

    abstract = False


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]  # locust is untyped
def _add_scenario_option(parser: Any) -> None:
    parser.add_argument("--scenario", default=os.environ.get("LOADGEN_SCENARIO", ""),
                        help="loadgen scenario YAML (or set LOADGEN_SCENARIO)", include_in_web_ui=False)


@events.init.add_listener  # type: ignore[untyped-decorator]  # locust is untyped
def _bind_scenario(environment: Any, runner: Any = None, web_ui: Any = None, **_: Any) -> None:
    path = getattr(environment.parsed_options, "scenario", "") or os.environ.get("LOADGEN_SCENARIO", "")
    if not path:
        raise SystemExit("loadgen: give --scenario FILE or set LOADGEN_SCENARIO")
    _interrupt_in_main_greenlet()
    # A worker listens for its place before anything here can yield to its message loop.
    place = WorkerPlace(runner) if isinstance(runner, WorkerRunner) else None
    scenario = load_scenario(path)
    scenario = _check_limits(scenario, environment, runner)
    if scenario.stages and environment.shape_class is None:
        environment.shape_class = shape.StagesShape(scenario.stages)
        environment.shape_class.runner = runner
    stack = contextlib.ExitStack()
    _fleet_classes(environment, scenario, None)
    if isinstance(runner, MasterRunner):
        # The master runs no users, it merges their seconds.
        stats = _live_stats(environment, None, "master", web_ui, scenario)
        _results_when_quitting(environment, scenario, stats, stack, None)
        number_workers(runner)  # plain Locust workers are alike: each is told its place
        return
    from loadgen.locust.environment import RunOptions, endpoints

    # The scenario's targets, or the built-in server for as long as Locust runs (as `loadgen run` does).
    eps, server = stack.enter_context(endpoints(scenario, RunOptions()))
    session = Device.session = Session(scenario, environment, eps)
    _fleet_classes(environment, scenario, session)
    if place is not None:
        place.bind(session)
        _live_stats(environment, session.stats_sink, "worker", web_ui, scenario)
        environment.events.quitting.add_listener(lambda **_: stack.close())
        return
    stats = _live_stats(environment, session.stats_sink, "local", web_ui, scenario)
    _results_when_quitting(environment, scenario, stats, stack, server)


def _fleet_classes(environment: Any, scenario: Scenario, session: Session | None) -> None:
    """With device groups, Locust spawns one class per group (named for it, by count or share) in place
    of ``Device``; a master gets them too, without a session: it dispatches users by class name."""
    if not scenario.devices:
        return
    classes = user_classes(PingUser, scenario, "Device", **({"session": session} if session else {}))
    environment.user_classes[:] = classes
    environment.available_user_classes = {c.__name__: c for c in classes}


def _interrupt_in_main_greenlet() -> None:
    """Deliver Ctrl-C to Locust's main greenlet only.

    Plain Locust stops on the KeyboardInterrupt its main greenlet catches, but Python raises it
    in whatever greenlet runs when SIGINT lands: once our stats ticker, which died with a
    traceback on stderr (CI, test_plain_locust_stopped_by_ctrl_c_is_marked_interrupted). A gevent
    signal handler runs in a greenlet of its own and throws the interrupt where Locust waits for it.
    """
    main = greenlet.getcurrent()  # Locust calls init listeners from its main greenlet
    gevent.signal_handler(signal.SIGINT, lambda: main.throw(KeyboardInterrupt))


def _check_limits(scenario: Any, environment: Any, runner: Any) -> Any:
    """As ``loadgen run`` does: raise the open-file limit; a run that cannot fit exits 2 before it starts
    (a worker only warns: how many workers share the users is the master's business)."""
    from loadgen.locust.limits import prepare
    from loadgen.protocol.errors import ConfigError

    users = getattr(environment.parsed_options, "num_users", None)
    try:
        return prepare(scenario, sys.stdout, users=0 if isinstance(runner, MasterRunner) else users,
                       strict=not isinstance(runner, WorkerRunner))
    except ConfigError as exc:
        print(f"loadgen: {exc.args[0]}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _results_when_quitting(environment: Any, scenario: Scenario, stats: RunStats, stack: contextlib.ExitStack,
                           server: ServerProcess | None) -> None:
    """At quit: stop the users, then the built-in server, then what ``loadgen run`` does at its end."""
    clock = RunClock(environment)

    def finish(**_: Any) -> None:
        from loadgen.locust.drive import stop_users
        from loadgen.locust.run import finish_run
        from loadgen.results.files import new_run_dir

        options = environment.parsed_options
        # Locust quits while users run on Ctrl-C / SIGTERM, not at -t's or the stages' end; headless
        # without -t or stages has no planned end: Ctrl-C is how it ends.
        planned = bool(getattr(options, "run_time", None) or scenario.stages or not getattr(options, "headless", False))
        interrupted = clock.running() and planned
        run_scenario = scenario
        if getattr(options, "run_time", None) and not scenario.stages:  # -t is the run's planned time
            run_scenario = dataclasses.replace(scenario, run_time=float(options.run_time))
        if environment.runner is not None:
            stop_users(environment.runner)
        stack.close()  # the built-in server's summary is complete once it stopped
        outcome = finish_run(run_scenario, environment, stats, clock.seconds(), new_run_dir(scenario), sys.stdout,
                             interrupted=interrupted, server_summary=server.summary if server else "")
        if not outcome.passed:
            on_error = getattr(options, "exit_code_on_error", 1)
            environment.process_exit_code = 1 if outcome.verdicts else on_error

    environment.events.quitting.add_listener(finish)


def _live_stats(environment: Any, sink: StatsSink | None, role: Role, web_ui: Any, scenario: Scenario) -> RunStats:
    """Per-second stats (merged at a master) and the web UI's DTLS/TLS tab, as ``loadgen run`` has them."""
    stats = RunStats(scenario_kinds(scenario))
    LiveStats(environment, stats, sink, role).install()
    if web_ui is not None:
        from loadgen.locust.webui import install

        install(web_ui, stats)
    return stats
