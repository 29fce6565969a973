"""loadgen devices for plain ``locust``: the web UI, headless runs and workers as Locust users know them.

    locust -f "$(loadgen locustfile)" --scenario scenarios/quickstart.yaml
    LOADGEN_SCENARIO=scenarios/quickstart.yaml locust -f "$(loadgen locustfile)" --headless -u 100 -r 50 -t 30s

A scenario without targets gets the built-in server, started by each process that
runs users (so with plain Locust workers, give targets, or use ``loadgen run --processes``).
Ramp stages become the run's LoadTestShape.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from locust import events
from locust.runners import MasterRunner, WorkerRunner

from loadgen import shape  # not the class itself: Locust instantiates every shape class it finds here
from loadgen.scenario import load_scenario
from loadgen.stats.live import LiveStats, Role
from loadgen.stats.run import RunStats
from loadgen.stats.sink import StatsSink
from loadgen.users import DeviceUser, Session


class Device(DeviceUser):
    """A simulated device of the scenario given with --scenario / LOADGEN_SCENARIO."""

    abstract = False


@events.init_command_line_parser.add_listener
def _add_scenario_option(parser: Any) -> None:
    parser.add_argument("--scenario", default=os.environ.get("LOADGEN_SCENARIO", ""),
                        help="loadgen scenario YAML (or set LOADGEN_SCENARIO)", include_in_web_ui=False)


@events.init.add_listener
def _bind_scenario(environment: Any, runner: Any = None, web_ui: Any = None, **_: Any) -> None:
    path = getattr(environment.parsed_options, "scenario", "") or os.environ.get("LOADGEN_SCENARIO", "")
    if not path:
        raise SystemExit("loadgen: give --scenario FILE or set LOADGEN_SCENARIO")
    scenario = load_scenario(path)
    scenario = _check_limits(scenario, environment, runner)
    if scenario.stages and environment.shape_class is None:
        environment.shape_class = shape.StagesShape(scenario.stages)
        environment.shape_class.runner = runner
    if isinstance(runner, MasterRunner):
        _live_stats(environment, None, "master", web_ui)  # the master runs no users, it merges their seconds
        return
    from loadgen.runner import RunOptions, endpoints

    # The scenario's targets, or the built-in server for as long as Locust runs (as `loadgen run` does).
    stack = contextlib.ExitStack()
    eps, _server = stack.enter_context(endpoints(scenario, RunOptions()))
    environment.events.quitting.add_listener(lambda **_: stack.close())
    Device.session = Session(scenario, environment, eps)
    _live_stats(environment, Device.session.tally, "worker" if isinstance(runner, WorkerRunner) else "local", web_ui)


def _check_limits(scenario: Any, environment: Any, runner: Any) -> Any:
    """As ``loadgen run`` does: raise the open-file limit; a run that cannot fit exits 2 before it starts
    (a worker only warns: how many workers share the users is the master's business)."""
    from loadgen.errors import ConfigError
    from loadgen.limits import prepare

    users = getattr(environment.parsed_options, "num_users", None)
    try:
        return prepare(scenario, sys.stdout, users=0 if isinstance(runner, MasterRunner) else users,
                       strict=not isinstance(runner, WorkerRunner))
    except ConfigError as exc:
        print(f"loadgen: {exc.args[0]}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _live_stats(environment: Any, sink: StatsSink | None, role: Role, web_ui: Any) -> None:
    """Per-second stats (merged at a master) and the web UI's DTLS/TLS tab, as ``loadgen run`` has them."""
    stats = RunStats()
    LiveStats(environment, stats, sink, role).install()
    if web_ui is not None:
        from loadgen.webui import install

        install(web_ui, stats)
