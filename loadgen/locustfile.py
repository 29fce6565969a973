"""loadgen devices for plain ``locust``: the web UI, headless runs and workers as Locust users know them.

    locust -f "$(loadgen locustfile)" --scenario scenarios/quickstart.yaml
    LOADGEN_SCENARIO=scenarios/quickstart.yaml locust -f "$(loadgen locustfile)" --headless -u 100 -r 50 -t 30s

A scenario without targets gets the built-in server, started by each process that
runs users (so with plain Locust workers, give targets, or use ``loadgen run --processes``).
Ramp stages become the run's LoadTestShape.

When Locust quits, the local runner or the master writes ``results/<run>/`` (summary, series,
CSV, report, verdict) and prints loadgen's summary, as ``loadgen run`` does
(:func:`loadgen.locust.run.finish_run`), and sets the exit status the same way: 0 when the run
passed, 1 when a threshold failed or no attempt ended, ``--exit-code-on-error`` (default 1) when
the scenario has no thresholds and an attempt failed. Quitting while users still run (Ctrl-C) marks it interrupted.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from loadgen.locust import shape  # not the class itself: Locust instantiates every shape class it finds here
from loadgen.locust.numbering import WorkerPlace, number_workers
from loadgen.locust.plain import check_limits as _check_limits
from loadgen.locust.plain import interrupt_in_main_greenlet as _interrupt_in_main_greenlet
from loadgen.locust.plain import live_stats as _live_stats
from loadgen.locust.plain import results_when_quitting as _results_when_quitting
from loadgen.locust.users import PingUser, Session, user_classes
from loadgen.scenario import Scenario, load_scenario
from loadgen.stats.facts import scenario_kinds


class Device(PingUser):
    """A simulated device of the scenario given with --scenario / LOADGEN_SCENARIO."""

    abstract = False


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]  # locust is untyped
def _add_scenario_option(parser: Any) -> None:
    parser.add_argument("--scenario", default=os.environ.get("LOADGEN_SCENARIO", ""),
                        help="loadgen scenario YAML (or set LOADGEN_SCENARIO)", include_in_web_ui=False)


@events.init.add_listener  # type: ignore[untyped-decorator]  # locust is untyped
def _bind_scenario(environment: Any, runner: Any = None, web_ui: Any = None, **_: Any) -> None:
    _bind(environment, runner, web_ui)
    # Locust arms -t's timer right after this event, before gevent's loop has run: libev would count
    # it from the loop's cached "now", taken when `import locust` made the hub, so the start-up
    # (imports, the scenario, the built-in server) came out of -t ("-t 3s" ran 2.2 s).
    gevent.get_hub().loop.update_now()


def _bind(environment: Any, runner: Any, web_ui: Any) -> None:
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
        stats = _live_stats(environment, None, "master", web_ui, scenario_kinds(scenario))
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
        _live_stats(environment, session.stats_sink, "worker", web_ui, scenario_kinds(scenario))
        environment.events.quitting.add_listener(lambda **_: stack.close())
        return
    stats = _live_stats(environment, session.stats_sink, "local", web_ui, scenario_kinds(scenario))
    _results_when_quitting(environment, scenario, stats, stack, server)


def _fleet_classes(environment: Any, scenario: Scenario, session: Session | None) -> None:
    """With device groups, Locust spawns one class per group (named for it, by count or share) in place
    of ``Device``; a master gets them too, without a session: it dispatches users by class name."""
    if not scenario.devices:
        return
    classes = user_classes(PingUser, scenario, "Device", **({"session": session} if session else {}))
    environment.user_classes[:] = classes
    environment.available_user_classes = {c.__name__: c for c in classes}
