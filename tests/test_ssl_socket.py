"""SslSocket over loopback against the reference TlsServer (in this process): QtSSLSocket's features."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import gevent
import pytest
from gevent import socket
from tls_servers import Pki, free_tcp_port, make_pki

from loadgen.protocol.credentials import KeyStore, Secret
from loadgen.protocol.errors import LocalProtocolError
from loadgen.protocol.openssl.tls_contexts import TlsContext, TlsOptions, client_context, server_context
from loadgen.servers.tls import TlsServer
from loadgen.transport.ssl_link import Mode, State
from loadgen.transport.ssl_socket import SslSocket

pytestmark = pytest.mark.timeout(60)

KEY = Secret(bytes.fromhex("000102030405060708090a0b0c0d0e0f"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def start_server(pki: Pki) -> Iterator[Callable[..., TlsServer]]:
    servers: list[TlsServer] = []

    def start(pem=None, **kwargs) -> TlsServer:
        options = kwargs.pop("options", TlsOptions(cert_file=pem or pki.server_pem))
        server = TlsServer(server_context(options, keys=kwargs.pop("keys", None)), **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def client_ctx(pki: Pki) -> TlsContext:
    return client_context(TlsOptions(verify="peer", ca_file=pki.ca_file))


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.01)
    return True


def read_until(sock: SslSocket, size: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while sock.bytes_available < size and time.monotonic() < deadline:
        sock.wait_for_ready_read(deadline - time.monotonic())
    assert sock.bytes_available >= size, (sock.bytes_available, sock.error_string)


def test_connect_read_lines_and_close(start_server, client_ctx) -> None:
    server = start_server()
    sock = SslSocket(client_ctx)
    states: list[State] = []
    sock.state_changed.connect(states.append)
    assert sock.mode is Mode.CLIENT and sock.state is State.UNCONNECTED
    assert sock.connect_to_host("localhost", server.address[1], timeout=5)
    assert states == [State.HOST_LOOKUP, State.CONNECTING, State.HANDSHAKING, State.CONNECTED]
    assert sock.connected.count == 1 and sock.error is None and sock.error_string == ""
    assert sock.protocol_version == "TLSv1.3" and sock.cipher and not sock.session_reused
    assert sock.ciphers()  # what the context allows
    peer = sock.peer_certificate()
    assert peer is not None and peer.subject.endswith("/CN=server.test") and len(peer.sha256_fingerprint) == 95
    assert sock.local_certificate() is None  # no client certificate

    sock.write(b"one\ntwo\nthr")
    read_until(sock, 8)
    assert sock.bytes_available == 8 and sock.can_read_line()
    assert sock.read_line() == b"one\n" and sock.read_line() == b"two\n"
    assert not sock.can_read_line() and sock.read_line() == b""
    sock.write(b"ee\n")
    read_until(sock, 6)
    assert sock.ready_read.count >= 2
    assert sock.read_all() == b"three\n" and sock.bytes_available == 0

    sock.close()
    assert sock.state is State.UNCONNECTED and states[-1] is State.UNCONNECTED
    assert sock.delayed_close_finished.count == 0  # nothing was pending
    assert wait_until(lambda: server.stats.closed_by_peer == 1)
    assert server.stats.pings == 3
    with pytest.raises(LocalProtocolError):
        sock.write(b"late\n")


def test_delayed_close_flushes_pending_data(start_server, client_ctx) -> None:
    server = start_server()
    sock = SslSocket(client_ctx)
    assert sock.connect_to_host("127.0.0.1", server.address[1], timeout=5)
    line = b"x" * 16383 + b"\n"
    count = 2000  # 32 MiB: more than the kernel takes at once
    sock.write(line * count)
    assert sock.bytes_to_write > 0
    sock.close()
    assert sock.state is State.CLOSING
    assert wait_until(lambda: sock.delayed_close_finished.count == 1, 30)
    assert sock.state is State.UNCONNECTED and sock.bytes_to_write == 0
    assert wait_until(lambda: server.stats.lines == count), server.stats
    assert sock.bytes_available == 0  # close() drops unread data


def test_peer_close_is_reported(start_server, client_ctx) -> None:
    server = start_server()
    sock = SslSocket(client_ctx)
    assert sock.connect_to_host("localhost", server.address[1], timeout=5)
    sock.write(b"last words\n")
    read_until(sock, 11)
    gevent.spawn_later(0.1, server.stop)
    assert not sock.wait_for_ready_read(5)  # ends with the close, not by timeout
    assert sock.connection_closed.count == 1 and sock.peer_closed
    assert sock.state is State.UNCONNECTED and sock.error is None
    assert sock.read_line() == b"last words\n"  # data read before the close stays readable


def test_tcp_close_during_handshake(client_ctx) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    closer = gevent.spawn(lambda: listener.accept()[0].close())
    sock = SslSocket(client_ctx)
    try:
        assert not sock.connect_to_host("127.0.0.1", listener.getsockname()[1], timeout=5)
        assert sock.error in ("peer-closed", "connection-reset"), sock.error_string
        assert sock.error_occurred.count == 1
    finally:
        closer.kill()
        listener.close()


def test_handshake_timeout(client_ctx) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts (kernel backlog), never answers
    sock = SslSocket(client_ctx)
    try:
        started = time.monotonic()
        assert not sock.connect_to_host("127.0.0.1", listener.getsockname()[1], timeout=0.3)
        assert sock.error == "handshake-timeout" and time.monotonic() - started < 2
    finally:
        listener.close()


def test_connection_refused(client_ctx) -> None:
    sock = SslSocket(client_ctx)
    started = time.monotonic()
    assert not sock.connect_to_host("127.0.0.1", free_tcp_port(), timeout=5)
    assert sock.error == "connection-refused" and time.monotonic() - started < 1
    assert sock.state is State.UNCONNECTED


def test_cert_check_failed_signal(start_server, client_ctx, pki: Pki) -> None:
    server = start_server(pki.expired_pem)
    sock = SslSocket(client_ctx)
    checks: list = []
    sock.cert_check_failed.connect(lambda code, text: checks.append((code, text)))
    assert not sock.connect_to_host("localhost", server.address[1], timeout=5)
    assert checks == [(10, "certificate has expired")]
    assert sock.error == "cert-expired" and "certificate has expired" in sock.error_string
    peer = sock.peer_certificate()  # the certificate that failed, as Qt shows it
    assert peer is not None and peer.not_after.timestamp() < time.time()
    assert wait_until(lambda: sum(server.stats.failures.values()) == 1)


def test_wrap_connected_sockets_both_modes(pki: Pki, client_ctx) -> None:
    """Wrap already connected TCP sockets and start each side's handshake explicitly."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    server_ctx = server_context(TlsOptions(cert_file=pki.server_pem))

    def serve() -> bytes:
        raw, _ = listener.accept()
        conn = SslSocket(server_ctx, raw)
        assert conn.mode is Mode.SERVER
        assert conn.start_server_handshake(5) and conn.accepted.count == 1
        while not conn.can_read_line() and conn.wait_for_ready_read(5):
            pass
        line = conn.read_line()
        conn.write(line.upper())
        conn.close()
        return line

    server = gevent.spawn(serve)
    raw = socket.create_connection(listener.getsockname())
    sock = SslSocket(client_ctx, raw, server_name="server.test")
    try:
        assert sock.state is State.UNCONNECTED
        assert sock.start_client_handshake(5) and sock.state is State.CONNECTED
        sock.write(b"hello\n")
        while not sock.can_read_line() and sock.wait_for_ready_read(5):
            pass
        assert sock.read_line() == b"HELLO\n"
        assert server.get(timeout=5) == b"hello\n"
        assert not sock.wait_for_ready_read(5) and sock.peer_closed
    finally:
        sock.close()
        server.kill()
        listener.close()


def test_psk_socket_and_qt_style_reply(start_server) -> None:
    server = start_server(options=TlsOptions(), keys=KeyStore(shared=KEY), reply="qt")
    for version in ("1.2", "1.3"):
        ctx = client_context(TlsOptions(min_version=version, max_version=version), psk_mode=True)
        sock = SslSocket(ctx, choose=lambda hint: (b"dev7", KEY))
        assert sock.connect_to_host("127.0.0.1", server.address[1], timeout=5), sock.error_string
        assert sock.protocol_version == f"TLSv{version}"
        sock.write(b"ping\n")
        read_until(sock, 14)
        assert sock.read_line() == b"to dev7: ping\n"
        sock.close()


def server_engines(server: TlsServer) -> list:
    return [conn.engine for conn in server._connections]  # noqa: SLF001 - how the server holds them


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_the_servers_tls_1_2_connections_go_light_and_name_the_clients_certificate(
        start_server, pki: Pki, version: str) -> None:
    """The reference server's TLS 1.2 AEAD connections run on loadgen's record layer after the
    handshake (cheaper per ping); its "qt" reply still names the client's certificate."""
    options = TlsOptions(cert_file=pki.server_pem, verify="require", ca_file=pki.ca_file)
    server = start_server(options=options, reply="qt")
    ctx = client_context(TlsOptions(verify="peer", ca_file=pki.ca_file, cert_file=pki.client_pem,
                                    min_version=version, max_version=version))
    sock = SslSocket(ctx)
    assert sock.connect_to_host("localhost", server.address[1], timeout=5), sock.error_string
    for _ in range(2):
        sock.write(b"ping\n")
        read_until(sock, 20)
        assert sock.read_line() == b"to client.test: ping\n"
    assert [engine.light for engine in server_engines(server)] == [version == "1.2"]
    sock.close()
    assert wait_until(lambda: server.stats.closed_by_peer == 1)
    assert server.stats.pings == 2 and not server.stats.failures


def test_resumption_through_sockets(start_server, client_ctx) -> None:
    server = start_server()
    session = None
    reused = []
    for _ in range(2):
        sock = SslSocket(client_ctx, session=session)
        assert sock.connect_to_host("localhost", server.address[1], timeout=5)
        sock.write(b"x\n")  # the reply comes after the TLS 1.3 tickets
        read_until(sock, 2)
        reused.append(sock.session_reused)
        sock.close()
        session = sock.session
    assert reused == [False, True]
    assert wait_until(lambda: server.stats.resumed == 1)
