"""Each locustfile in examples/ runs under real plain ``locust -f``, headless, against a real server,
and leaves results/<run>/ whose exact summary adds up and equals Locust's own counts."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import ROOT, Proc
from servers import LoadgenServer
from tls_servers import start_loadgen_tls_server

EXAMPLES = ROOT / "examples"
needs_libcoap = pytest.mark.skipif(shutil.which("coap-server-openssl") is None,
                                   reason="coap-server-openssl (libcoap3-bin) not installed")
RUN = "4s"
BOUND = 60.0  # seconds a locust run may take, start to exit


@pytest.fixture
def locust(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Starts ``locust -f examples/NAME.py --headless ...`` in ``tmp_path``; every one is ended after the test."""
    started: list[Proc] = []

    def start(example: str, *args: str) -> Proc:
        proc = Proc([sys.executable, "-m", "locust", "-f", str(EXAMPLES / example), "--headless", "-t", RUN,
                     "--json-file", "locust", *args], tmp_path, f"locust{len(started)}")
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()


def results(tmp_path: Path) -> dict[str, Any]:
    """The one run's summary.json."""
    found = list((tmp_path / "results").glob("*/summary.json"))
    assert len(found) == 1, found
    summary: dict[str, Any] = json.loads(found[0].read_text())
    return summary


def kind(summary: dict[str, Any], name: str) -> dict[str, Any]:
    """One kind's figures: "handshake" and "ping" at the summary's top, request kinds at the top or (since
    the stats part of issue 14) under "requests"."""
    figures: dict[str, Any] = summary.get("requests", {}).get(name) or summary[name]
    return figures


def locust_counts(tmp_path: Path) -> dict[str, tuple[int, int]]:
    """Locust's own stats (its --json-file): name -> (requests, failures)."""
    rows = json.loads((tmp_path / "locust.json").read_text())
    return {f"{row['method']} {row['name']}": (row["num_requests"], row["num_failures"]) for row in rows}


def assert_exact(summary: dict[str, Any], locust: dict[str, tuple[int, int]], rows: dict[str, str]) -> None:
    """Every kind adds up (attempted = completed + failed + in flight) and equals Locust's row for it."""
    for row, name in rows.items():
        totals = kind(summary, row)
        assert totals["completed"] + totals["failed"] + totals["in_flight"] == totals["attempted"], (row, totals)
        assert totals["attempted"] > 0, (row, totals)
        assert locust[name] == (totals["completed"] + totals["failed"], totals["failed"]), (row, name, totals)
        assert summary["locust"][name] == {"requests": locust[name][0], "failures": locust[name][1]}
        # The run's own Locust/loadgen check (its health), for kinds it can name: before the stats part it
        # took a Locust name's last word for the kind, so "clock notification" is checked above only.
        counts = summary["health"]["counts"]
        assert " " in row or counts[row]["locust"] == counts[row]["loadgen"], (row, counts)


def test_custom_dtls_flow(tmp_path: Path, locust: Callable[..., Proc], start_dtls_server: Callable[..., LoadgenServer],
                          psk_hex: str, monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_dtls_server(key_hex=psk_hex)
    monkeypatch.setenv("METER_PSK", psk_hex)
    target = f"{server.host}:{server.port}"
    run = locust("custom_dtls_flow.py", "-u", "10", "-r", "10", "--host", target)
    assert run.wait(BOUND) == 0, run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    summary = results(tmp_path)
    rows = {row: f"DTLS {target} {row}" for row in ("handshake", "login", "report", "config")}
    assert_exact(summary, locust_counts(tmp_path), rows)
    assert kind(summary, "handshake")["completed"] == kind(summary, "login")["completed"] == 10
    assert kind(summary, "report")["failed"] == kind(summary, "config")["failed"] == 0
    assert summary["outcome"] == "passed"
    assert kind(summary, "report")["completed"] > 50
    # The printed summary shows what ran: no empty ping row, no CoAP columns for plain requests.
    exact = run.stdout.split("loadgen's exact figures", 1)[1].split("Locust's request counts", 1)[0]
    assert "pings" not in exact and "ping:" not in exact, exact
    assert "report: attempted" in exact and "response codes" not in exact, exact


def test_custom_dtls_flow_with_a_wrong_key_fails_with_the_code(tmp_path: Path, locust: Callable[..., Proc],
                                                              start_dtls_server: Callable[..., LoadgenServer],
                                                              psk_hex: str, monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_dtls_server(key_hex=psk_hex)
    monkeypatch.setenv("METER_PSK", "00" * 16)
    target = f"{server.host}:{server.port}"
    run = locust("custom_dtls_flow.py", "-u", "3", "-r", "10", "--host", target)
    assert run.wait(BOUND) == 1, run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    summary = results(tmp_path)
    handshakes = kind(summary, "handshake")
    assert handshakes["completed"] == 0 and handshakes["failed"] >= 3, handshakes
    assert handshakes["errors"] == {"psk-key-mismatch": handshakes["failed"]}, handshakes
    locust_rows = locust_counts(tmp_path)
    assert_exact(summary, locust_rows, {"handshake": f"DTLS {target} handshake"})
    assert "login" not in summary and "login" not in summary.get("requests", {})  # never logged in: nothing sent
    assert summary["outcome"] == "failed" and "FAILED" in run.stdout


def test_mixed_fleet(tmp_path: Path, locust: Callable[..., Proc], start_dtls_server: Callable[..., LoadgenServer],
                     psk_hex: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dtls = start_dtls_server(key_hex=psk_hex)
    tls = start_loadgen_tls_server(key_hex=psk_hex, workdir=tmp_path / "tls-server")
    try:
        monkeypatch.setenv("FLEET_PSK", psk_hex)
        monkeypatch.setenv("DTLS_TARGET", f"{dtls.host}:{dtls.port}")
        monkeypatch.setenv("TLS_TARGET", f"{tls.host}:{tls.port}")
        run = locust("mixed_fleet.py", "-u", "8", "-r", "20")
        assert run.wait(BOUND) == 0, run.describe()
    finally:
        tls.stop()
    assert "Traceback" not in run.stderr, run.describe()
    summary = results(tmp_path)
    locust_rows = locust_counts(tmp_path)
    assert_exact(summary, locust_rows, {"telemetry": "DTLS sensors telemetry", "status": "TLS gateways status"})
    assert locust_rows["DTLS sensors handshake"] == (6, 0) and locust_rows["TLS gateways handshake"] == (2, 0)
    targets = summary["targets"]
    assert {name: figures["handshake"]["completed"] for name, figures in targets.items()} == \
        {"sensors": 6, "gateways": 2}, targets


@needs_libcoap
def test_coap_device(tmp_path: Path, locust: Callable[..., Proc], monkeypatch: pytest.MonkeyPatch) -> None:
    from test_coap_libcoap import start_libcoap

    key = b"example-device-secret"
    server = start_libcoap(key)
    try:
        monkeypatch.setenv("DEVICE_PSK", key.hex())
        host, port = server.dtls_address
        # 10 devices at 10/s: well under the ~100 handshakes in flight at which libcoap ignores ClientHellos.
        run = locust("coap_device.py", "-u", "10", "-r", "10", "--host", f"coaps://{host}:{port}")
        assert run.wait(BOUND) == 0, run.describe()
    finally:
        server.stop()
    assert "Traceback" not in run.stderr, run.describe()
    summary = results(tmp_path)
    kinds = ("handshake", "register", "clock", "clock notification", "report", "config")
    assert_exact(summary, locust_counts(tmp_path), {row: f"COAP {host}:{port} {row}" for row in kinds})
    assert {row: kind(summary, row)["completed"] for row in ("handshake", "register", "clock")} == \
        {"handshake": 10, "register": 10, "clock": 10}
    assert kind(summary, "clock notification")["completed"] >= 10  # libcoap notifies every second; each watches 3+ s
    assert all(kind(summary, row)["failed"] == 0 for row in kinds), {row: kind(summary, row)["errors"] for row in kinds}


def test_custom_dtls_flow_on_a_plain_master_and_two_workers(tmp_path: Path, locust: Callable[..., Proc],
                                                             start_dtls_server: Callable[..., LoadgenServer],
                                                             psk_hex: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The master writes the results: every worker's counts merged, equal to Locust's (its workers') counts."""
    from procs import free_port

    server = start_dtls_server(key_hex=psk_hex)
    monkeypatch.setenv("METER_PSK", psk_hex)
    target, port = f"{server.host}:{server.port}", str(free_port())
    master = locust("custom_dtls_flow.py", "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
                    "--expect-workers", "2", "-u", "6", "-r", "10", "--host", target)
    workers = [Proc([sys.executable, "-m", "locust", "-f", str(EXAMPLES / "custom_dtls_flow.py"), "--worker",
                     "--master-host", "127.0.0.1", "--master-port", port], tmp_path, f"worker{i}") for i in range(2)]
    try:
        assert master.wait(BOUND) == 0, master.describe()
        for worker in workers:
            assert worker.wait(BOUND) == 0, worker.describe()
    finally:
        for worker in workers:
            worker.kill()
    assert "Traceback" not in master.stderr + workers[0].stderr + workers[1].stderr, master.describe()
    summary = results(tmp_path)
    assert_exact(summary, locust_counts(tmp_path), {row: f"DTLS {target} {row}" for row in ("handshake", "login")})
    assert kind(summary, "handshake")["completed"] == kind(summary, "login")["completed"] == 6


def test_a_mistake_in_a_user_class_exits_2_naming_the_class_and_attribute(tmp_path: Path) -> None:
    locustfile = tmp_path / "broken.py"
    locustfile.write_text("from loadgen import DtlsUser\n\n\nclass Sensor(DtlsUser):\n"
                          "    target = '127.0.0.1:5684'\n    psk_key_env = 'LOADGEN_TEST_UNSET_VARIABLE'\n")
    run = Proc([sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", "1", "-t", "2s"],
               tmp_path, "broken")
    try:
        assert run.wait(BOUND) == 2, run.describe()
    finally:
        run.kill()
    assert "loadgen: Sensor.psk_key_env: environment variable LOADGEN_TEST_UNSET_VARIABLE is not set" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "results").exists(), run.describe()
