"""TlsAssociation against ``loadgen serve tls`` in another process: handshakes, pings, resumption, errors."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gevent
import pytest
from lifetimes import assert_freed_when_ended
from tls_servers import LoadgenTlsServer, Pki, free_tcp_port, make_pki, start_loadgen_tls_server

from loadgen.protocol.credentials import Secret
from loadgen.protocol.openssl.tls import SessionCache
from loadgen.protocol.openssl.tls_contexts import TlsContext, TlsOptions, client_context
from loadgen.scenario.model import Expect, Payload, PingConfig, TlsConfig
from loadgen.stats.facts import Ended, Message
from loadgen.stats.sink import StatsSink
from loadgen.traffic.tracker import traffic_plan
from loadgen.transport.tls_association import TlsAssociation

pytestmark = pytest.mark.timeout(120)

KEY_HEX = "000102030405060708090a0b0c0d0e0f"
KEY = Secret(bytes.fromhex(KEY_HEX))


class Recorder(StatsSink):
    """A StatsSink that also keeps the messages and counts Ended facts."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []
        self.ended = 0

    def record(self, fact: object) -> None:
        super().record(fact)  # type: ignore[arg-type]
        if isinstance(fact, Message):
            self.messages.append(fact.text)
        elif isinstance(fact, Ended):
            self.ended += 1


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., LoadgenTlsServer]]:
    started: list[LoadgenTlsServer] = []

    def start(*args: str, key_hex: str | None = None) -> LoadgenTlsServer:
        server = start_loadgen_tls_server(*args, key_hex=key_hex, workdir=tmp_path / f"server{len(started)}")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def verifying(pki: Pki, **options) -> TlsContext:
    return client_context(TlsOptions(verify="peer", ca_file=pki.ca_file, **options))


def run_for(assoc: TlsAssociation, seconds: float) -> None:
    greenlet = gevent.spawn(assoc.run)
    gevent.sleep(seconds)
    greenlet.kill(block=True, timeout=5)
    assert greenlet.ready()


def test_handshake_and_pings_are_counted(start_server, pki: Pki) -> None:
    server = start_server("--cert", str(pki.server_pem), "--reply", "qt")
    rec = Recorder()
    assoc = TlsAssociation("dev-1", "tls-local", server.address, verifying(pki), rec, server_name="server.test",
                           source_address="127.0.0.7",
                           ping=traffic_plan(PingConfig(interval=0.2, jitter=0.0,
                                                        expect=Expect("prefix", prefix=b"to ?: I am dev-1"))))
    run_for(assoc, 1.1)
    assert rec.handshakes.completed == 1 and rec.handshakes.failed == 0 and rec.handshakes.resumed == 0
    assert rec.pings.completed >= 4 and rec.pings.failed == 0, rec.pings.failures
    assert rec.pings.sent_bytes > 0 and rec.pings.received_bytes > 0 and rec.handshakes.sent_bytes > 0
    assert rec.ended == 1
    assert rec.messages[:3] == [
        "dev-1: connecting TCP socket first ...",
        "dev-1: starting a handshake",
        "dev-1: encrypted connection established!",
    ]
    summary = server.stop_and_summarize()
    assert summary.handshakes == 1 and summary.pings >= 4 and not summary.failures, summary.line


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_psk_association(start_server, version: str) -> None:
    server = start_server(key_hex=KEY_HEX)
    rec = Recorder()
    ctx = client_context(TlsOptions(min_version=version, max_version=version), psk_mode=True)
    assoc = TlsAssociation("dev-2", "tls-psk", server.address, ctx, rec, identity=b"dev-2", key=KEY,
                           ping=traffic_plan(PingConfig(interval=0.2, jitter=0.0, expect=Expect("echo"))))
    run_for(assoc, 0.7)
    assert rec.handshakes.completed == 1 and rec.pings.completed >= 2 and rec.pings.failed == 0
    # TLS 1.2's records went through loadgen's record layer (OpenSSL's connection freed); 1.3's through OpenSSL.
    assert assoc._engine is not None and assoc._engine.light is (version == "1.2")  # noqa: SLF001
    assert "dev-2: providing pre-shared key ..." in rec.messages
    assert KEY_HEX not in " ".join(rec.messages)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("when", ["pinging", "handshaking", "failed"])
def test_an_ended_association_is_freed_without_a_garbage_collection(start_server, version: str, when: str) -> None:
    """Load processes freeze their heap (gc.freeze) while users spawn and once they are up, and a
    frozen object in a reference cycle is never freed: the TLS engine kept its PSK chooser (the
    association's bound method), so every association a reconnect or the churn workload replaced
    leaked (~15 objects each, the engine and OpenSSL's connection among them). Ended by close
    while pinging or mid-handshake, or by a failure, it must go with its last reference."""
    server = start_server(key_hex=KEY_HEX)
    ctx = client_context(TlsOptions(min_version=version, max_version=version), psk_mode=True)
    key = Secret(bytes(16)) if when == "failed" else KEY  # the wrong key: the handshake fails
    assert_freed_when_ended(lambda: TlsAssociation(
        "dev-9", "tls-psk", server.address, ctx, StatsSink(), identity=b"dev-9", key=key,
        ping=traffic_plan(PingConfig(interval=0.05, jitter=0.0, expect=Expect("echo")))), when, received=200)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_reconnect_resumes_the_session(start_server, pki: Pki, version: str) -> None:
    server = start_server("--cert", str(pki.server_pem))
    ctx = verifying(pki, max_version=version)
    sessions = SessionCache()  # one per device: kept across its associations
    rec = Recorder()

    def make() -> TlsAssociation:
        return TlsAssociation("dev-3", "t", server.address, ctx, rec, server_name="localhost", sessions=sessions,
                              ping=traffic_plan(PingConfig(interval=0.1, jitter=0.0, expect=Expect("echo"))))

    assert make().handshake_once() is None
    second = make()
    assert second.handshake_once() is None and second.resumed
    run_for(make(), 0.4)  # a pinging association resumes too, and leaves a session behind
    run_for(make(), 0.4)
    assert rec.handshakes.completed == 4 and rec.handshakes.resumed == 3
    assert rec.pings.failed == 0
    summary = server.stop_and_summarize()
    assert summary.handshakes == 4 and summary.resumed == 3, summary.line


def test_no_resumption_when_off(start_server, pki: Pki) -> None:
    server = start_server("--cert", str(pki.server_pem))
    ctx = verifying(pki, resumption=False)
    sessions = SessionCache()
    rec = Recorder()
    for _ in range(2):
        TlsAssociation("dev-4", "t", server.address, ctx, rec, server_name="localhost",
                       sessions=sessions).handshake_once()
    assert rec.handshakes.completed == 2 and rec.handshakes.resumed == 0 and len(sessions) == 0


def test_connection_refused_at_once() -> None:
    rec = Recorder()
    assoc = TlsAssociation("dev-5", "nowhere", ("127.0.0.1", free_tcp_port()), client_context(), rec,
                           settings=TlsConfig(handshake_timeout=10))
    started = time.monotonic()
    error = assoc.run()
    assert error is not None and error.code == "connection-refused"
    assert time.monotonic() - started < 1.0
    assert dict(rec.handshakes.failures) == {"connection-refused": 1} and rec.handshakes.in_flight == 0
    assert rec.ended == 0


def test_a_connect_still_in_progress_when_connect_returns_completes_and_handshakes(start_server) -> None:
    """Over loopback connect() usually completes the connection itself (the association then skips
    the write watcher); where it does not, the write watcher says when. Here a listener whose accept
    queue is full drops the SYN (the kernel sends it again after ~1 s); once the queue has room, the
    connection comes up and is relayed to a real server, and the handshake completes."""
    from gevent import socket

    server = start_server(key_hex=KEY_HEX)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # room for one queued connection: the filler's
    filler = socket.create_connection(listener.getsockname())
    rec = Recorder()
    ctx = client_context(TlsOptions(min_version="1.2", max_version="1.2"), psk_mode=True)
    assoc = TlsAssociation("dev-15", "t", listener.getsockname(), ctx, rec, identity=b"dev-15", key=KEY,
                           settings=TlsConfig(handshake_timeout=15))
    relays: list[gevent.Greenlet] = []

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        while data := source.recv(65536):
            sink.sendall(data)

    def accept_and_relay() -> None:
        listener.accept()[0].close()  # the filler: the queue has room for the association's SYN now
        conn, _ = listener.accept()
        upstream = socket.create_connection(server.address)
        relays.extend([gevent.spawn(pipe, conn, upstream), gevent.spawn(pipe, upstream, conn)])

    greenlet = gevent.spawn(assoc.handshake_once)
    try:
        gevent.sleep(0.3)
        assert rec.handshakes.in_flight == 1 and assoc.bytes_sent == 0  # still connecting: nothing sent yet
        acceptor = gevent.spawn(accept_and_relay)
        error = greenlet.get(timeout=10)
        acceptor.get(timeout=1)
    finally:
        greenlet.kill()
        gevent.killall(relays)
        filler.close()
        listener.close()
    assert error is None, error
    assert rec.handshakes.completed == 1 and not rec.handshakes.failures


def test_certificate_check_failure_is_reported(start_server, pki: Pki) -> None:
    server = start_server("--cert", str(pki.other_server_pem))
    rec = Recorder()
    error = TlsAssociation("dev-6", "t", server.address, verifying(pki), rec, server_name="localhost").run()
    assert error is not None and error.code == "cert-untrusted"
    assert dict(rec.handshakes.failures) == {"cert-untrusted": 1}
    assert any("certificate check failed (verify result 20): unable to get local issuer certificate" in m
               for m in rec.messages), rec.messages


def test_server_shutdown_ends_the_association(start_server, pki: Pki) -> None:
    server = start_server("--cert", str(pki.server_pem))
    rec = Recorder()
    assoc = TlsAssociation("dev-7", "t", server.address, verifying(pki), rec, server_name="localhost",
                           ping=traffic_plan(PingConfig(interval=0.1, jitter=0.0, expect=Expect("echo"))))
    greenlet = gevent.spawn(assoc.run)
    try:
        gevent.sleep(0.5)
        server.stop()
        error = greenlet.get(timeout=5)
    finally:
        greenlet.kill()
    assert error is not None and error.code == "peer-closed"
    assert "dev-7: shutdown alert received" in rec.messages
    assert rec.pings.in_flight == 0 and rec.ended == 1


def test_payload_with_newline_is_refused(start_server, pki: Pki) -> None:
    server = start_server("--cert", str(pki.server_pem))
    rec = Recorder()
    assoc = TlsAssociation("dev-8", "t", server.address, verifying(pki), rec, server_name="localhost",
                           ping=traffic_plan(PingConfig(interval=0.1, jitter=0.0,
                                                        payload=Payload(text=None, data=b"a\nb"))))
    error = assoc.run()
    assert error is not None and error.code == "local-error"
    assert rec.pings.failed == 1 and rec.pings.in_flight == 0


@pytest.mark.parametrize(("queue_full", "code"), [(False, "handshake-timeout"), (True, "connect-timeout")])
def test_a_timeout_names_the_phase_it_ran_out_in(queue_full: bool, code: str) -> None:
    """A listener the kernel accepts for but nobody answers: a handshake-timeout. A SYN nobody answers
    (the listener's accept queue is full, so the kernel drops it): a connect-timeout, not a
    handshake-timeout, since the handshake begins only once the connection is up."""
    from gevent import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0 if queue_full else 1)
    filler = socket.create_connection(listener.getsockname()) if queue_full else None  # takes the one place
    rec = Recorder()
    try:
        error = TlsAssociation("dev-9", "t", listener.getsockname(), client_context(), rec,
                               settings=TlsConfig(handshake_timeout=0.5 if queue_full else 0.3)).run()
    finally:
        if filler is not None:
            filler.close()
        listener.close()
    assert error is not None and error.code == code, error
    assert dict(rec.handshakes.failures) == {code: 1}


def test_start_wait_and_close_from_outside(start_server, pki: Pki) -> None:
    server = start_server("--cert", str(pki.server_pem))
    rec = Recorder()
    assoc = TlsAssociation("dev-10", "t", server.address, verifying(pki), rec, server_name="localhost",
                           ping=traffic_plan(PingConfig(interval=0.1, jitter=0.0, expect=Expect("echo"))))
    assoc.start()
    waiter = gevent.spawn(assoc.wait)
    gevent.sleep(0.4)
    waiter.kill(block=True, timeout=5)  # killing the waiter closes the association
    gevent.sleep(0.1)
    assert rec.handshakes.completed == 1 and rec.pings.completed >= 2 and rec.ended == 1
    assert not rec.pings.failures and rec.pings.in_flight <= 1
    summary = server.stop_and_summarize()
    assert summary.failures == {} and summary.handshakes == 1, summary.line


def test_many_concurrent_associations(start_server, pki: Pki) -> None:
    server = start_server("--cert", str(pki.server_pem))
    rec = Recorder()
    ctx = verifying(pki)
    count = 200
    assocs = [TlsAssociation(f"d{i}", "t", server.address, ctx, rec, server_name="localhost",
                             message_level=30,
                             ping=traffic_plan(PingConfig(interval=1.0, jitter=0.0, timeout=5.0,
                                                          expect=Expect("echo"))))
              for i in range(count)]
    greenlets = [gevent.spawn(a.run) for a in assocs]
    try:
        deadline = time.monotonic() + 30
        while rec.pings.completed < count and time.monotonic() < deadline:
            gevent.sleep(0.1)
    finally:
        gevent.killall(greenlets, block=True, timeout=10)
    assert rec.handshakes.completed == count and rec.handshakes.failed == 0, rec.handshakes.failures
    assert rec.pings.completed >= count and rec.pings.failed == 0, rec.pings.failures
    summary = server.stop_and_summarize()
    assert summary.handshakes == count and not summary.failures, summary.line


def test_serve_tls_refuses_bad_options(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    from loadgen.cli import main

    assert main(["serve", "tls", "--port", "0", "--require-client-cert"]) == 2
    assert "--require-client-cert needs --cert" in capsys.readouterr().err
    assert main(["serve", "tls", "--port", "0", "--cert", str(pki.root / "missing.pem")]) == 2
    assert "--cert " in (err := capsys.readouterr().err) and "missing.pem: No such file or directory" in err, err
    garbage = pki.root / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert main(["serve", "tls", "--port", "0", "--cert", str(garbage)]) == 2
    assert "cannot load certificate" in capsys.readouterr().err
