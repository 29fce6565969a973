"""TLS targets in scenarios, run headless through Locust like DTLS ones (issue 4).

The reference TLS server runs in its own process (PSK mode); ``loadgen run`` is the
real CLI in a subprocess. Resumption must show as its own Locust row, so full and
resumed handshakes can be measured apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tls_servers import start_loadgen_tls_server

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


def run(tmp_path: Path, port: int, *extra: str, resumption: bool = True, clients: int = 12,
        version: str = "1.2") -> dict:
    path = tmp_path / "tls.yaml"
    # TLS 1.2: PSK cipher suites; TLS 1.3: external PSK (OpenSSL's default suites).
    ciphers = '"PSK-AES128-GCM-SHA256"' if version == "1.2" else "null"
    path.write_text(textwrap.dedent(f"""\
        name: tls-run
        targets:
          - {{name: tls1, host: 127.0.0.1, port: {port}, protocol: tls}}
        clients: {{count: {clients}, spawn_rate: {clients}}}
        run_time: 4s
        psk: {{identity: "client-{{n}}", key: "{KEY}"}}
        tls: {{min_version: "{version}", max_version: "{version}", ciphers: {ciphers},
               resumption: {str(resumption).lower()}}}
        ping: {{interval: 0.5s, expect: echo}}
        outputs: {{results_dir: {tmp_path / "results"}, report: false}}
        """))
    proc = subprocess.run([sys.executable, "-m", "loadgen", "run", str(path), *extra], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (run_dir,) = [d for d in (tmp_path / "results").iterdir() if d.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    for d in run_dir.iterdir():
        d.unlink() if d.is_file() else None
    run_dir.rmdir()
    return summary


def test_tls_scenario_handshakes_and_pings_through_locust(tmp_path: Path) -> None:
    server = start_loadgen_tls_server(workdir=tmp_path / "srv", key_hex=KEY)
    try:
        summary = run(tmp_path, server.port)
    finally:
        stopped = server.stop_and_summarize()
    locust = summary["locust"]
    assert locust["TLS tls1 handshake"] == {**locust["TLS tls1 handshake"], "requests": 12, "failures": 0}
    assert locust["TLS tls1 ping"]["requests"] >= 12 * 5 and locust["TLS tls1 ping"]["failures"] == 0
    assert summary["handshake"]["completed"] == 12 and summary["handshake"]["failed"] == 0
    assert summary["ping"]["completed"] == locust["TLS tls1 ping"]["requests"]
    assert stopped.handshakes == 12 and stopped.pings >= summary["ping"]["completed"]


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("resumption", [True, False], ids=["resumption-on", "resumption-off"])
def test_resumed_handshakes_are_reported_as_such(tmp_path: Path, resumption: bool, version: str) -> None:
    # TLS 1.3: an external PSK handshake is a full one (OpenSSL calls it "reused"); only tickets resume.
    server = start_loadgen_tls_server(workdir=tmp_path / "srv", key_hex=KEY)
    try:
        # churn: every client handshakes again every 0.5 s, on the same device session.
        summary = run(tmp_path, server.port, "--workload", "churn", "--period", "0.5", resumption=resumption,
                      clients=8, version=version)
    finally:
        stopped = server.stop_and_summarize()
    locust = summary["locust"]
    full = locust["TLS tls1 handshake"]["requests"]
    resumed = locust.get("TLS tls1 resumed handshake", {"requests": 0})["requests"]
    assert full + resumed == summary["handshake"]["completed"] >= 8 * 4
    assert summary["handshake"]["resumed"] == resumed == stopped.resumed
    if resumption:
        assert full == 8  # each device's first handshake is a full one, every later one resumes
        assert resumed >= 8 * 3
    else:
        assert resumed == 0
