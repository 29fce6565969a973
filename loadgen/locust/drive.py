"""Driving a run's users: headless to the planned end, or Locust's web UI until Ctrl-C; stopping them."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from typing import TextIO

import gevent
from gevent.event import Event
from locust.env import Environment
from locust.runners import (
    STATE_CLEANUP,
    STATE_RUNNING,
    STATE_SPAWNING,
    STATE_STOPPED,
    STATE_STOPPING,
    MasterRunner,
    Runner,
)

from loadgen.locust.environment import RunOptions
from loadgen.scenario import Scenario
from loadgen.stats.run import RunStats


def stop_on_signals() -> Event:
    """An event set by SIGINT / SIGTERM, so a run stops cleanly and still writes its results."""
    stop = Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stop.set)
    return stop


def drive_headless(runner: Runner, scenario: Scenario, stop: Event, started: float, out: TextIO,
                   stats: RunStats) -> bool:
    """Run to the planned end; True when a signal stopped the run before it."""
    ticker = gevent.spawn(_progress, stats, runner, started, out)
    try:
        if scenario.stages:
            runner.start_shape()
            shape = runner.shape_greenlet
            while shape is not None and not shape.ready() and not stop.is_set():
                stop.wait(0.2)
        else:
            runner.start(scenario.clients.count, scenario.clients.spawn_rate)
            stop.wait(max(0.0, scenario.run_time - (time.monotonic() - started)))
        return bool(stop.is_set())
    finally:
        ticker.kill()


def drive_web(env: Environment, scenario: Scenario, options: RunOptions, stop: Event, out: TextIO,
              stats: RunStats, where: str) -> tuple[bool, Callable[[], float]]:
    """Serve the web UI until Ctrl-C; the scenario's run time (or stages) ends each Start.

    Returns whether Ctrl-C came while users ran (interrupted) and the seconds users ran."""
    # Locust's web UI re-parses sys.argv with Locust's own parser on every page render;
    # our arguments (already parsed) would make it exit, so leave it only the program name.
    sys.argv[1:] = []
    web_ui = env.create_web_ui(options.web_host, options.web_port)
    from loadgen.locust.webui import install as install_loadgen_page
    from loadgen.locust.webui import web_run_control

    install_loadgen_page(web_ui, stats)  # the DTLS/TLS tab and /loadgen
    control = web_run_control(env, web_ui, scenario, where)
    gevent.sleep(0.1)
    print(f"loadgen: web UI at http://{options.web_host}:{options.web_port} (Ctrl-C to end)", file=out, flush=True)
    try:
        stop.wait()
    finally:
        web_ui.stop()  # Locust's WebUI has no annotations
    return control.running(), control.seconds


def stop_and_quit(runner: Runner) -> None:
    """Stop users (see :func:`stop_users`), then quit."""
    stop_users(runner)
    runner.quit()


#: A worker in these states has not reported its last counts yet.
_BUSY = (STATE_SPAWNING, STATE_RUNNING, STATE_STOPPING, STATE_CLEANUP)


def stop_users(runner: Runner) -> None:
    """Stop users; for a master, wait until every worker reported its final counts, or was marked
    missing (a dead worker never will: Locust's master then never reaches its stopped state, and
    waiting for that held a run whose worker died 30 s past its end)."""
    runner.stop()
    if isinstance(runner, MasterRunner):
        deadline = time.monotonic() + 30
        while (runner.state != STATE_STOPPED and any(c.state in _BUSY for c in runner.clients.all)
               and time.monotonic() < deadline):
            gevent.sleep(0.1)


def _progress(stats: RunStats, runner: Runner, started: float, out: TextIO, every: float = 2.0) -> None:
    """Every few seconds: clients, loadgen's exact totals, the last interval's rates and p99s (see Progress)."""
    from loadgen.stats.progress import Progress

    progress = Progress(stats, hold_newest=isinstance(runner, MasterRunner))
    while True:
        gevent.sleep(every)
        print(progress.line(time.monotonic() - started, runner.user_count), file=out, flush=True)
