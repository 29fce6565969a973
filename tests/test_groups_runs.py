"""Runs of a two-group fleet (``devices:``) as a user starts them: ``loadgen run`` against the built-in
server, ``--processes 2`` against a reference server that records identities, and plain ``locust -f``.

The fleet: 3 ``meters`` (meter-000, ...) pinging every second and 5 ``sensors`` (sensor-0, ...) every
200 ms. Every figure is checked per group: loadgen's exact counts (``summary.json``'s ``targets``,
keyed ``group@target``), Locust's rows (``meters@builtin handshake``, ...) and the identities the
server saw.
"""

from __future__ import annotations

import csv
import json
import math
import re
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import locust  # noqa: F401 - gevent's monkey-patching first, as in a run
import pytest
from test_plain_workers import RecordingKeys, master_and_two_workers, master_port
from test_runs import IDENTITY_SERVER, KEY_HEX, ROW, STOP, Child, finished_run, load, loadgen, run_dir, spawn

from loadgen.protocol.credentials import Secret
from loadgen.servers.dtls import DtlsServer

pytestmark = pytest.mark.timeout(150)
__all__ = ["master_port", "spawn"]  # the fixtures, from test_plain_workers and test_runs

GROUPS = {"meters": 3, "sensors": 5}
INTERVALS = {"meters": 1.0, "sensors": 0.2}
JITTER = 0.1  # the ping section's default


def fleet(tmp_path: Path, name: str, targets: str = "") -> Path:
    """The two-group scenario (against ``targets``, else the built-in server)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n" + textwrap.dedent(targets) + textwrap.dedent(f"""\
        run_time: 4s
        clients: {{spawn_rate: 100}}
        psk: {{key: "{KEY_HEX}"}}
        devices:
          - name: meters
            count: 3
            psk: {{identity: "meter-{{n:03d}}"}}
            ping: {{interval: 1s, expect: echo}}
          - name: sensors
            count: 5
            psk: {{identity: "sensor-{{n}}"}}
            ping: {{interval: 200ms, expect: echo}}
        outputs: {{results_dir: results}}
        """))
    return path


def assert_groups(summary: dict[str, Any], target: str) -> None:
    """Per group: every handshake completed, pings answered, Locust's rows equal to loadgen's exact counts,
    and no group pinging faster than its own interval allows."""
    assert summary["handshake"]["completed"] == sum(GROUPS.values()), summary["handshake"]
    assert set(summary["targets"]) == {f"{g}@{target}" for g in GROUPS}, sorted(summary["targets"])
    for group, count in GROUPS.items():
        figures = summary["targets"][f"{group}@{target}"]
        for kind in ("handshake", "ping"):
            cell = figures[kind]
            assert cell["completed"] + cell["failed"] + cell["in_flight"] == cell["attempted"], (group, kind, cell)
            assert cell["failed"] == 0, (group, kind, cell["errors"])
            row = summary["locust"][f"DTLS {group}@{target} {kind}"]
            assert (row["requests"], row["failures"]) == (cell["completed"], 0), (group, kind, row, cell)
        assert figures["handshake"]["completed"] == count, (group, figures["handshake"])
        assert figures["ping"]["completed"] >= count, (group, figures["ping"])  # each device pinged
        # A device sends at most one ping per (1 - jitter) x interval, plus its first.
        most = count * (math.floor(summary["elapsed_s"] / ((1 - JITTER) * INTERVALS[group])) + 1)
        assert figures["ping"]["attempted"] <= most, (group, figures["ping"]["attempted"], most)


def identities_seen(server: Child) -> Counter[str]:
    server.signal_group(signal.SIGTERM)
    assert server.wait(STOP) == 0, server.describe()
    seen = json.loads(server.stdout.strip().splitlines()[-1])
    return Counter(seen["identities"].values())


def identity_server(tmp_path: Path, spawn: Callable[..., Child]) -> tuple[Child, str]:
    """The recording reference server (the scenario's key), and the targets line for it."""
    keys = tmp_path / "keys.yaml"
    keys.write_text(f'name: keys\nrun_time: 1s\nclients: {{count: 1}}\npsk: {{key: "{KEY_HEX}"}}\n')
    server = spawn(sys.executable, IDENTITY_SERVER, keys, label="identity-server")
    port = int(server.wait_for_output(r"identity-server listening on 127\.0\.0\.1:(\d+)")[1])
    return server, f"targets: [{{name: gw, host: 127.0.0.1, port: {port}}}]\n"


def test_two_groups_run_headless_against_the_builtin_server(tmp_path: Path, spawn: Callable[..., Child]) -> None:
    run = finished_run(spawn, "run", fleet(tmp_path, "fleet"), timeout=60)
    assert run.proc.returncode == 0, run.describe()
    summary = load(run_dir(tmp_path, "fleet") / "summary.json")
    assert_groups(summary, "builtin")
    # The printed Locust table has each group's rows, with the same counts.
    for group, count in GROUPS.items():
        row = re.search(ROW.format(name=f"{group}@builtin handshake"), run.stdout, re.M)
        assert row and (int(row["count"]), int(row["fail"])) == (count, 0), run.stdout
    assert re.search(r"DTLS server stopped: 8 handshakes", summary["server"]), summary["server"]
    # The stored scenario has each group, and no key material.
    stored = (run_dir(tmp_path, "fleet") / "scenario.json").read_text()
    assert [g["psk"]["identity"] for g in json.loads(stored)["devices"]] == ["meter-{n:03d}", "sensor-{n}"]
    assert KEY_HEX not in stored


def test_two_groups_use_each_groups_identities_once(tmp_path: Path, spawn: Callable[..., Child]) -> None:
    """One process: each group's devices are numbered from 0 in their own identity template."""
    server, targets = identity_server(tmp_path, spawn)
    run = finished_run(spawn, "run", fleet(tmp_path, "ids", targets), timeout=60)
    assert run.proc.returncode == 0, run.describe()
    assert_groups(load(run_dir(tmp_path, "ids") / "summary.json"), "gw")
    seen = identities_seen(server)
    assert sorted(seen) == sorted([f"meter-{n:03d}" for n in range(3)] + [f"sensor-{n}" for n in range(5)]), seen
    assert set(seen.values()) == {1}, seen


def test_two_groups_with_processes_number_apart(tmp_path: Path, spawn: Callable[..., Child]) -> None:
    """``--processes 2``: each worker numbers each group's devices index + k x 2, so no identity is used
    twice; the master's totals per group are the sum of its workers'."""
    server, targets = identity_server(tmp_path, spawn)
    run = finished_run(spawn, "run", fleet(tmp_path, "procs", targets), "--processes", "2", timeout=90)
    assert run.proc.returncode == 0, run.describe()
    results = run_dir(tmp_path, "procs")
    summary = load(results / "summary.json")
    assert_groups(summary, "gw")
    workers = [load(path) for path in sorted(results.glob("worker-*.json"))]
    assert len(workers) == 2
    for group in GROUPS:
        assert sum(w["targets"].get(f"{group}@gw", {}).get("handshake", {}).get("completed", 0)
                   for w in workers) == GROUPS[group]
    seen = identities_seen(server)
    duplicated = {identity: n for identity, n in seen.items() if n > 1}
    assert not duplicated, f"identities used by more than one association: {duplicated}"
    prefixes = Counter(identity.split("-")[0] for identity in seen)
    assert prefixes == {"meter": 3, "sensor": 5}, seen


def test_plain_locust_runs_the_groups_as_user_classes(tmp_path: Path, spawn: Callable[..., Child]) -> None:
    locustfile = subprocess.run(loadgen("locustfile"), capture_output=True, text=True, check=True,
                                timeout=30).stdout.strip()
    prefix = tmp_path / "plain"
    run = spawn(sys.executable, "-m", "locust", "-f", locustfile, "--headless", "-u", "8", "-r", "100", "-t", "4s",
                "--scenario", fleet(tmp_path, "plainfleet"), "--csv", prefix, label="locust")
    assert run.wait(60) == 0, run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    summary = load(run_dir(tmp_path, "plainfleet") / "summary.json")
    assert_groups(summary, "builtin")
    for group, count in GROUPS.items():
        assert (rows[f"{group}@builtin handshake"]["Request Count"],
                rows[f"{group}@builtin handshake"]["Failure Count"]) == (str(count), "0")
        # Locust writes its CSV once a second (the last second may be missing): at most loadgen's count.
        assert 0 < int(rows[f"{group}@builtin ping"]["Request Count"]) <= \
            summary["targets"][f"{group}@builtin"]["ping"]["completed"]
    # Locust ran the groups' classes, named for them, in place of Device.
    assert 'All users spawned: {"meters": 3, "sensors": 5} (8 total users)' in run.stderr, run.describe()


def test_plain_locust_workers_number_each_group_apart(tmp_path: Path, spawn: Callable[..., Child],
                                                     master_port: int) -> None:
    """``locust --master`` dispatches the groups' classes by name (it has them too, without a session); each
    ``--worker`` numbers each group's devices at the place the master told it."""
    keys = RecordingKeys(Secret(bytes.fromhex(KEY_HEX)))
    server = DtlsServer(keys).start()
    try:
        host, port = server.address
        scenario = fleet(tmp_path, "plainworkers", f"targets: [{{name: gw, host: {host}, port: {port}}}]\n")
        master, status = master_and_two_workers(spawn, scenario, master_port, users=8)
    finally:
        server.stop()
    assert status == 0, master.describe()
    asked = Counter(keys.asked)
    assert not {i: n for i, n in asked.items() if n > 1}, asked  # one handshake per device, none shared
    assert Counter(i.split(b"-")[0] for i in asked) == {b"meter": 3, b"sensor": 5}, asked
    summary = load(run_dir(tmp_path, "plainworkers") / "summary.json")
    for group, count in GROUPS.items():
        assert summary["locust"][f"DTLS {group}@gw handshake"] == {"requests": count, "failures": 0}, summary["locust"]
