"""Server restarted mid-run: associations notice and come back per the reconnect policy.

The reference server runs in its own process on a fixed port; it is stopped (politely
with SIGTERM: close_notify to everyone; or killed with SIGKILL: nothing said, the
clients learn from ICMP errors or unanswered pings) and started again on the same
port. At least 99% of the associations must be back and pinging within 10 s.

The port (issue 12, defect 12): it used to come from binding port 0, i.e. from the
kernel's ephemeral range (net.ipv4.ip_local_port_range), the very range the clients'
own sockets take their local ports from. While the server was down, 200 reconnecting
clients opened new sockets, and one of them could be given the server's port:
"Address already in use" at the restart, red CI on a correct tree. Now the port is
outside that range, where the kernel never puts an unbound or connected socket, so no
client (of this test or any other on the machine) can take it; it is checked free for
UDP when chosen, and a TCP listener on the same number is held for the whole test, so
that another run of this test at the same time (another checkout) picks another one.
"""

from __future__ import annotations

import random
import signal
import socket
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest
from servers import start_loadgen_server

from loadgen.locust.lifeline import keep_alive
from loadgen.protocol import dtls_contexts
from loadgen.protocol.credentials import Secret
from loadgen.scenario import parse_scenario
from loadgen.scenario.model import Expect, PingConfig
from loadgen.stats.facts import HANDSHAKE, PING, Finished
from loadgen.traffic.tracker import traffic_plan
from loadgen.transport.dtls_association import DtlsAssociation

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ASSOCIATIONS = 200


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of local ports for sockets that do not choose one (inclusive)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return low, high


@pytest.fixture
def restart_port() -> Iterator[int]:
    """A loopback port outside the ephemeral range, free for UDP, reserved for this test (see the module doc)."""
    low, high = ephemeral_range()
    candidates = [p for p in range(1024, 65536) if not low <= p <= high]
    if not candidates:
        pytest.skip(f"every unprivileged port is ephemeral here ({low}-{high}): no port a client cannot take")
    random.shuffle(candidates)  # another run of this test starts elsewhere
    for port in candidates[:200]:
        reservation = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            reservation.bind(("127.0.0.1", port))
            reservation.listen(1)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", port))
        except OSError:
            reservation.close()
            continue
        try:
            yield port
        finally:
            reservation.close()
        return
    pytest.fail("no free port outside the ephemeral range among 200 tried")


def test_the_restart_port_is_one_no_client_socket_can_take(restart_port: int) -> None:
    """Defect 12: the port came from the ephemeral range, which reconnecting clients draw from."""
    low, high = ephemeral_range()
    assert not low <= restart_port <= high, (restart_port, low, high)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:  # a second run of this test
        with pytest.raises(OSError):
            other.bind(("127.0.0.1", restart_port))


class PerAssociation:
    """Remembers, per association (its name is used as the target), when it last
    completed a handshake and a ping."""

    def __init__(self) -> None:
        self.last: dict[str, dict[str, float]] = defaultdict(dict)

    def record(self, fact: object) -> None:
        if isinstance(fact, Finished) and fact.error is None:
            self.last[fact.target][fact.kind] = time.monotonic()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_associations_come_back_after_a_server_restart(tmp_path, psk_hex: str, how: signal.Signals,
                                                       restart_port: int) -> None:
    key = Secret(bytes.fromhex(psk_hex))
    port = restart_port
    scenario = parse_scenario(
        "name: restart\nclients: {count: 1}\nrun_time: 1m\n"
        f"psk: {{identity: 'd-{{n}}', key: '{psk_hex}'}}\nreconnect: {{policy: on-failure, delay: 500ms}}\n",
        str(tmp_path / "restart.yaml"),
    )
    server = start_loadgen_server("--port", str(port), key_hex=psk_hex, workdir=tmp_path / "a")
    sink = PerAssociation()
    ctx = dtls_contexts.client_context()
    plan = traffic_plan(PingConfig(interval=0.5, jitter=0.0, expect=Expect("echo")))

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
