"""A real ``loadgen run`` of request steps against the built-in reference server (it echoes each request)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from test_runs import Child, finished_run, load, locust_row, run_dir, spawn, write_scenario

__all__ = ["spawn"]  # the fixture, from test_runs

pytestmark = pytest.mark.timeout(120)

CLIENTS = 10

STEPS = f"""\
    clients: {{count: {CLIENTS}, spawn_rate: {CLIENTS}}}
    run_time: 6s
    ping: {{jitter: 0}}
    requests:
      - name: register
        once: true
        payload: {{text: "REGISTER {{name}}"}}
        expect: echo
      - name: telemetry
        interval: 300ms
        in_flight: 2
        timeout: 3s
        payload:
          hex: "5400000a0a"       # 'T', the 2-byte sequence number, 0x0a 0x0a
          seq_offset: 1
        expect:
          regex: "^T...\\n$"      # the third '.' is a 0x0a: DOTALL
          seq_offset: 1           # and the reply echoes the request's number
      - name: config
        interval: 1s
        timeout: 3s
        payload: {{text: "CONFIG {{seq}}"}}
        expect: echo
    """


def test_a_run_of_request_steps_counts_each_step_in_its_own_row(tmp_path: Path, spawn: Callable[..., Child]) -> None:
    scenario = write_scenario(tmp_path, "steps", STEPS)
    run = finished_run(spawn, "run", scenario, timeout=60)
    assert run.proc.returncode == 0, run.describe()
    summary = load(run_dir(tmp_path, "steps") / "summary.json")

    handshakes = summary["handshake"]["completed"]
    assert handshakes >= CLIENTS and summary["handshake"]["failed"] == 0
    requests = summary["requests"]  # the request kinds, each its own row
    assert list(requests) == ["register", "telemetry", "config"]  # in the scenario's order
    for kind in ("register", "telemetry", "config"):
        totals = requests[kind]
        assert totals["failed"] == 0, (kind, totals["errors"])
        assert totals["completed"] + totals["failed"] + totals["in_flight"] == totals["attempted"], (kind, totals)
        row = locust_row(summary, f"builtin {kind}")  # Locust's request name: "<target> <step name>"
        assert (row["requests"], row["failures"]) == (totals["completed"] + totals["failed"], totals["failed"])
    # Each association registered exactly once, and was answered.
    assert requests["register"]["attempted"] == requests["register"]["completed"] == handshakes
    # The periodic steps ran after it, each on its own interval (bounds loose enough for a loaded machine).
    assert requests["telemetry"]["completed"] >= 3 * CLIENTS
    assert requests["config"]["completed"] >= CLIENTS
    assert requests["telemetry"]["completed"] > requests["config"]["completed"]
    assert "ping" not in requests and "ping" not in summary  # the steps replaced the ping: no empty ping row
    assert "builtin telemetry" in run.stdout and "builtin register" in run.stdout
