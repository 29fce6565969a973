"""Reliability and secrets, as a user meets them: Ctrl-C mid-run, and no key anywhere.

Runs the real CLI in a subprocess (own process group, so the built-in server it
starts is reached too) against the built-in reference server on loopback.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
SECRET_HEX = "c0ffee11223344556677889900aabbcc"


def spawn(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "loadgen", *args], cwd=cwd, env=full_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def scenario(tmp_path: Path, name: str, psk: str, run_time: str = "4s") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        clients: {{count: 30, spawn_rate: 30}}
        run_time: {run_time}
        ping: {{interval: 0.3s, expect: echo}}
        outputs: {{results_dir: {tmp_path / "results"}}}
        """) + psk)
    return path


def only_run_dir(tmp_path: Path) -> Path:
    runs = list((tmp_path / "results").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def forms_of(key_hex: str) -> list[bytes]:
    raw = bytes.fromhex(key_hex)
    return [raw, key_hex.encode(), key_hex.upper().encode(), base64.b64encode(raw),
            base64.b64encode(raw).rstrip(b"="), base64.urlsafe_b64encode(raw)]


@pytest.mark.parametrize("how", ["key_env", "derive"])
def test_no_key_in_results_or_logs(tmp_path: Path, how: str) -> None:
    if how == "key_env":
        psk = "psk: {identity: 'device-{n:05d}', key_env: LOADGEN_TEST_PSK}\n"
        secrets = [SECRET_HEX]
    else:
        psk = "psk: {identity: 'device-{n:05d}', derive: {master_env: LOADGEN_TEST_PSK, length: 16}}\n"
        import hashlib
        import hmac
        master = bytes.fromhex(SECRET_HEX)
        secrets = [SECRET_HEX] + [hmac.new(master, f"device-{n:05d}".encode(), hashlib.sha256).hexdigest()[:32]
                                  for n in range(30)]
    path = scenario(tmp_path, f"secret-{how}", psk)
    proc = spawn(["-vv", "run", str(path)], tmp_path, env={"LOADGEN_TEST_PSK": SECRET_HEX})
    out, err = finish(proc, 60)
    assert proc.returncode == 0, err[-2000:]
    run_dir = only_run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["handshake"]["completed"] == 30  # the keys were used, and worked
    assert "DEBUG" in err or "INFO" in err  # the verbose log really was captured
    haystacks = {"stdout": out.encode(), "stderr": err.encode()}
    haystacks.update({str(p): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()})
    for where, data in haystacks.items():
        for secret in secrets:
            for form in forms_of(secret):
                assert form not in data, f"key material ({form[:4]!r}...) found in {where}"


def test_sigint_stops_cleanly_and_writes_results(tmp_path: Path) -> None:
    path = scenario(tmp_path, "interrupted", "psk: {identity: 'device-{n:05d}', key: '" + SECRET_HEX + "'}\n",
                    run_time="10m")
    proc = spawn(["run", str(path)], tmp_path)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    for line in proc.stdout:  # wait until the run is under way (first progress line)
        if line.startswith("[") or time.monotonic() > deadline:
            break
    time.sleep(1)
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole group
    out, err = finish(proc, 15)
    took = time.monotonic() - sent
    assert took < 5, f"took {took:.1f} s to stop after SIGINT"
    assert "Traceback" not in err, err[-2000:]
    summary = json.loads((only_run_dir(tmp_path) / "summary.json").read_text())
    for kind in ("handshake", "ping"):
        k = summary[kind]
        assert k["completed"] + k["failed"] + k["in_flight"] == k["attempted"]
        assert k["in_flight"] >= 0
    assert summary["handshake"]["completed"] == 30
    assert summary["ping"]["completed"] > 30
    # Locust saw exactly what loadgen counted.
    locust = summary["locust"]
    assert locust["DTLS builtin handshake"]["requests"] == summary["handshake"]["completed"]
    assert locust["DTLS builtin ping"]["requests"] == summary["ping"]["completed"] + summary["ping"]["failed"]
