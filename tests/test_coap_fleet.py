"""A real ``loadgen run`` of 1,000 CoAP devices against libcoap's ``coap-server-openssl`` (issue 14).

Each device handshakes (PSK), observes ``/time`` (a notification a second) and sends a CON
GET of ``/time`` every 3 s. The spawn rate (100/s) stays below what libcoap takes: it ignores
new ClientHellos while about 100 sessions are mid-handshake. The figures are read from the run's
``summary.json``, as a user reads them; the ``error_ratio`` threshold is the 99.9% the issue asks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from test_coap_libcoap import COAP_SERVER, Libcoap, libcoap
from test_runs import Child, finished_run, load, locust_row, run_dir, spawn

__all__ = ["libcoap", "spawn"]  # the fixtures, from test_coap_libcoap and test_runs

CLIENTS = 1000
RUN = 30  # seconds: 10 of spawning, 20 with everyone up

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180),
              pytest.mark.skipif(COAP_SERVER is None, reason="coap-server-openssl (libcoap3-bin) not installed")]


def fleet_scenario(tmp_path: Path, server: Libcoap) -> Path:
    host, port = server.dtls_address
    path = tmp_path / "coap-fleet.yaml"
    path.write_text(f"""\
name: coap-fleet
targets: [{{name: gw1, host: "{host}", port: {port}}}]
clients: {{count: {CLIENTS}, spawn_rate: 100}}
run_time: {RUN}s
psk: {{identity: "device-{{n:05d}}", hint: hint, key: "{server.key.hex()}"}}
requests:
  - name: observe time
    once: true
    coap: {{path: /time, observe: true}}
    expect: {{code: "2.05"}}
  - coap: {{method: GET, path: /time}}
    interval: 3s
    expect: {{code: "2.05", regex: "[0-9]"}}
thresholds: {{error_ratio: 0.001}}
outputs: {{results_dir: results, report: false}}
""")
    return path


def test_a_thousand_coap_devices_get_and_observe(tmp_path: Path, spawn: Callable[..., Child],
                                                 libcoap: Libcoap) -> None:
    run = finished_run(spawn, "run", fleet_scenario(tmp_path, libcoap), timeout=150)
    assert run.proc.returncode == 0, run.describe()
    summary = load(run_dir(tmp_path, "coap-fleet") / "summary.json")

    handshake = summary["handshake"]
    assert handshake["completed"] == CLIENTS and handshake["failed"] == 0, handshake
    requests = summary["requests"]
    get = requests["GET /time"]
    assert get["completed"] + get["failed"] + get["in_flight"] == get["attempted"], get
    # Every client sent a GET at once and then every 3 s over at least 20 s.
    assert get["attempted"] >= CLIENTS * 6, get
    ended = get["completed"] + get["failed"]
    assert get["codes"].get("2.05", 0) >= 0.999 * ended, get  # answered with the expected code, matched by token
    assert "retransmits" in get and get["retransmits"] >= 0  # CoAP retransmissions are reported
    # Every registration answered, and notifications counted for (at least) the 20 s everyone was up.
    assert requests["observe time"]["completed"] == CLIENTS, requests["observe time"]
    notes = requests["observe time notification"]
    assert notes["completed"] >= CLIENTS * 15 and notes["failed"] == 0, notes
    # Locust saw the same attempts.
    row = locust_row(summary, "gw1 GET /time")
    assert row["requests"] == ended and row["failures"] == get["failed"]
    # The printed table keeps its columns apart for long names too.
    assert re.search(r"\ngw1 observe time notification +DTLS +\d+ +0 ", run.stdout), run.stdout[-2000:]
