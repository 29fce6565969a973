"""Run a scenario through Locust's real runners: headless, web UI, or master + workers.

This module wires the pieces together; it owns no protocol logic and no statistics
beyond merging and printing what the sinks collected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import gevent
from gevent.event import Event
from locust import argument_parser
from locust.env import Environment
from locust.runners import STATE_STOPPED, MasterRunner, Runner

from .builtin_server import ServerProcess, builtin_server
from .capacity import KNEE_FOUND, Analysis, Workload, analyze
from .capacity.workload import churn_user_class
from .distributed import Health, WorkerWatch, freeze_heap, freeze_while_spawning, tune_locust
from .errors import RunNotStarted
from .limits import prepare
from .outputs import Exporters, targets_summary, write_files
from .scenario import Scenario, Target
from .shape import StagesShape
from .stats.live import LiveStats
from .stats.run import RunStats
from .stats.thresholds import Verdict, evaluate
from .users import Endpoint, Session, user_class

log = logging.getLogger("loadgen")

BUILTIN_TARGET = Target(name="builtin", host="127.0.0.1", port=0, protocol="dtls")
WORKERS_READY_TIMEOUT = 60.0
WORKER_EXIT_TIMEOUT = 45.0  # after the master quits, for its worker processes to exit by themselves


@dataclass(frozen=True)
class RunOptions:
    """How to run: headless or web; local, master (with or without child workers) or worker."""

    web: bool = False
    web_host: str = "127.0.0.1"
    web_port: int = 8089
    processes: int = 0  # > 0: start this many worker processes and be their master
    master: bool = False
    worker: bool = False
    master_host: str = "127.0.0.1"
    master_port: int = 5557
    expect_workers: int = 1
    worker_index: int | None = None  # device numbering: n = index + k * workers
    workers: int | None = None
    builtin_address: tuple[str, int] | None = None  # the master's built-in server, for workers
    run_dir: Path | None = None  # workers write worker-<index>.json here
    workload: Workload = "steady"  # steady: connect and ping; churn: a handshake per client per period
    period: float = 1.0  # churn: seconds between one client's handshakes

    @property
    def distributed(self) -> bool:
        return self.master or self.processes > 0


@dataclass
class RunOutcome:
    """What a finished run leaves behind."""

    scenario: Scenario
    environment: Environment
    stats: RunStats  # exact totals per kind and target, and the per-second series
    elapsed: float
    verdicts: list[Verdict] = field(default_factory=list)
    results_dir: Path | None = None
    server_summary: str = ""
    analysis: Analysis | None = None  # steps, knee, verdict sentence (not on workers)
    health: Health | None = None  # loop lag, workers marked missing, Locust vs loadgen counts (not on workers)
    interrupted: bool = False  # stopped (Ctrl-C, SIGTERM) before its planned end

    @property
    def outcome(self) -> str:
        """``passed``, ``failed`` or ``interrupted``: what the verdict's first word says."""
        return "interrupted" if self.interrupted else "passed" if self.passed else "failed"

    @property
    def failed_attempts(self) -> int:
        """Handshakes and pings that failed (attempts still in flight at the stop are neither)."""
        return sum(t.failed for t in self.stats.kinds.values())

    @property
    def passed(self) -> bool:
        """A stepped run is a capacity search, judged by its knee as its verdict is (failures past
        the knee are what finding it takes). Otherwise thresholds decide when the scenario has them;
        without, any failed attempt fails the run (Locust's convention: ``locust`` exits 1 on any failure)."""
        if self.analysis is not None and self.analysis.knee is not None:
            return self.analysis.knee.limited_by in KNEE_FOUND
        if self.verdicts:
            return all(v.passed for v in self.verdicts)
        return self.failed_attempts == 0


class _HighSpawnRateFilter(logging.Filter):
    """Locust warns about spawn rates above 100/s (meant for heavy HTTP users); ours are cheap."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "spawn rate is very high" not in record.getMessage()


@contextlib.contextmanager
def endpoints(scenario: Scenario, options: RunOptions) -> Iterator[tuple[list[Endpoint], ServerProcess | None]]:
    """The scenario's targets, or the built-in server (started here for the run, or the master's)."""
    if scenario.targets:
        yield [Endpoint(t, (t.host, t.port)) for t in scenario.targets], None
        return
    if options.builtin_address is not None:
        yield [Endpoint(BUILTIN_TARGET, options.builtin_address)], None
        return
    if options.worker:
        raise ValueError("a worker for a scenario without targets needs --builtin-address (the master prints it)")
    if scenario.source is None:
        raise ValueError("a scenario without targets needs its file (the built-in server reads its keys)")
    server = builtin_server(scenario)
    with server as address:
        yield [Endpoint(BUILTIN_TARGET, address)], server


def make_environment(scenario: Scenario, eps: list[Endpoint], options: RunOptions = RunOptions()
                     ) -> tuple[Environment, Session]:
    """A Locust Environment whose one user class is a device bound to a fresh Session."""
    runners_log = logging.getLogger("locust.runners")
    if not any(isinstance(f, _HighSpawnRateFilter) for f in runners_log.filters):
        runners_log.addFilter(_HighSpawnRateFilter())
    env = Environment(shape_class=StagesShape(scenario.stages) if scenario.stages else None)
    # Defaults the web UI shows in its start form.
    parser = argument_parser.get_empty_argument_parser()
    argument_parser.setup_parser_arguments(parser)
    env.parsed_options = parser.parse_args(
        ["--users", str(scenario.clients.count), "--spawn-rate", str(scenario.clients.spawn_rate)]
    )
    session = Session(scenario, env, eps, index_offset=options.worker_index,
                      index_stride=options.workers or 1)
    env.user_classes = [churn_user_class(session, options.period) if options.workload == "churn"
                        else user_class(session)]
    return env, session


def run(scenario: Scenario, options: RunOptions = RunOptions(), out: TextIO = sys.stdout) -> RunOutcome:
    """Run ``scenario`` as ``options`` say; returns when the run is over (or the worker is told to quit)."""
    scenario = prepare(scenario, out, processes=options.processes or options.workers or 1, strict=not options.worker,
                       users=0 if options.master and not options.processes else None)  # exit 2 if it cannot fit
    if options.worker:
        return _run_worker(scenario, options, out)
    stop = _stop_on_signals()
    run_dir = new_run_dir(scenario)
    with endpoints(scenario, options) as (eps, server), contextlib.ExitStack() as children:
        env, session = make_environment(scenario, eps, options)
        runner: Runner
        if options.distributed:
            tune_locust()  # the master's heartbeat patience
            runner = env.create_master_runner("127.0.0.1" if options.processes else "*", options.master_port
                                              if not options.processes else _free_tcp_port())
            if options.processes:
                children.enter_context(_worker_processes(scenario, options, runner, eps, run_dir))
            elif server is not None:
                host, port = eps[0].address
                print(f"loadgen: built-in server at {host}:{port}; start workers with: loadgen run "
                      f"{scenario.source} --worker --master-host HOST --builtin-address {host}:{port}", file=out)
        else:
            runner = env.create_local_runner()
            env.events.spawning_complete.add_listener(freeze_heap)
            freeze_while_spawning(env)
        stats = RunStats()
        LiveStats(env, stats, None if options.distributed else session.stats_sink,
                  "master" if options.distributed else "local").install()
        children.enter_context(_exporters(scenario, stats, runner, out))
        where = ", ".join(f"{e.target.name}={e.address[0]}:{e.address[1]}" for e in eps)
        print(f"loadgen: running {scenario.name!r} against {where}", file=out, flush=True)
        started = time.monotonic()
        watch = WorkerWatch(runner).start() if options.distributed else None
        try:
            if options.web:
                interrupted, active = _drive_web(env, scenario, options, stop, out, stats, where)
            else:
                if options.distributed:
                    try:
                        _wait_for_workers(runner, options.processes or options.expect_workers, stop)
                    except RunNotStarted:
                        with contextlib.suppress(OSError):
                            run_dir.rmdir()  # nothing ran: no empty results directory left behind
                        raise
                started = time.monotonic()
                interrupted = _drive_headless(runner, scenario, stop, started, out, stats)
        finally:
            _stop(runner)
            if watch is not None:
                watch.stop()
        # Web mode: rates over the time users ran (Start to Stop), not the idle time around it.
        elapsed = active() if options.web else time.monotonic() - started
    return finish_run(scenario, env, stats, elapsed, run_dir, out, interrupted=interrupted,
                      server_summary=server.summary if server else "", watch=watch, processes=options.processes,
                      workload=options.workload, period=options.period)


def finish_run(scenario: Scenario, env: Environment, stats: RunStats, elapsed: float, run_dir: Path, out: TextIO, *,
               interrupted: bool = False, server_summary: str = "", watch: WorkerWatch | None = None,
               processes: int = 0, workload: Workload = "steady", period: float = 1.0) -> RunOutcome:
    """After the users stopped: thresholds, health, verdict; the summary printed and ``results/<run>/``
    written. ``loadgen run`` (every mode) and plain ``locust -f`` (see :mod:`loadgen.locustfile`) end here."""
    verdicts = evaluate(scenario.thresholds, stats, elapsed)
    health = run_health(env, stats, watch, run_dir if processes else None, processes)
    analysis = analyze(stats, scenario, elapsed, sum(not v.passed for v in verdicts), len(verdicts),
                       workload, period, interrupted=interrupted)
    if note := health.note():
        analysis = dataclasses.replace(analysis, verdict=f"{analysis.verdict} {note}")
    outcome = RunOutcome(scenario, env, stats, elapsed, verdicts=verdicts, server_summary=server_summary,
                         analysis=analysis, health=health, interrupted=interrupted)
    print_summary(outcome, out)
    outcome.results_dir = write_results(outcome, run_dir)
    print(f"loadgen: results written to {outcome.results_dir}", file=out)
    return outcome


def run_health(env: Environment, stats: RunStats, watch: WorkerWatch | None, run_dir: Path | None,
               processes: int) -> Health:
    """Loop lag, workers marked missing, worker files, Locust's counts next to loadgen's (see Health)."""
    from .distributed import STARVED_LAG

    rows = stats.rows()
    counts: dict[str, dict[str, int]] = {}
    for kind, cell in stats.kinds.items():
        locust = sum(e.num_requests for e in env.stats.entries.values() if e.name.rsplit(" ", 1)[-1] == kind)
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


def _stop_on_signals() -> Event:
    """An event set by SIGINT / SIGTERM, so a run stops cleanly and still writes its results."""
    stop = Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stop.set)
    return stop


def _drive_headless(runner: Runner, scenario: Scenario, stop: Event, started: float, out: TextIO,
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
        return stop.is_set()
    finally:
        ticker.kill()


def _drive_web(env: Environment, scenario: Scenario, options: RunOptions, stop: Event, out: TextIO,
               stats: RunStats, where: str) -> tuple[bool, Callable[[], float]]:
    """Serve the web UI until Ctrl-C; the scenario's run time (or stages) ends each Start.

    Returns whether Ctrl-C came while users ran (interrupted) and the seconds users ran."""
    # Locust's web UI re-parses sys.argv with Locust's own parser on every page render;
    # our arguments (already parsed) would make it exit, so leave it only the program name.
    sys.argv[1:] = []
    web_ui = env.create_web_ui(options.web_host, options.web_port)
    from .webui import install as install_loadgen_page
    from .webui import web_run_control

    install_loadgen_page(web_ui, stats)  # the DTLS/TLS tab and /loadgen
    control = web_run_control(env, web_ui, scenario, where)
    gevent.sleep(0.1)
    print(f"loadgen: web UI at http://{options.web_host}:{options.web_port} (Ctrl-C to end)", file=out, flush=True)
    try:
        stop.wait()
    finally:
        web_ui.stop()
    return control.running(), control.seconds


def _wait_for_workers(runner: Runner, expected: int, stop: Event) -> None:
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


@contextlib.contextmanager
def _exporters(scenario: Scenario, stats: RunStats, runner: Runner, out: TextIO) -> Iterator[Exporters]:
    """Prometheus / StatsD for the run; stopped after the runner, so the last counts go out too."""
    exporters = Exporters(scenario, stats, lambda: runner.user_count).start(out)
    try:
        yield exporters
    finally:
        exporters.stop()


def _stop(runner: Runner) -> None:
    """Stop users (see :func:`stop_users`), then quit."""
    stop_users(runner)
    runner.quit()


def stop_users(runner: Runner) -> None:
    """Stop users; for a master, wait until every worker reported its final counts."""
    runner.stop()
    if isinstance(runner, MasterRunner):
        deadline = time.monotonic() + 30
        while runner.state != STATE_STOPPED and runner.clients and time.monotonic() < deadline:
            gevent.sleep(0.1)


def _progress(stats: RunStats, runner: Runner, started: float, out: TextIO, every: float = 2.0) -> None:
    """Every few seconds: clients, loadgen's exact totals, the last interval's rates and p99s (see Progress)."""
    from .stats.progress import Progress

    progress = Progress(stats, hold_newest=isinstance(runner, MasterRunner))
    while True:
        gevent.sleep(every)
        print(progress.line(time.monotonic() - started, runner.user_count), file=out, flush=True)


# -- workers ------------------------------------------------------------------


def _run_worker(scenario: Scenario, options: RunOptions, out: TextIO) -> RunOutcome:
    if options.run_dir is not None:
        # Started by a local master (--processes): Ctrl-C reaches the whole process group,
        # and the master stops its workers in order (final counts first); dying of
        # KeyboardInterrupt here would lose this worker's counts.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    tune_locust()
    with endpoints(scenario, options) as (eps, _):
        env, session = make_environment(scenario, eps, options)
        runner = env.create_worker_runner(options.master_host, options.master_port)
        totals = RunStats()
        LiveStats(env, totals, session.stats_sink, "worker").install()  # ships each second to the master

        def flush(**_: Any) -> None:
            # LiveStats sent this run's last second to the master already. Locust reports request
            # stats every 3 s; send the last ones now so the master's totals are complete when this
            # worker says it stopped.
            runner._send_stats()  # noqa: SLF001 - what Locust itself does on quit

        env.events.test_stop.add_listener(flush)
        env.events.spawning_complete.add_listener(freeze_heap)
        freeze_while_spawning(env)
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
def _worker_processes(scenario: Scenario, options: RunOptions, runner: Runner, eps: list[Endpoint],
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
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    procs = [subprocess.Popen([*base, "--worker-index", str(i)], env=env) for i in range(options.processes)]
    try:
        yield procs
    finally:
        # A worker that held ~17,000 users needs a while to stop them and write worker-<i>.json; then
        # SIGTERM (it still writes its file), and SIGKILL only for one that ignores that too.
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


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- summary and results --------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def print_summary(outcome: RunOutcome, out: TextIO) -> None:
    """loadgen's exact totals and percentiles first, Locust's counts of the same attempts, the thresholds.

    Locust's latency columns are left out: it keeps response times rounded (to whole ms below
    100 ms, 2 significant digits above), so its median read 0.0 ms against an exact 0.43 ms and
    a distributed p99 came out above the max. Its counts are exact and are the cross-check."""
    print("\nloadgen's exact figures (every attempt, HDR histograms):", file=out)
    for kind, t in outcome.stats.kinds.items():
        codes = ", ".join(f"{code} {n}" for code, n in t.failures.most_common()) or "none"
        print(f"{kind + 's':<11} attempted {t.attempted}, completed {t.completed}, failed {t.failed}, "
              f"in flight at stop {t.in_flight}; p50 {_ms(t.percentile(50))} ms, p99 {_ms(t.percentile(99))} ms;"
              f" errors: {codes}", file=out)
    stats = outcome.environment.stats
    print("Locust's request counts (the same attempts; for latencies use loadgen's figures above):", file=out)
    print(f"{'name':<28}{'type':<6}{'count':>9}{'fail':>7}{'per s':>9}", file=out)
    for e in sorted(stats.entries.values(), key=lambda e: (e.name, e.method)):
        print(f"{e.name:<28}{e.method:<6}{e.num_requests:>9}{e.num_failures:>7}"
              f"{e.num_requests / max(outcome.elapsed, 1e-9):>9.1f}", file=out)
    if outcome.server_summary:
        print(outcome.server_summary, file=out)
    for v in outcome.verdicts:
        print(f"threshold {v.describe()}", file=out)
    if outcome.interrupted:
        print("loadgen: INTERRUPTED: stopped before the planned end; the figures cover the part that ran", file=out)
    if outcome.verdicts:
        failed = sum(not v.passed for v in outcome.verdicts)
        result = f"FAILED: {failed} of {len(outcome.verdicts)} thresholds not met" if failed else \
            "passed: every threshold met"
        print(f"loadgen: {result}", file=out)
    elif outcome.failed_attempts:
        print(f"loadgen: FAILED: {outcome.failed_attempts} attempts failed and the scenario sets no thresholds "
              "(then any failure fails the run; set thresholds.error_ratio to allow some)", file=out)
    if (h := outcome.health) is not None:
        same = "equal" if not h.counts_differ else "DIFFER"
        counts = ", ".join(f"{kind}s {c['locust']}/{c['loadgen']}" for kind, c in h.counts.items())
        missed = ", ".join(map(str, h.missed)) or "none"
        workers = f"workers {h.workers}, marked missing: {missed}; " if h.workers else ""
        print(f"loadgen: health: {workers}event-loop lag max {h.lag_max * 1000:.0f} ms "
              f"({h.stop_lag_max * 1000:.0f} ms while stopping); "
              f"Locust/loadgen counts {same} ({counts})", file=out)
    if outcome.analysis is not None:
        print(f"loadgen: verdict: {outcome.analysis.verdict}", file=out)


def summary_data(outcome: RunOutcome) -> dict[str, Any]:
    """The JSON summary: totals, percentiles (ms), error codes per kind, thresholds; ``interrupted``
    and ``outcome`` (passed / failed / interrupted) as the verdict's first word says."""
    kinds = {}
    for kind, t in outcome.stats.kinds.items():
        kinds[kind] = {
            "attempted": t.attempted, "completed": t.completed, "failed": t.failed,
            "in_flight": t.in_flight, "errors": dict(t.failures), "retransmits": t.retransmits,
            "resumed": t.resumed, "sent_bytes": t.sent_bytes, "received_bytes": t.received_bytes,
            "rate_per_s": t.completed / max(outcome.elapsed, 1e-9),
            "latency_ms": {f"p{p:g}": (None if (v := t.percentile(p)) is None else v * 1000)
                           for p in (50, 90, 95, 99, 99.9, 100)},
        }
    # Locust's counts only: its latencies are rounded (see print_summary); the exact ones are above.
    locust_view = {
        f"{e.method} {e.name}": {"requests": e.num_requests, "failures": e.num_failures}
        for e in outcome.environment.stats.entries.values()
    }
    return {
        "scenario": outcome.scenario.name, "elapsed_s": outcome.elapsed,
        "interrupted": outcome.interrupted, "outcome": outcome.outcome, **kinds,
        "locust": locust_view,
        "thresholds": [{"name": v.name, "limit": v.limit, "actual": v.actual, "passed": v.passed}
                       for v in outcome.verdicts],
        "server": outcome.server_summary,
        # Issue 5: exact figures per target, the run's start, the steps / knee / verdict.
        "targets": targets_summary(outcome.stats, outcome.elapsed),
        "active_associations": outcome.stats.active(),
        "started_utc": _started_utc(outcome.stats),
        "analysis": outcome.analysis.to_json() if outcome.analysis is not None else None,
        "health": outcome.health.to_json() if outcome.health is not None else None,
    }


def _started_utc(stats: RunStats) -> str | None:
    first = min(stats.seconds.values(), key=lambda row: row.index, default=None)
    return datetime.fromtimestamp(first.wall, UTC).isoformat(timespec="seconds") if first else None


def new_run_dir(scenario: Scenario) -> Path:
    """A fresh ``results/<UTC time>-<scenario name>/`` directory."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = scenario.outputs.results_dir
    run_dir = base / f"{stamp}-{scenario.name}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = base / f"{stamp}-{scenario.name}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def write_results(outcome: RunOutcome, run_dir: Path) -> Path:
    """The scenario with its secrets removed, and what ``outputs`` asks for (see :mod:`loadgen.outputs`)."""
    scenario_json = json.loads(json.dumps(outcome.scenario.redacted(), default=str))
    (run_dir / "scenario.json").write_text(json.dumps(scenario_json, indent=2) + "\n")
    write_files(run_dir, outcome.scenario, outcome.stats, summary_data(outcome), scenario_json)
    return run_dir
