"""The reference TLS server's event loop (watchers on gevent's loop, no greenlet per connection).

Attacks on what one connection may cost the others: a client that never reads its answers
(bounded output, then closed), hostile peers among 50 (garbage, half a record, a byte at a
time), a connection whose read callback raises, a stop() facing a client that does not read,
and what the server keeps per connection (no greenlet). Also the lines that come with the
peer's close_notify (counted, not answered) and a line over ``max_line`` (a bounded buffer).
"""

from __future__ import annotations

import gc
import logging
import socket as stdsocket
import time
from collections.abc import Callable, Iterator

import gevent
import greenlet
import pytest
from gevent import socket
from tls_servers import Pki, make_pki

from loadgen.protocol.openssl.tls import TlsEngine
from loadgen.protocol.openssl.tls_contexts import TlsContext, TlsOptions, client_context, server_context
from loadgen.servers.tls import TlsServer
from loadgen.transport.ssl_link import State
from loadgen.transport.ssl_socket import SslSocket

pytestmark = pytest.mark.timeout(120)

#: Bytes a hostile peer chose: they must never show in a log line.
MARKER = "PEER-CHOSEN-BYTES"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def start_server(pki: Pki) -> Iterator[Callable[..., TlsServer]]:
    servers: list[TlsServer] = []

    def start(**kwargs: object) -> TlsServer:
        server = TlsServer(server_context(TlsOptions(cert_file=pki.server_pem)), **kwargs)  # type: ignore[arg-type]
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(params=["1.2", "1.3"])
def client_ctx(pki: Pki, request: pytest.FixtureRequest) -> TlsContext:
    """TLS 1.2 (the server's light engines, loadgen's record layer) and 1.3 (OpenSSL's records)."""
    return client_context(TlsOptions(verify="peer", ca_file=pki.ca_file, max_version=request.param))


@pytest.fixture
def clients(client_ctx: TlsContext) -> Iterator[Callable[..., SslSocket]]:
    """Factory of connected SslSockets (``rcvbuf``: a small receive buffer, set before the
    connect so that the window stays small), all aborted at teardown."""
    made: list[SslSocket] = []

    def connect(server: TlsServer, rcvbuf: int | None = None) -> SslSocket:
        tcp = socket.socket(stdsocket.AF_INET, stdsocket.SOCK_STREAM)
        if rcvbuf is not None:
            tcp.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, rcvbuf)
        tcp.settimeout(5)
        tcp.connect(server.address)
        sock = SslSocket(client_ctx, tcp, server_name="localhost")
        made.append(sock)
        assert sock.start_client_handshake(5), sock.error_string
        return sock

    yield connect
    for sock in made:
        sock.abort()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.01)
    return True


def ping(sock: SslSocket, line: bytes = b"ping\n", timeout: float = 5.0) -> bytes:
    """Write one line, return the answer line (b"" when none came in time)."""
    sock.write(line)
    deadline = time.monotonic() + timeout
    while not sock.can_read_line() and time.monotonic() < deadline:
        if not sock.wait_for_ready_read(deadline - time.monotonic()):
            break
    return sock.read_line()


def live_greenlets() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)


def engine_client(server: TlsServer, ctx: TlsContext, rcvbuf: int | None = None) -> tuple[socket.socket, TlsEngine]:
    """A handshaken client engine over a plain gevent socket: the test writes exact bytes
    (``rcvbuf``: a small receive buffer, set before the connect so that the window stays small)."""
    tcp = stdsocket.socket(stdsocket.AF_INET, stdsocket.SOCK_STREAM)
    if rcvbuf is not None:
        tcp.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, rcvbuf)
    sock = socket.socket(fileno=tcp.detach())
    sock.settimeout(5)
    sock.connect(server.address)
    engine = TlsEngine.client(ctx, server_name="localhost")
    engine.start()
    sock.sendall(engine.data_to_send())
    while not engine.handshake_done:
        data = sock.recv(65536)
        assert data, engine.error
        engine.receive_data(data)
        if out := engine.data_to_send():
            sock.sendall(out)
    while engine.next_event() is not None:
        pass
    return sock, engine


def test_a_client_that_never_reads_is_closed_at_the_output_bound_while_another_is_served(
        start_server, clients) -> None:
    """Lines keep coming, answers pile up: over max_queued the connection closes (not-reading),
    and meanwhile (and after) another client's pings are answered. Without the bound the server
    would queue every answer: the 64 MiB sent here (a few MiB fit the kernel's buffers)."""
    server = start_server(max_queued=256 * 1024)
    hog = clients(server, rcvbuf=4096)
    good = clients(server)
    line = b"h" * 16383 + b"\n"
    sent = 0
    while server.stats.failures["not-reading"] == 0 and sent < 64 * 1024 * 1024:
        for _ in range(16):
            hog.write(line)
        sent += 16 * len(line)
        assert ping(good) == b"ping\n", (sent, server.stats)
        gevent.sleep(0)
    assert server.stats.failures["not-reading"] == 1, (sent, server.stats)
    assert wait_until(lambda: server.connection_count == 1), server.connection_count
    for _ in range(3):
        assert ping(good) == b"ping\n"
    assert sum(server.stats.failures.values()) == 1, server.stats


def test_one_read_of_empty_lines_from_a_client_that_never_reads_stays_within_the_output_bound(
        start_server, client_ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    """64 KiB of newlines in one go is 65,536 answers, ~2 MB of records from a single read (30 bytes
    per empty one): the server flushes as it answers, so what it ever holds for a client that does
    not read stays near max_queued, and past it the rest goes unanswered (not-reading)."""
    bound = 128 * 1024
    server = start_server(max_queued=bound)
    largest = [0]
    drain = TlsEngine.data_to_send

    def measured(engine: TlsEngine) -> bytes:
        data = drain(engine)
        if engine is not client:
            largest[0] = max(largest[0], len(data))
        return data

    sock, client = engine_client(server, client_ctx, rcvbuf=4096)
    try:
        monkeypatch.setattr(TlsEngine, "data_to_send", measured)
        rounds = 0
        # The kernel's buffers take a few MB of answers first: rounds until the bound is what is left.
        while server.stats.failures["not-reading"] == 0 and rounds < 16:
            rounds += 1
            for _ in range(4):
                client.send(b"\n" * 16384)  # four full records of empty lines: 65,536 lines
            sock.sendall(drain(client))
            assert wait_until(lambda lines=rounds * 65536: server.stats.lines == lines or server.stats.failures), \
                server.stats
    finally:
        sock.close()
    assert server.stats.failures == {"not-reading": 1}, (rounds, server.stats)
    assert largest[0] <= bound, largest[0]  # without flushing as it answers: ~2 MB in one piece
    assert server.stats.pings < server.stats.lines, server.stats  # past the bound, no more answers


def test_fifty_connections_one_hostile_peer_each_way_the_others_answered(start_server, clients,
                                                                          client_ctx) -> None:
    """47 clients ping while three hostile peers share the server: TLS garbage, half a record
    header (then silence), and a handshaken client trickling a byte at a time, never a newline."""
    server = start_server(handshake_timeout=2.0, idle_timeout=60.0)
    good = [clients(server) for _ in range(47)]
    garbage = socket.create_connection(server.address, timeout=5)
    garbage.sendall(MARKER.encode() * 100)
    half = socket.create_connection(server.address, timeout=5)
    half.sendall(b"\x16\x03\x01")  # half a record header
    trickler = clients(server)
    assert wait_until(lambda: server.connection_count == 49 and server.stats.failures), server.stats
    assert garbage.recv(65536) is not None  # an alert, or the close: either way it is over
    for rounds in range(3):
        for sock in good:
            sock.write(b"ping %d\n" % rounds)  # all in flight at once
        trickler.write(b"x")
        for sock in good:
            deadline = time.monotonic() + 5
            while not sock.can_read_line() and time.monotonic() < deadline:
                sock.wait_for_ready_read(deadline - time.monotonic())
            assert sock.read_line() == b"ping %d\n" % rounds
    assert server.stats.pings == 3 * 47 and server.stats.lines == 3 * 47, server.stats
    # The silent half record ends at its handshake timeout; the trickler costs nothing meanwhile.
    assert wait_until(lambda: server.stats.failures["handshake-timeout"] == 1, 6), server.stats
    assert half.recv(100) == b""
    assert server.connection_count == 48 and trickler.state is State.CONNECTED
    assert sum(server.stats.failures.values()) == 2, server.stats  # garbage (a handshake error) and half
    assert ping(good[0]) == b"ping\n"
    garbage.close()
    half.close()


@pytest.mark.parametrize("ending", ["close", "abort"])
def test_connections_are_frozen_out_of_full_collections_and_a_closed_one_goes_without_one(
        start_server, clients, ending: str) -> None:
    """The server holds thousands of long-lived connections: while they grow, the heap is frozen each
    second (full collections would walk every one). That is safe only because a connection holds
    no reference cycle, frozen ones never being collected: one the client closed (close_notify) or
    aborted (a reset) goes by reference counting alone."""
    import weakref

    gc.unfreeze()  # whatever an earlier test froze: the count below is this server's doing
    server = start_server()
    socks = [clients(server) for _ in range(5)]
    for sock in socks:
        assert ping(sock) == b"ping\n"
    try:
        assert wait_until(lambda: gc.get_freeze_count() > 0, timeout=5), "the server never froze its heap"
        refs = [weakref.ref(conn) for conn in list(server._connections)]  # noqa: SLF001
        assert len(refs) == 5
        gc.disable()
        for sock in socks:
            if ending == "close":
                sock.close()  # close_notify, then the socket
            else:
                sock.abort()
        assert wait_until(lambda: server.connection_count == 0)
        gevent.sleep(0.1)  # the loop's callbacks (the close, the deadline's wake-up) have run
        assert [ref() for ref in refs] == [None] * 5
    finally:
        gc.enable()
        gc.unfreeze()


def test_no_greenlet_per_connection(start_server, clients) -> None:
    server = start_server()
    before = live_greenlets()
    socks = [clients(server) for _ in range(50)]
    for sock in socks:
        assert ping(sock) == b"ping\n"
    assert server.connection_count == 50 and server.stats.handshakes == 50
    after = live_greenlets()
    assert after - before < 5, (before, after)  # the old server: one per connection (+50)


def test_a_read_callback_that_raises_drops_that_connection_only(start_server, clients,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    server = start_server()
    others = [clients(server) for _ in range(5)]
    bad = clients(server)
    assert wait_until(lambda: server.connection_count == 6)
    conn = list(server._connections)[-1]  # noqa: SLF001 - the last one admitted: bad's

    def boom(data: bytes) -> None:
        raise KeyError(MARKER)

    conn.engine.receive_data = boom  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="loadgen.server"):
        bad.write(b"boom\n")
        assert wait_until(lambda: server.stats.failures["internal-error"] == 1, 5), server.stats
    assert wait_until(lambda: server.connection_count == 5)
    assert not bad.wait_for_ready_read(3) and bad.state is State.UNCONNECTED
    for sock in others:
        assert ping(sock) == b"ping\n"
    assert ping(clients(server)) == b"ping\n"  # and newcomers
    lines = [r.getMessage() for r in caplog.records if "internal error" in r.getMessage()]
    assert len(lines) == 1 and "KeyError" in lines[0] and MARKER not in lines[0], lines


def test_stop_returns_within_its_timeout_when_a_client_never_reads(start_server, clients) -> None:
    server = start_server(max_queued=256 * 1024 * 1024)
    hog = clients(server, rcvbuf=4096)
    good = clients(server)
    line = b"h" * 16383 + b"\n"

    def queued() -> int:
        return sum(len(c.out) for c in server._connections)  # noqa: SLF001 - what the server holds

    sent = 0
    while queued() < 1024 * 1024 and sent < 256 * 1024 * 1024:
        for _ in range(16):
            hog.write(line)
        sent += 16 * len(line)
        gevent.sleep(0.001)
    assert queued() >= 1024 * 1024, sent
    started = time.monotonic()
    server.stop(timeout=1.0)
    took = time.monotonic() - started
    assert took < 2.0, took
    assert server.connection_count == 0 and not server._closing  # noqa: SLF001 - every socket closed
    assert not good.wait_for_ready_read(3) and good.peer_closed  # its close_notify went out


def test_lines_that_come_with_the_close_notify_are_counted_not_answered(start_server, client_ctx) -> None:
    server = start_server()
    sock, engine = engine_client(server, client_ctx)
    engine.send(b"one\ntwo\n")
    engine.close()
    sock.sendall(engine.data_to_send())  # both records and the close_notify in one segment
    assert wait_until(lambda: server.stats.closed_by_peer == 1), server.stats
    assert server.stats.lines == 2 and server.stats.pings == 0, server.stats
    while sock.recv(65536):  # the server's close_notify in answer (TLS 1.3: its tickets first), then EOF
        pass
    assert server.stats.pings == 0 and server.connection_count == 0
    sock.close()


def test_a_line_over_max_line_closes_the_connection_with_a_bounded_buffer(start_server, clients) -> None:
    server = start_server(max_line=1000)
    sock = clients(server)
    assert ping(sock, b"short\n") == b"short\n"
    sock.write(b"y" * 900)
    gevent.sleep(0.2)
    assert sock.state is State.CONNECTED and server.connection_count == 1
    sock.write(b"y" * 200)  # 1,100 bytes without a newline
    assert wait_until(lambda: server.stats.failures["line-too-long"] == 1), server.stats
    assert not sock.wait_for_ready_read(3) and sock.peer_closed  # closed with close_notify
    assert server.connection_count == 0 and server.stats.lines == 1
