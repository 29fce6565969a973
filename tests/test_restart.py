"""Server restarted mid-run: associations notice and come back per the reconnect policy.

The reference server runs in its own process on a fixed port; it is stopped (politely
with SIGTERM: close_notify to everyone; or killed with SIGKILL: nothing said, the
clients learn from ICMP errors or unanswered pings) and started again on the same
port. At least 99% of the associations must be back and pinging within 10 s.
"""

from __future__ import annotations

import signal
import time
from collections import defaultdict

import gevent
import pytest
from servers import free_udp_port, start_loadgen_server

from loadgen.credentials import Secret
from loadgen.payloads import ReplyRule
from loadgen.protocol import dtls
from loadgen.recorder import HANDSHAKE, PING, Finished
from loadgen.scenario import parse_scenario
from loadgen.transport.association import DtlsAssociation, PingPlan
from loadgen.users import keep_alive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ASSOCIATIONS = 200


class PerAssociation:
    """Remembers, per association (its name is used as the target), when it last
    completed a handshake and a ping."""

    def __init__(self) -> None:
        self.last: dict[str, dict[str, float]] = defaultdict(dict)

    def record(self, fact: object) -> None:
        if isinstance(fact, Finished) and fact.error is None:
            self.last[fact.target][fact.kind] = time.monotonic()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_associations_come_back_after_a_server_restart(tmp_path, psk_hex: str, how: signal.Signals) -> None:
    key = Secret(bytes.fromhex(psk_hex))
    port = free_udp_port()
    scenario = parse_scenario(
        "name: restart\nclients: {count: 1}\nrun_time: 1m\n"
        f"psk: {{identity: 'd-{{n}}', key: '{psk_hex}'}}\nreconnect: {{policy: on-failure, delay: 500ms}}\n",
        str(tmp_path / "restart.yaml"),
    )
    server = start_loadgen_server("--port", str(port), key_hex=psk_hex, workdir=tmp_path / "a")
    sink = PerAssociation()
    ctx = dtls.client_context()
    plan = PingPlan(interval=0.5, reply=ReplyRule("echo"))

    def factory(i: int):
        return lambda: DtlsAssociation(f"d-{i}", f"d-{i}", server.address, ctx, sink, identity=b"d-%d" % i,
                                       key=key, ping=plan)

    devices = [gevent.spawn(keep_alive, factory(i), scenario) for i in range(ASSOCIATIONS)]
    second = None
    try:
        gevent.sleep(3)
        assert sum(HANDSHAKE in v for v in sink.last.values()) == ASSOCIATIONS
        server.process.send_signal(how)
        server.process.wait(timeout=10)
        gevent.sleep(2)  # down for a while: reconnect attempts are refused meanwhile
        second = start_loadgen_server("--port", str(port), key_hex=psk_hex, workdir=tmp_path / "b")
        restarted = time.monotonic()
        deadline = restarted + 10
        back = 0
        while time.monotonic() < deadline:
            gevent.sleep(0.25)
            back = sum(1 for v in sink.last.values()
                       if v.get(HANDSHAKE, 0) > restarted and v.get(PING, 0) > v[HANDSHAKE])
            if back >= ASSOCIATIONS * 0.99:
                break
        took = time.monotonic() - restarted
        assert back >= ASSOCIATIONS * 0.99, f"only {back}/{ASSOCIATIONS} back and pinging 10 s after the restart"
        print(f"{back}/{ASSOCIATIONS} back and pinging {took:.1f} s after the restart ({how.name})")
    finally:
        gevent.killall(devices)
        server.stop()
        if second is not None:
            summary = second.stop_and_summarize()
            assert summary.handshakes >= ASSOCIATIONS * 0.99
