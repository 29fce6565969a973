"""Locust workers: a worker's run, the worker processes a local master starts, the master's wait for them."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import gevent
from gevent.event import Event
from locust.runners import MasterRunner, Runner, WorkerRunner

from loadgen.locust.environment import RunOptions, endpoints, make_environment
from loadgen.locust.health import WORKER_INDEX_MESSAGE, freeze_heap, freeze_while_spawning, tune_locust
from loadgen.locust.users import Endpoint
from loadgen.protocol.errors import RunNotStarted
from loadgen.results.summary import RunOutcome, summary_data
from loadgen.scenario import Scenario
from loadgen.stats.facts import scenario_kinds
from loadgen.stats.live import LiveStats
from loadgen.stats.run import RunStats

log = logging.getLogger("loadgen")

WORKERS_READY_TIMEOUT = 60.0
WORKER_EXIT_TIMEOUT = 45.0  # after the master quits, for its worker processes to exit by themselves


def run_worker(scenario: Scenario, options: RunOptions, out: TextIO) -> RunOutcome:
    """Be a worker of ``options``' master until it says quit (or SIGTERM); then write ``worker-<i>.json``."""
    if options.run_dir is not None:
        # Started by a local master (--processes): Ctrl-C reaches the whole process group,
        # and the master stops its workers in order (final counts first); dying of
        # KeyboardInterrupt here would lose this worker's counts.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    tune_locust()
    with endpoints(scenario, options) as (eps, _):
        env, session = make_environment(scenario, eps, options)
        # Every listener before the runner: its constructor waits for the master's ack while the runner's
        # own greenlet reads messages, and a master that has all its workers sends the spawn message right
        # after the ack, so test_start can fire inside create_worker_runner. A LiveStats installed after
        # it never started its ticker: the worker's users ran, Locust counted them, and loadgen's totals
        # (the master's and worker-<i>.json) had none of them.
        totals = RunStats(scenario_kinds(scenario))
        LiveStats(env, totals, session.stats_sink, "worker").install()  # ships each second to the master

        def flush(**_: Any) -> None:
            # LiveStats sent this run's last second to the master already. Locust reports request
            # stats every 3 s; send the last ones now so the master's totals are complete when this
            # worker says it stopped.
            if isinstance(env.runner, WorkerRunner):
                env.runner._send_stats()  # noqa: SLF001 - what Locust itself does on quit

        # Locust's EventHook.add_listener has no annotations (mypy --strict: an untyped call).
        env.events.test_stop.add_listener(flush)
        env.events.spawning_complete.add_listener(freeze_heap)
        freeze_while_spawning(env)
        runner = env.create_worker_runner(options.master_host, options.master_port)
        if options.worker_index is not None:  # the master names this worker as its files do
            runner.send_message(WORKER_INDEX_MESSAGE, {"index": options.worker_index})
        # SIGTERM (the master's last resort, or an operator): stop the users, send the last counts, write
        # worker-<i>.json, as a quit message from the master would.
        gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(runner.quit))
        started = time.monotonic()
        runner.greenlet.join()
    outcome = RunOutcome(scenario, env, totals, time.monotonic() - started)
    if options.run_dir is not None:
        index = options.worker_index if options.worker_index is not None else runner.worker_index
        data = summary_data(outcome)
        # Locust empties a worker's request stats after each report to the master: its
        # view here would read zero. The master's summary.json has Locust's totals.
        data.pop("locust", None)
        (options.run_dir / f"worker-{index}.json").write_text(json.dumps(data, indent=2) + "\n")
    return outcome


@contextlib.contextmanager
def worker_processes(scenario: Scenario, options: RunOptions, runner: Runner, eps: list[Endpoint],
                     run_dir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``options.processes`` workers of this scenario on this machine; reap them after."""
    assert isinstance(runner, MasterRunner)
    base = [sys.executable, "-m", "loadgen", "run", str(scenario.source), "--worker",
            "--master-host", "127.0.0.1", "--master-port", str(runner.master_bind_port),
            "--workers", str(options.processes), "--run-dir", str(run_dir)]
    if not scenario.targets:
        host, port = eps[0].address
        base += ["--builtin-address", f"{host}:{port}"]
    if options.workload != "steady":
        base += ["--workload", options.workload, "--period", repr(options.period)]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    procs = [subprocess.Popen([*base, "--worker-index", str(i)], env=env) for i in range(options.processes)]
    try:
        yield procs
    finally:
        _reap(procs)


def _reap(procs: list[subprocess.Popen[bytes]]) -> None:
    """A worker that held ~17,000 users needs a while to stop them and write worker-<i>.json; then
    SIGTERM (it still writes its file), and SIGKILL only for one that ignores that too."""
    deadline = time.monotonic() + WORKER_EXIT_TIMEOUT
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            log.warning("loadgen: worker process %d did not stop: killed (its worker file is lost)", proc.pid)
            proc.kill()
            proc.wait()


def wait_for_workers(runner: Runner, expected: int, stop: Event) -> None:
    """Until ``expected`` workers are ready; :class:`RunNotStarted` when stopped or out of time first."""
    assert isinstance(runner, MasterRunner)
    deadline = time.monotonic() + WORKERS_READY_TIMEOUT
    while len(runner.clients.ready) < expected:
        if stop.is_set():
            raise RunNotStarted(f"stopped while waiting for workers: {len(runner.clients.ready)} of {expected} "
                                "had connected; nothing was run")
        if time.monotonic() > deadline:
            raise RunNotStarted(f"only {len(runner.clients.ready)} of {expected} workers connected within "
                                f"{WORKERS_READY_TIMEOUT:.0f} s; nothing was run (start them with: loadgen run "
                                "SCENARIO --worker --master-host HOST, or lower --expect-workers)")
        gevent.sleep(0.1)


def free_tcp_port() -> int:
    """A TCP port free on loopback now (for the master of local worker processes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
