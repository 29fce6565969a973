"""What plain ``locust -f`` runs share, whether their users come from a scenario (:mod:`loadgen.locustfile`)
or from a locustfile of the Python API (:mod:`loadgen.locust.api`): Ctrl-C, the open-file limit, the
per-second stats, and ``results/<run>/`` with the summary, report and exit status written when Locust quits."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
from typing import Any

import gevent
import greenlet
from locust.runners import MasterRunner, WorkerRunner

from loadgen.locust.runclock import RunClock
from loadgen.scenario import Scenario
from loadgen.servers.launcher import ServerProcess
from loadgen.stats.live import LiveStats, Role
from loadgen.stats.run import RunStats
from loadgen.stats.sink import StatsSink


def interrupt_in_main_greenlet() -> None:
    """Deliver Ctrl-C to Locust's main greenlet only.

    Plain Locust stops on the KeyboardInterrupt its main greenlet catches, but Python raises it
    in whatever greenlet runs when SIGINT lands: once our stats ticker, which died with a
    traceback on stderr (CI, test_plain_locust_stopped_by_ctrl_c_is_marked_interrupted). A gevent
    signal handler runs in a greenlet of its own and throws the interrupt where Locust waits for it.
    """
    main = greenlet.getcurrent()  # Locust calls init listeners from its main greenlet
    gevent.signal_handler(signal.SIGINT, lambda: main.throw(KeyboardInterrupt))


def check_limits(scenario: Any, environment: Any, runner: Any) -> Any:
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


def results_when_quitting(environment: Any, scenario: Scenario, stats: RunStats, stack: contextlib.ExitStack,
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
            environment.process_exit_code = outcome.exit_status(getattr(options, "exit_code_on_error", 1))

    environment.events.quitting.add_listener(finish)


def live_stats(environment: Any, sink: StatsSink | None, role: Role, web_ui: Any,
               kinds: tuple[str, ...]) -> RunStats:
    """Per-second stats (merged at a master) and the web UI's DTLS/TLS tab, as ``loadgen run`` has them;
    ``kinds`` declared up front (:func:`~loadgen.stats.facts.scenario_kinds`; empty: as first seen)."""
    stats = RunStats(kinds)
    LiveStats(environment, stats, sink, role).install()
    if web_ui is not None:
        from loadgen.locust.webui import install

        install(web_ui, stats)
    return stats
