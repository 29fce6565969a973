"""Hostile input: 100,000+ mutated datagrams at the reference server and at clients.

Neither side may crash, grow without bound, or stop serving legitimate traffic.
Mutations come from real traffic (captured ClientHellos and encrypted pings) plus
random bytes: truncated, oversized, bit-flipped, wrong epoch, replayed, garbage
after the handshake.
"""

from __future__ import annotations

import random
import socket as stdsocket
import time

import gevent
import pytest
from gevent import socket

from loadgen.protocol import dtls_contexts
from loadgen.protocol.credentials import Secret
from loadgen.protocol.native import records
from loadgen.protocol.openssl import dtls
from loadgen.scenario.model import Expect, PingConfig
from loadgen.stats.sink import StatsSink
from loadgen.traffic.tracker import traffic_plan
from loadgen.transport.dtls_association import DtlsAssociation

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DATAGRAMS = 100_000


def rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def mutate(rng: random.Random, samples: list[bytes]) -> bytes:
    """One hostile datagram derived from real ones (or from nothing)."""
    base = rng.choice(samples)
    kind = rng.randrange(8)
    if kind == 0:
        return base[: rng.randrange(len(base))]  # truncated
    if kind == 1:
        return base + rng.randbytes(rng.randrange(1, 2000))  # garbage appended
    if kind == 2:
        data = bytearray(base)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)  # bit flips
    if kind == 3:
        data = bytearray(base)
        data[3:5] = rng.randrange(65536).to_bytes(2, "big")  # wrong epoch
        return bytes(data)
    if kind == 4:
        return rng.randbytes(rng.randrange(1, 1500))  # noise
    if kind == 5:
        return records.HEADER.pack(rng.choice((20, 21, 22, 23)), records.DTLS_1_2, rng.randrange(3), 0,
                                   rng.randrange(65536), 60000) + rng.randbytes(100)  # length lies
    if kind == 6:
        return rng.randbytes(rng.randrange(9000, 60000))  # oversized
    return base  # replayed as is


def capture(address: tuple[str, int], key: Secret) -> list[bytes]:
    """Real datagrams of a client: ClientHellos and encrypted pings, as seeds for mutation."""
    engine = dtls.DtlsEngine.client(dtls_contexts.client_context(), lambda hint: (b"seed", key))
    engine.start(time.monotonic())  # over a real socket: the real clock
    samples = engine.datagrams_to_send()
    sock = socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
    sock.connect(address)
    sock.settimeout(2)
    for d in samples:
        sock.send(d)
    for _ in range(20):
        if engine.handshake_done:
            break
        engine.receive_datagram(sock.recv(65536), time.monotonic())
        out = engine.datagrams_to_send()
        samples += out
        for d in out:
            sock.send(d)
    assert engine.handshake_done
    for i in range(5):
        engine.send(b"I am seed, please, accept our ping %d" % i)
        samples += engine.datagrams_to_send()
    sock.close()
    return samples


def test_server_survives_mutated_datagrams(dtls_server, psk_hex: str) -> None:
    key = Secret(bytes.fromhex(psk_hex))
    rng = random.Random(7)
    samples = capture(dtls_server.address, key)
    totals = StatsSink()
    legit = [DtlsAssociation(f"legit-{i}", "srv", dtls_server.address, dtls_contexts.client_context(), totals,
                             identity=b"legit-%d" % i, key=key,
                             ping=traffic_plan(PingConfig(interval=0.2, jitter=0.0, expect=Expect("echo"))))
             for i in range(10)]
    greenlets = [gevent.spawn(a.run) for a in legit]
    gevent.sleep(1)
    rss_before = rss_kib(dtls_server.process.pid)
    senders = [socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM) for _ in range(50)]  # 50 hostile peers
    answers = 0
    for n in range(DATAGRAMS):
        sender = senders[n % len(senders)]
        try:
            sender.sendto(mutate(rng, samples), dtls_server.address)
        except OSError:
            pass
        if n % 500 == 0:
            gevent.sleep(0.005)  # let the legit clients and the server breathe
            for s in senders:
                s.setblocking(False)
                try:
                    while True:
                        reply = s.recv(65536)
                        answers += 1
                        assert len(reply) <= 2000  # no amplification toward spoofed sources
                except BlockingIOError:
                    pass
                s.setblocking(True)
    gevent.sleep(2)
    rss_after = rss_kib(dtls_server.process.pid)
    pings_before = totals.pings.completed
    gevent.sleep(1.5)
    assert totals.pings.completed > pings_before, "the server stopped answering legitimate clients"
    gevent.killall(greenlets)
    for s in senders:
        s.close()
    assert dtls_server.process.poll() is None, "server died"
    assert totals.handshakes.completed == 10
    assert totals.pings.failed <= totals.pings.completed * 0.01, dict(totals.pings.failures)
    assert rss_after - rss_before < 64 * 1024, f"server grew by {rss_after - rss_before} KiB"
    summary = dtls_server.stop_and_summarize()
    assert summary.handshakes >= 11


def test_clients_survive_mutated_datagrams(dtls_server, psk_hex: str) -> None:
    """A relay in the clients' path forwards real traffic and injects mutated datagrams."""
    key = Secret(bytes.fromhex(psk_hex))
    rng = random.Random(11)
    samples = capture(dtls_server.address, key)
    relay = socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
    relay.bind(("127.0.0.1", 0))
    upstream: dict[tuple, socket.socket] = {}

    def pump_down(client: tuple, up: socket.socket) -> None:
        while True:
            relay.sendto(up.recv(65536), client)

    def pump_up() -> None:
        while True:
            data, client = relay.recvfrom(65536)
            up = upstream.get(client)
            if up is None:
                up = upstream[client] = socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
                up.connect(dtls_server.address)
                gevent.spawn(pump_down, client, up)
            up.send(data)

    relay_loop = gevent.spawn(pump_up)
    totals = StatsSink()
    clients = [DtlsAssociation(f"c-{i}", "srv", relay.getsockname(), dtls_contexts.client_context(), totals,
                               identity=b"c-%d" % i, key=key,
                               ping=traffic_plan(PingConfig(interval=0.2, jitter=0.0, expect=Expect("echo"),
                                                            max_missed=10**6)))
               for i in range(20)]
    greenlets = [gevent.spawn(a.run) for a in clients]
    gevent.sleep(1.5)
    assert totals.handshakes.completed == 20
    rss_before = rss_kib()
    for n in range(DATAGRAMS):
        client = list(upstream)[n % len(upstream)]
        relay.sendto(mutate(rng, samples), client)
        if n % 500 == 0:
            gevent.sleep(0.005)
    gevent.sleep(1)
    rss_after = rss_kib()
    # The flood overflows the clients' socket buffers, so some real replies are lost
    # while it lasts: those pings time out, and nothing else may go wrong.
    assert set(totals.pings.failures) <= {"ping-timeout"}, dict(totals.pings.failures)
    completed, failed = totals.pings.completed, totals.pings.failed
    gevent.sleep(1.5)
    assert totals.pings.completed >= completed + 20 * 5, "clients did not go back to pinging"
    assert totals.pings.failed == failed, "pings still failing after the flood"
    ended = [g for g in greenlets if g.ready()]
    assert not ended, f"associations ended: {[g.value for g in ended]}"
    gevent.killall(greenlets)
    relay_loop.kill()
    relay.close()
    assert rss_after - rss_before < 64 * 1024, f"client grew by {rss_after - rss_before} KiB"
