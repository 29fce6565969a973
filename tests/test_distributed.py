"""Issue 6 pieces of a distributed run, in memory: Locust's option cache, loopback source
addresses past one address's ephemeral ports, loop lag, and the verdict's STARVED / ACCOUNTING notes."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import gevent
import locust  # noqa: F401 - gevent's monkey-patching first, as in a run
import pytest
from locust import argument_parser, runners

from loadgen.locust.health import HEARTBEAT_LIVENESS, Health, LoopLag, WorkerEvent, tune_locust
from loadgen.locust.limits import PORT_SHARE, ephemeral_ports, spread_sources
from loadgen.scenario import load_scenario
from loadgen.stats.run import RunStats
from loadgen.stats.sink import SecondDelta


def scenario_file(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\nclients: {{count: {count}, spawn_rate: 100}}\nrun_time: 1s\n"
                    "psk: {key: '000102030405060708090a0b0c0d0e0f'}\n")
    return path


def test_tune_locust_computes_default_options_once_and_widens_heartbeat_patience() -> None:
    tune_locust()
    tune_locust()  # idempotent
    first = argument_parser.default_args_dict()
    started = time.process_time()
    for _ in range(56):  # what one spawn message costs a worker: one call per option sent
        assert argument_parser.default_args_dict() == first
    assert time.process_time() - started < 0.05
    assert runners.HEARTBEAT_LIVENESS == HEARTBEAT_LIVENESS


def test_builtin_server_runs_past_one_address_get_loopback_sources(tmp_path: Path) -> None:
    per_address = int(ephemeral_ports() * PORT_SHARE)
    small = load_scenario(scenario_file(tmp_path, 1000))
    assert spread_sources(small, builtin=True) is small
    big = load_scenario(scenario_file(tmp_path, 50000))
    spread = spread_sources(big, builtin=True)
    pool = spread.clients.source_addresses
    assert pool[0] == "127.0.0.1" and len(pool) * per_address >= 50000 and len(pool) == len(set(pool))
    assert spread_sources(big, builtin=False) is big  # the user's own targets: their addresses, their call
    given = dataclasses.replace(big, clients=dataclasses.replace(big.clients, source_addresses=("127.0.0.9",)))
    assert spread_sources(given, builtin=True) is given


def test_loop_lag_sees_a_blocked_loop() -> None:
    lag = LoopLag(interval=0.01).start()
    try:
        gevent.sleep(0.05)
        lag.take()
        until = time.monotonic() + 0.3
        while time.monotonic() < until:  # a callback that never yields (time.sleep is gevent's here)
            pass
        gevent.sleep(0.05)
        assert 0.2 < lag.take() < 2.0
        gevent.sleep(0.05)
        assert lag.take() < 0.2
    finally:
        lag.stop()


def test_lag_travels_with_the_second_and_the_stop_is_kept_apart() -> None:
    stats = RunStats()
    stats.apply(SecondDelta.from_wire(SecondDelta(0, 0.0, 1.0, 0.1, 10, {}, lag=0.7).to_wire()))
    stats.apply(SecondDelta(0, 0.0, 1.0, 0.1, 10, {}, lag=0.1))
    stats.apply(SecondDelta(1, 1.0, 1.0, 0.1, 10, {}, lag=0.0, stop_lag=3.0))
    assert stats.lag_max() == pytest.approx(0.7) and stats.stop_lag_max() == pytest.approx(3.0)
    again = RunStats.from_json(stats.to_json())
    assert again.lag_max() == pytest.approx(0.7) and again.stop_lag_max() == pytest.approx(3.0)


def test_health_note_names_starvation_and_accounting_problems() -> None:
    assert Health(lag_max=0.1, counts={"ping": {"locust": 5, "loadgen": 5}}).note() == ""
    note = Health(lag_max=1.7, lag_seconds=3, workers=3, worker_events=[WorkerEvent(40.0, 2, "missing")],
                  worker_files_missing=[1], counts={"ping": {"locust": 576297, "loadgen": 319231}}).note()
    assert note.startswith("STARVED:") and "worker(s) 2" in note and "1.7 s late" in note
    assert "ACCOUNTING:" in note and "worker(s) 1" in note and "Locust counted 576297 pings, loadgen 319231" in note
