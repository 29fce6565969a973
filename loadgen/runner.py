"""Run a scenario through Locust's real runner: headless, web UI, or distributed.

This module wires the pieces together; it owns no protocol logic and no stats
arithmetic beyond formatting what Locust and the Tally collected.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import gevent
from locust.env import Environment
from locust.stats import StatsEntry

from .builtin_server import ServerProcess, builtin_server
from .recorder import Tally
from .scenario import Scenario, Target
from .shape import StagesShape
from .users import Endpoint, Session, user_class

log = logging.getLogger("loadgen")

BUILTIN_TARGET = Target(name="builtin", host="127.0.0.1", port=0, protocol="dtls")


@dataclass
class RunOutcome:
    """What a finished run leaves behind."""

    scenario: Scenario
    environment: Environment
    tally: Tally
    elapsed: float
    results_dir: Path | None = None
    server_summary: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def endpoints(scenario: Scenario) -> Iterator[tuple[list[Endpoint], ServerProcess | None]]:
    """The scenario's targets, or the built-in server started for the run and stopped after."""
    if scenario.targets:
        yield [Endpoint(t, (t.host, t.port)) for t in scenario.targets], None
        return
    if scenario.source is None:
        raise ValueError("a scenario without targets needs its file (the built-in server reads its keys)")
    server = builtin_server(scenario.source)
    with server as address:
        yield [Endpoint(BUILTIN_TARGET, address)], server


class _HighSpawnRateFilter(logging.Filter):
    """Locust warns about spawn rates above 100/s (meant for heavy HTTP users); ours are cheap."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "spawn rate is very high" not in record.getMessage()


def make_environment(scenario: Scenario, eps: list[Endpoint]) -> tuple[Environment, Session]:
    runners_log = logging.getLogger("locust.runners")
    if not any(isinstance(f, _HighSpawnRateFilter) for f in runners_log.filters):
        runners_log.addFilter(_HighSpawnRateFilter())
    env = Environment(shape_class=StagesShape(scenario.stages) if scenario.stages else None)
    session = Session(scenario, env, eps)
    env.user_classes = [user_class(session)]
    return env, session


def run_headless(scenario: Scenario, *, out: TextIO = sys.stdout, progress_every: float = 2.0) -> RunOutcome:
    """Run ``scenario`` to its end in this process, printing progress and a summary."""
    with endpoints(scenario) as (eps, server):
        env, session = make_environment(scenario, eps)
        runner = env.create_local_runner()
        where = ", ".join(f"{e.target.name}={e.address[0]}:{e.address[1]}" for e in eps)
        print(f"loadgen: running {scenario.name!r} against {where} for {scenario.run_time:g} s", file=out)
        started = time.monotonic()
        ticker = gevent.spawn(_progress, runner, session.tally, started, progress_every, out)
        try:
            if scenario.stages:
                runner.start_shape()
                runner.shape_greenlet.join(timeout=scenario.run_time + 5)
            else:
                runner.start(scenario.clients.count, scenario.clients.spawn_rate)
                gevent.sleep(max(0.0, scenario.run_time - (time.monotonic() - started)))
        finally:
            ticker.kill()
            runner.quit()
        elapsed = time.monotonic() - started
    outcome = RunOutcome(scenario, env, session.tally, elapsed, server_summary=server.summary if server else "")
    print_summary(outcome, out)
    outcome.results_dir = write_results(outcome)
    print(f"loadgen: results written to {outcome.results_dir}", file=out)
    return outcome


def _progress(runner: Any, tally: Tally, started: float, every: float, out: TextIO) -> None:
    while True:
        gevent.sleep(every)
        h, p = tally.handshakes, tally.pings
        print(
            f"[{time.monotonic() - started:5.0f}s] clients {runner.user_count:>6}  "
            f"handshakes {h.completed:>7} ok {h.failed:>5} failed  "
            f"pings {p.completed:>8} ok {p.failed:>5} failed",
            file=out, flush=True,
        )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def print_summary(outcome: RunOutcome, out: TextIO) -> None:
    """A table per request name (Locust's view) and our exact totals with error codes."""
    stats = outcome.environment.stats
    print(f"\n{'name':<28}{'type':<6}{'count':>9}{'fail':>7}{'med ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
          f"{'max ms':>9}{'per s':>9}", file=out)
    entries: list[StatsEntry] = sorted(stats.entries.values(), key=lambda e: (e.name, e.method))
    for e in entries:
        print(f"{e.name:<28}{e.method:<6}{e.num_requests:>9}{e.num_failures:>7}"
              f"{e.get_response_time_percentile(0.5):>9.1f}{e.get_response_time_percentile(0.95):>9.1f}"
              f"{e.get_response_time_percentile(0.99):>9.1f}{e.max_response_time or 0:>9.1f}"
              f"{e.num_requests / max(outcome.elapsed, 1e-9):>9.1f}", file=out)
    for kind, t in outcome.tally.kinds.items():
        codes = ", ".join(f"{code} {n}" for code, n in t.failures.most_common()) or "none"
        print(f"{kind + 's':<11} attempted {t.attempted}, completed {t.completed}, failed {t.failed}, "
              f"in flight at stop {t.in_flight}; p50 {_ms(t.percentile(50))} ms, p99 {_ms(t.percentile(99))} ms;"
              f" errors: {codes}", file=out)
    if outcome.server_summary:
        print(outcome.server_summary, file=out)


def summary_data(outcome: RunOutcome) -> dict[str, Any]:
    """The JSON summary: totals, percentiles (ms) and error codes per kind."""
    kinds = {}
    for kind, t in outcome.tally.kinds.items():
        kinds[kind] = {
            "attempted": t.attempted, "completed": t.completed, "failed": t.failed,
            "in_flight": t.in_flight, "errors": dict(t.failures), "retransmits": t.retransmits,
            "sent_bytes": t.sent_bytes, "received_bytes": t.received_bytes,
            "rate_per_s": t.completed / max(outcome.elapsed, 1e-9),
            "latency_ms": {f"p{p:g}": (None if (v := t.percentile(p)) is None else v * 1000)
                           for p in (50, 90, 95, 99, 99.9, 100)},
        }
    return {"scenario": outcome.scenario.name, "elapsed_s": outcome.elapsed, **kinds,
            "server": outcome.server_summary}


def write_results(outcome: RunOutcome) -> Path:
    """``results/<run-id>/``: summary.json and the scenario with secrets removed."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = outcome.scenario.outputs.results_dir
    run_dir = base / f"{stamp}-{outcome.scenario.name}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = base / f"{stamp}-{outcome.scenario.name}-{suffix}"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps(summary_data(outcome), indent=2) + "\n")
    (run_dir / "scenario.json").write_text(json.dumps(outcome.scenario.redacted(), indent=2, default=str) + "\n")
    return run_dir
