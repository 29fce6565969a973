"""The reference server never retransmits on a timer of its own: the client's repeats drive it.

Every DTLS client retransmits its flight until it is answered (RFC 6347 4.2.4), and a
server engine answers a repeat of the client's flight with its own. So the server needs
no retransmission timer, and idle half-open peers (an attacker's, or clients that gave up)
cost it no CPU until their handshake deadline (issue 11, finding 7). These tests drop
the server's flight and never run the server engine's timer: the handshake must still
complete, driven by the client's retransmission alone, for every client/server pairing.

Time is moved by hand (``now``) between loadgen's own engines. A pairing with an OpenSSL
engine sleeps for real: the OpenSSL client retransmits on OpenSSL's own DTLS timer, and the
OpenSSL server answers the client's repeat when OpenSSL's own timer has expired, both by
OpenSSL's clock, which no binding lets a test move.
"""

from __future__ import annotations

import time

import pytest

from loadgen.protocol import dtls_contexts, dtls_factory
from loadgen.protocol.credentials import KeyStore, Secret
from loadgen.protocol.events import HandshakeCompleted

pytestmark = pytest.mark.timeout(30)

KEY = Secret(bytes.fromhex("00112233445566778899aabbccddeeff"))
IDENTITY = b"device-0001"
PEER = b"192.0.2.7:40000"


class Clock:
    """The test's clock: the real one (OpenSSL's timer reads it) plus the time skipped by hand."""

    def __init__(self, *, skip: bool) -> None:
        self.skip = skip
        self.skipped = 0.0

    def now(self) -> float:
        return time.monotonic() + self.skipped

    def wait(self, seconds: float) -> None:
        if self.skip:
            self.skipped += seconds
        else:
            time.sleep(seconds)


def _completed(engine: dtls_factory.ClientEngine | dtls_factory.ServerEngine) -> bool:
    return any(isinstance(e, HandshakeCompleted) for e in iter(engine.next_event, None))


@pytest.mark.parametrize("server_native", [True, False], ids=["server-loadgen", "server-openssl"])
@pytest.mark.parametrize("client_native", [True, False], ids=["client-loadgen", "client-openssl"])
@pytest.mark.parametrize("lost", ["server-hello-flight", "server-finished-flight"])
def test_a_lost_server_flight_is_recovered_by_the_clients_retransmission(
        client_native: bool, server_native: bool, lost: str) -> None:
    ctx = dtls_contexts.server_context(KeyStore(table={IDENTITY: KEY}), native=server_native)
    client = dtls_factory.client_engine(dtls_contexts.client_context(native=client_native),
                                        lambda hint: (IDENTITY, KEY))
    clock = Clock(skip=client_native and server_native)  # OpenSSL's timers read the real clock
    client.start(clock.now())
    (hello,) = client.datagrams_to_send()
    engine, (hvr,) = dtls_factory.accept(ctx, hello, PEER, clock.now())
    assert engine is None
    client.receive_datagram(hvr, clock.now())
    (hello,) = client.datagrams_to_send()
    server, flight = dtls_factory.accept(ctx, hello, PEER, clock.now())
    assert server is not None and flight
    sent_again = 0  # server flights after the one that was lost
    if lost == "server-hello-flight":
        dropped = True  # the ServerHello flight never arrives
    else:
        dropped = False  # the first CCS + Finished will not arrive
        for datagram in flight:
            client.receive_datagram(datagram, clock.now())
    client_done = server_done = False
    deadline = clock.now() + 10
    while not client_done:
        assert clock.now() < deadline, "handshake never completed without the server's timer"
        to_server = client.datagrams_to_send()
        if not to_server:
            # Only the client's timer runs, as against the reference server.
            timer = client.get_timer()
            assert timer is not None, "the client stopped retransmitting"
            clock.wait(min(timer - clock.now(), 2.5) + 0.01)
            client.handle_timer(clock.now())
            continue
        for datagram in to_server:
            server.receive_datagram(datagram, clock.now())
        server_done |= _completed(server)
        replies = server.datagrams_to_send()
        if not replies:
            continue
        if not dropped:  # the server's CCS + Finished, the first time
            assert server_done
            dropped = True
            continue
        sent_again += 1
        for datagram in replies:
            client.receive_datagram(datagram, clock.now())
        client_done |= _completed(client)
    assert server_done and sent_again >= 1
