"""Run a scenario through Locust's real runners: headless, web UI, or master + workers.

This module wires the pieces together; it owns no protocol logic and no statistics
beyond merging and printing what the sinks collected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from gevent.event import Event
from locust.env import Environment
from locust.runners import Runner

from loadgen.capacity import Workload, analyze
from loadgen.exporters.live import Exporters
from loadgen.locust.drive import drive_headless, drive_web, stop_and_quit, stop_on_signals
from loadgen.locust.environment import LOCAL_RUN, RunOptions, endpoints, make_environment
from loadgen.locust.health import STARVED_LAG, Health, WorkerWatch, freeze_heap, freeze_while_spawning, tune_locust
from loadgen.locust.limits import prepare
from loadgen.locust.users import Endpoint
from loadgen.locust.workers import free_tcp_port, run_worker, wait_for_workers, worker_processes
from loadgen.protocol.errors import RunNotStarted
from loadgen.results.files import new_run_dir, write_results
from loadgen.results.summary import RunOutcome, print_summary
from loadgen.scenario import Scenario, Target
from loadgen.servers.launcher import ServerProcess
from loadgen.stats.facts import scenario_kinds
from loadgen.stats.live import LiveStats
from loadgen.stats.run import RunStats
from loadgen.stats.thresholds import evaluate


def run(scenario: Scenario, options: RunOptions = LOCAL_RUN, out: TextIO = sys.stdout) -> RunOutcome:
    """Run ``scenario`` as ``options`` say; returns when the run is over (or the worker is told to quit)."""
    scenario = prepare(scenario, out, processes=options.processes or options.workers or 1, strict=not options.worker,
                       users=0 if options.master and not options.processes else None)  # exit 2 if it cannot fit
    if options.worker:
        return run_worker(scenario, options, out)
    stop = stop_on_signals()
    run_dir = new_run_dir(scenario)
    with endpoints(scenario, options) as (eps, server), contextlib.ExitStack() as children:
        env, session = make_environment(scenario, eps, options)
        runner, watch = _create_runner(env, scenario, options, (eps, server), run_dir, children, out)
        stats = RunStats(scenario_kinds(scenario))
        LiveStats(env, stats, None if options.distributed else session.stats_sink,
                  "master" if options.distributed else "local").install()
        children.enter_context(_exporters(scenario, stats, runner, out))
        where = ", ".join(f"{e.target.name}={e.address[0]}:{e.address[1]}" for e in eps)
        print(f"loadgen: running {scenario.name!r} against {where}", file=out, flush=True)
        if watch is not None:
            watch.start()
        try:
            if options.web:
                interrupted, elapsed = drive_web(env, scenario, options, stop, out, stats, where)
            else:
                interrupted, elapsed = _drive_headless(runner, scenario, options, stop, out, stats, run_dir)
        finally:
            stop_and_quit(runner)
            if watch is not None:
                watch.stop()
        seconds = elapsed()  # after the stop, as the users' counts are
    return finish_run(scenario, env, stats, seconds, run_dir, out, interrupted=interrupted,
                      server_summary=server.summary if server else "", watch=watch, processes=options.processes,
                      workload=options.workload, period=options.period,
                      targets=tuple(dataclasses.replace(e.target, host=e.address[0], port=e.address[1]) for e in eps))


def _create_runner(env: Environment, scenario: Scenario, options: RunOptions,
                   ends: tuple[list[Endpoint], ServerProcess | None], run_dir: Path,
                   children: contextlib.ExitStack, out: TextIO) -> tuple[Runner, WorkerWatch | None]:
    """A local runner, or a master: of worker processes started here (reaped by ``children``) or of
    workers started by hand (told how when the built-in server is the master's), with the watch on
    its workers (not started yet)."""
    if not options.distributed:
        runner: Runner = env.create_local_runner()
        env.events.spawning_complete.add_listener(freeze_heap)
        freeze_while_spawning(env)
        return runner, None
    tune_locust()  # the master's heartbeat patience
    eps, server = ends
    runner = env.create_master_runner("127.0.0.1" if options.processes else "*", options.master_port
                                      if not options.processes else free_tcp_port())
    watch = WorkerWatch(runner)  # listening before any worker can say its index
    if options.processes:
        procs = children.enter_context(worker_processes(scenario, options, runner, eps, run_dir))
        watch.processes = dict(enumerate(procs))  # their exit status tells a dead worker from a starved one
    elif server is not None:
        host, port = eps[0].address
        print(f"loadgen: built-in server at {host}:{port}; start workers with: loadgen run "
              f"{scenario.source} --worker --master-host HOST --builtin-address {host}:{port}", file=out)
    return runner, watch


def _drive_headless(runner: Runner, scenario: Scenario, options: RunOptions, stop: Event, out: TextIO,
                    stats: RunStats, run_dir: Path) -> tuple[bool, Callable[[], float]]:
    """A master first waits for its workers; then to the planned end. Whether a signal stopped the run
    before it, and the seconds since the users started (read after they stopped)."""
    if options.distributed:
        try:
            wait_for_workers(runner, options.processes or options.expect_workers, stop)
        except RunNotStarted:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # nothing ran: no empty results directory left behind
            raise
    started = time.monotonic()
    interrupted = drive_headless(runner, scenario, stop, started, out, stats)
    return interrupted, lambda: time.monotonic() - started


@contextlib.contextmanager
def _exporters(scenario: Scenario, stats: RunStats, runner: Runner, out: TextIO) -> Iterator[Exporters]:
    """Prometheus / StatsD for the run; stopped after the runner, so the last counts go out too."""
    exporters = Exporters(scenario, stats, lambda: runner.user_count).start(out)
    try:
        yield exporters
    finally:
        exporters.stop()


def finish_run(scenario: Scenario, env: Environment, stats: RunStats, elapsed: float, run_dir: Path, out: TextIO, *,
               interrupted: bool = False, server_summary: str = "", watch: WorkerWatch | None = None,
               processes: int = 0, workload: Workload = "steady", period: float = 1.0,
               targets: tuple[Target, ...] = ()) -> RunOutcome:
    """After the users stopped: thresholds, health, verdict; the summary printed and ``results/<run>/``
    written. ``loadgen run`` (every mode) and plain ``locust -f`` (see :mod:`loadgen.locustfile`) end here.
    ``targets``: the targets as run (the built-in server's real address; empty: the scenario's)."""
    verdicts = evaluate(scenario.thresholds, stats, elapsed)
    health = run_health(env, stats, watch, run_dir if processes else None, processes)
    analysis = analyze(stats, scenario, elapsed, sum(not v.passed for v in verdicts), len(verdicts),
                       workload, period, interrupted=interrupted, counts_lost=bool(health.accounting()))
    if note := health.note():
        analysis = dataclasses.replace(analysis, verdict=f"{analysis.verdict} {note}")
    outcome = RunOutcome(scenario, env, stats, elapsed, verdicts=verdicts, server_summary=server_summary,
                         analysis=analysis, health=health, interrupted=interrupted, targets=targets)
    print_summary(outcome, out)
    outcome.results_dir = write_results(outcome, run_dir)
    print(f"loadgen: results written to {outcome.results_dir}", file=out)
    return outcome


def run_health(env: Environment, stats: RunStats, watch: WorkerWatch | None, run_dir: Path | None,
               processes: int) -> Health:
    """Loop lag, workers marked missing, worker files, Locust's counts next to loadgen's (see Health)."""
    rows = stats.rows()
    counts: dict[str, dict[str, int]] = {}
    for kind, cell in stats.kinds.items():
        # Locust's request name is "<target> <kind>", or "<target> resumed <kind>" for a resumed handshake
        # (users.LocustSink), and a request kind may have spaces ("GET /time").
        names = (kind, f"resumed {kind}")
        locust = sum(e.num_requests for e in env.stats.entries.values() if e.name.partition(" ")[2] in names)
        counts[kind] = {"locust": locust, "loadgen": cell.completed + cell.failed}
    missing_files = [i for i in range(processes) if run_dir is not None and not (run_dir / f"worker-{i}.json").exists()]
    return Health(
        lag_max=stats.lag_max(), stop_lag_max=stats.stop_lag_max(),
        lag_seconds=sum(1 for r in rows if r["lag_max"] > STARVED_LAG),
        workers=processes or (len(watch.runner.clients) if watch is not None else 0),
        worker_events=list(watch.events) if watch is not None else [], worker_files_missing=missing_files,
        counts=counts, clients_peak=max((r["users"] for r in rows), default=0),
        associations_peak=max((r["active"] for r in rows), default=0),
    )
