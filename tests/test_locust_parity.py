"""Issue 12: Locust sees what loadgen counts (defects 6-10): failure rows by code, one truth in
the summary, web mode, plain ``locust -f``, interrupted runs, and every run mode's results."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import gevent
import locust  # noqa: F401 - gevent's monkey-patching first, as in a run
import pytest

from loadgen.runner import make_environment
from loadgen.scenario import load_scenario
from loadgen.users import Endpoint

pytestmark = pytest.mark.timeout(60)


def test_locust_failures_have_one_row_per_code_not_per_device(tmp_path: Path) -> None:
    """Defect 6: ``ConnectionRefused('device-00019: 127.0.0.1:5999 refused ...')`` made one row per
    device in Locust's Failures tab; the error Locust sees is the stable code."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there (ICMP unreachable)
    path = tmp_path / "refused.yaml"
    path.write_text(f"name: refused\ntargets: [{{name: gw, host: 127.0.0.1, port: {port}}}]\n"
                    "clients: {count: 4, spawn_rate: 100}\nrun_time: 5s\nreconnect: {policy: never}\n"
                    "dtls: {handshake_timeout: 3s}\npsk: {identity: 'device-{n:05d}', key: '000102030405060708090a0b0c0d0e0f'}\n")
    scenario = load_scenario(path)
    env, _ = make_environment(scenario, [Endpoint(t, (t.host, t.port)) for t in scenario.targets])
    runner = env.create_local_runner()
    try:
        runner.start(4, 100)
        deadline = time.monotonic() + 10
        while env.stats.get("gw handshake", "DTLS").num_failures < 4 and time.monotonic() < deadline:
            gevent.sleep(0.05)
    finally:
        runner.quit()
    assert env.stats.get("gw handshake", "DTLS").num_failures == 4
    rows = list(env.stats.errors.values())
    # What the Failures tab and failures.csv show (Locust renders the error with parse_error)
    assert [(r.name, r.to_dict()["error"], r.occurrences) for r in rows] == [("gw handshake", "connection-refused", 4)]
