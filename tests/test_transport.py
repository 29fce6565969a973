"""DtlsAssociation and DtlsServer over real loopback sockets, in one process."""

from __future__ import annotations

import errno

import gevent
import pytest
from lifetimes import assert_freed_when_ended

from loadgen.protocol import dtls_contexts
from loadgen.protocol.credentials import KeyStore, Secret
from loadgen.scenario.model import Expect, Payload, PingConfig
from loadgen.servers.dtls import DtlsServer
from loadgen.stats.facts import Message
from loadgen.stats.sink import StatsSink
from loadgen.traffic.payloads import binary_payload
from loadgen.traffic.tracker import traffic_plan
from loadgen.transport.dtls_association import DtlsAssociation

KEY = Secret(bytes.fromhex("000102030405060708090a0b0c0d0e0f"))


class Recorder(StatsSink):
    """A StatsSink that also keeps the messages (Qt's info/warning/error)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def record(self, fact: object) -> None:
        super().record(fact)  # type: ignore[arg-type]
        if isinstance(fact, Message):
            self.messages.append(fact.text)


@pytest.fixture
def server():
    srv = DtlsServer(KeyStore(shared=KEY), reply="qt").start()
    yield srv
    srv.stop()


def run_for(assoc: DtlsAssociation, seconds: float) -> None:
    g = gevent.spawn(assoc.run)
    gevent.sleep(seconds)
    g.kill()


def test_source_address_and_qt_style_reply(server: DtlsServer) -> None:
    rec = Recorder()
    assoc = DtlsAssociation(
        "dev-1", "local", server.address, dtls_contexts.client_context(), rec, identity=b"dev-1", key=KEY,
        source_address="127.0.0.5",
        ping=traffic_plan(PingConfig(interval=0.2, jitter=0.0,
                                     expect=Expect("prefix", prefix=b"to dev-1: I am dev-1"))),
    )
    run_for(assoc, 1.0)
    assert rec.handshakes.completed == 1
    assert rec.pings.completed >= 4 and rec.pings.failed == 0
    assert server.stats.handshakes == 1
    assert rec.messages[:4] == [
        "dev-1: connecting UDP socket first ...",
        "dev-1: starting a handshake",
        "dev-1: providing pre-shared key ...",
        "dev-1: encrypted connection established!",
    ]


def test_the_client_socket_never_blocks_the_event_loop(server: DtlsServer) -> None:
    """Thousands of associations share one loop: a socket that blocked on a full buffer would stop
    them all. It is non-blocking from socket() on (no setblocking: two fcntl calls per handshake)."""
    assoc = DtlsAssociation("dev-1", "local", server.address, dtls_contexts.client_context(), Recorder(),
                            identity=b"dev-1", key=KEY)
    assoc.start()
    try:
        assert assoc._sock is not None and not assoc._sock.getblocking() and assoc._sock.gettimeout() == 0.0
    finally:
        assoc.close()


def test_server_keeps_peer_by_source_address(server: DtlsServer) -> None:
    rec = Recorder()
    assocs = [
        DtlsAssociation(f"d{i}", "local", server.address, dtls_contexts.client_context(), rec, identity=b"d%d" % i,
                        key=KEY, source_address=f"127.0.0.{10 + i}",
                        ping=traffic_plan(PingConfig(interval=5, jitter=0.0)))
        for i in range(3)
    ]
    greenlets = [gevent.spawn(a.run) for a in assocs]
    gevent.sleep(0.5)
    assert sorted(a[0] for a in server.peer_addresses()) == ["127.0.0.10", "127.0.0.11", "127.0.0.12"]
    gevent.killall(greenlets)
    gevent.sleep(0.2)
    # Killing an association sends close_notify: the server drops its state.
    assert server.peer_count == 0 and server.stats.closed_by_peer == 3


def test_server_shutdown_alert_stops_pinging() -> None:
    srv = DtlsServer(KeyStore(shared=KEY)).start()
    rec = Recorder()
    assoc = DtlsAssociation("dev", "local", srv.address, dtls_contexts.client_context(), rec, identity=b"dev", key=KEY,
                            ping=traffic_plan(PingConfig(interval=0.1, jitter=0.0, expect=Expect("echo"))))
    g = gevent.spawn(assoc.run)
    gevent.sleep(0.5)
    srv.stop()
    error = g.get(timeout=2)
    assert error is not None and error.code == "peer-closed"
    assert "dev: shutdown alert received" in rec.messages
    assert rec.pings.in_flight == 0  # an outstanding ping is failed, not left hanging


def test_binary_ping_sequence_field() -> None:
    srv = DtlsServer(KeyStore(shared=KEY)).start()  # echo server
    rec = Recorder()
    coap_ping = binary_payload(bytes.fromhex("40000000"), seq_offset=2, seq_width=2)
    assoc = DtlsAssociation("dev", "local", srv.address, dtls_contexts.client_context(), rec, identity=b"dev", key=KEY,
                            ping=traffic_plan(PingConfig(interval=0.1, jitter=0.0,
                                                         payload=Payload(text=None, data=bytes.fromhex("40000000"),
                                                                         seq_offset=2, seq_width=2),
                                                         expect=Expect("echo"))))
    run_for(assoc, 0.6)
    srv.stop()
    assert coap_ping("dev", 258) == bytes.fromhex("40000102")
    assert rec.pings.completed >= 3 and rec.pings.failed == 0
    assert rec.pings.received_bytes > 0


def test_a_socket_that_cannot_connect_is_a_counted_failure() -> None:
    # 192.0.2.1 (TEST-NET-1) is no local address: binding to it fails like a source
    # address that ran out of ports does. It must show in the stats, not vanish.
    rec = Recorder()
    assoc = DtlsAssociation("dev-x", "local", ("127.0.0.1", 9), dtls_contexts.client_context(), rec, identity=b"dev-x",
                            key=KEY, source_address="192.0.2.1")
    error = assoc.run()
    assert error is not None and error.code == "socket-error"
    assert "cannot connect UDP socket to 127.0.0.1:9" in str(error)
    assert rec.handshakes.attempted == 1 and rec.handshakes.failed == 1
    assert dict(rec.handshakes.failures) == {"socket-error": 1}


def test_a_tcp_client_socket_never_blocks_the_event_loop() -> None:
    """The TLS associations' TCP socket: non-blocking from socket() on, its connect begun."""
    import socket as stdsocket

    from loadgen.transport.tcp import open_stream

    with stdsocket.create_server(("127.0.0.1", 0)) as listener:
        sock, code = open_stream(stdsocket.AF_INET, stdsocket.SOCK_STREAM, 0, listener.getsockname(), None)
        try:
            assert code in (0, errno.EINPROGRESS) and not sock.getblocking() and sock.gettimeout() == 0.0
            assert sock.type == stdsocket.SOCK_STREAM  # the flag is not part of the type Python reports
        finally:
            sock.close()


def test_an_address_literal_resolves_without_a_lookup_and_each_caller_gets_its_own_list() -> None:
    """The TLS associations' resolve(): a literal's addresses are computed once (cached: no resolver
    thread, no IDNA codec per connection), and each call returns a fresh list, which the association
    consumes; a name still goes to the resolver."""
    import socket as stdsocket

    from loadgen.transport.tcp import resolve

    first = resolve("127.0.0.1", 5684, 1.0)
    assert [(family, address) for family, _, _, _, address in first] == [(stdsocket.AF_INET, ("127.0.0.1", 5684))]
    first.pop()  # what TlsAssociation does with its copy
    assert len(resolve("127.0.0.1", 5684, 1.0)) == 1
    assert {address[:2] for *_, address in resolve("::1", 443, 1.0)} == {("::1", 443)}
    named = resolve("localhost", 5684, 5.0)  # /etc/hosts: the resolver, not the literal path
    assert named and all(address[1] == 5684 for *_, address in named)


@pytest.mark.parametrize("native", [True, False], ids=["loadgen-handshake", "openssl-handshake"])
@pytest.mark.parametrize("when", ["pinging", "handshaking", "failed"])
def test_an_ended_association_is_freed_without_a_garbage_collection(server: DtlsServer, when: str,
                                                                    native: bool) -> None:
    """Load processes freeze their heap, and a frozen object in a reference cycle is never freed:
    an association that ended (closed while pinging or mid-handshake, or failed: its error's
    traceback held its frames, ``self`` among them) must go with its last reference."""
    key = Secret(bytes(16)) if when == "failed" else KEY  # the wrong key: the handshake fails
    assert_freed_when_ended(lambda: DtlsAssociation(
        "dev-9", "local", server.address, dtls_contexts.client_context(native=native), Recorder(),
        identity=b"dev-9", key=key, ping=traffic_plan(PingConfig(interval=0.05, jitter=0.0, expect=Expect("echo")))),
        when, received=300)
