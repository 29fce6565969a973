"""Client associations against faults and hostile servers: one broken association ends alone.

An engine that raises (a bug, or input no check foresaw) ends only its own association, with
``internal-error`` counted once for the attempt that was in flight; the event loop and the
other associations go on. Warnings whose text carries a number the server chooses (reply
sizes) share one throttle key, and a TLS server that never ends its reply line cannot make
the client buffer without bound.
"""

from __future__ import annotations

import logging
import socket as stdsocket
import time
from collections.abc import Iterator
from typing import Any

import gevent
import pytest
from gevent import socket

from loadgen.protocol import dtls_contexts, dtls_factory
from loadgen.protocol.credentials import KeyStore, Secret
from loadgen.protocol.errors import InternalError
from loadgen.protocol.openssl.tls_contexts import TlsOptions, client_context, server_context
from loadgen.scenario.model import DtlsConfig, Expect, PingConfig
from loadgen.servers.tls import TlsServer
from loadgen.stats.facts import LogSink, Message
from loadgen.stats.sink import StatsSink
from loadgen.traffic.tracker import traffic_plan
from loadgen.transport import ssl_socket
from loadgen.transport.dtls_association import DtlsAssociation
from loadgen.transport.ssl_link import State
from loadgen.transport.ssl_socket import SslSocket
from loadgen.transport.tls_association import MAX_REPLY_LINE, TlsAssociation

pytestmark = pytest.mark.timeout(60)

KEY = Secret(bytes.fromhex("000102030405060708090a0b0c0d0e0f"))
#: What the injected bug carries in its arguments: it must never reach a message.
PEER_BYTES = "peer-chosen \\x17\\xfe\\xfd"
PING = traffic_plan(PingConfig(interval=0.1, jitter=0.0, expect=Expect("echo"), max_missed=10**6))


class Recorder(StatsSink):
    """A StatsSink that also keeps the messages."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def record(self, fact: object) -> None:
        super().record(fact)  # type: ignore[arg-type]
        if isinstance(fact, Message):
            self.messages.append(fact.text)


class Breaking:
    """An engine that behaves like ``real`` until ``when(real)`` says so, then raises in ``method``."""

    def __init__(self, real: Any, method: str, when: Any) -> None:
        self._real, self._method, self._when = real, method, when
        self.raised = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._real, name)
        if name != self._method:
            return attribute

        def maybe_raise(*args: Any, **kwargs: Any) -> Any:
            if self._when(self._real):
                self.raised += 1
                raise RuntimeError(PEER_BYTES)
            return attribute(*args, **kwargs)

        return maybe_raise


def _always(real: Any) -> bool:
    return True


def _once_established(real: Any) -> bool:
    return bool(real.handshake_done)


#: identity -> (engine method that raises, when): which fault each broken association meets.
FAULTS = {
    b"bad-handshake": ("receive_datagram", _always),  # the server's first flight
    b"bad-ping": ("receive_datagram", _once_established),  # the reply to the first ping
    b"bad-timer": ("handle_timer", _always),  # the first retransmission (its server never answers)
}


def _wait_for_more_pings(recorders: list[Recorder], more: int = 5, timeout: float = 10.0) -> list[int]:
    """Wait (bounded) until each good association has answered ``more`` further pings."""
    before = [rec.pings.completed for rec in recorders]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(
            rec.pings.completed < b + more for rec, b in zip(recorders, before, strict=True)):
        gevent.sleep(0.05)
    return before


def _good_ones_went_on(recorders: list[Recorder], pings_before: list[int]) -> None:
    for rec, before in zip(recorders, pings_before, strict=True):
        assert rec.handshakes.completed == 1 and rec.handshakes.failed == 0, rec.handshakes
        assert rec.pings.failed == 0 and rec.pings.completed >= before + 5, (before, rec.pings.completed)


def _assert_one_internal_error(rec: Recorder, error: Any, kind: str) -> None:
    assert isinstance(error, InternalError) and error.code == "internal-error", repr(error)
    assert "RuntimeError" in str(error) and "peer-chosen" not in str(error), str(error)
    failed = rec.kinds[kind]
    assert dict(failed.failures) == {"internal-error": 1}, (kind, failed.failures)
    other = rec.pings if kind == "handshake" else rec.handshakes
    assert other.failed == 0
    assert failed.in_flight == 0 and rec.pings.in_flight == 0
    said = [m for m in rec.messages if "internal" in m]
    assert len(said) == 1 and "RuntimeError" in said[0] and "peer-chosen" not in said[0], rec.messages


def test_dtls_engine_that_raises_ends_only_its_association(monkeypatch: pytest.MonkeyPatch) -> None:
    from loadgen.servers.dtls import DtlsServer

    server = DtlsServer(KeyStore(shared=KEY)).start()
    silent = socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)  # a server that never answers
    silent.bind(("127.0.0.1", 0))
    real_engine = dtls_factory.client_engine
    engines: dict[bytes, Breaking] = {}
    context = dtls_contexts.client_context()

    def client_engine(ctx: Any, choose: Any, **kwargs: Any) -> Any:
        engine = real_engine(ctx, choose, **kwargs)
        identity = choose(None)[0]
        if identity not in FAULTS:
            return engine
        engines[identity] = Breaking(engine, *FAULTS[identity])
        return engines[identity]

    monkeypatch.setattr(dtls_factory, "client_engine", client_engine)
    settings = DtlsConfig(handshake_timeout=20.0, retransmit_cap=0.3)
    try:
        def association(identity: bytes, rec: Recorder) -> DtlsAssociation:
            address = silent.getsockname() if identity == b"bad-timer" else server.address
            return DtlsAssociation(identity.decode(), "local", address, context, rec, identity=identity, key=KEY,
                                   settings=settings, ping=PING)

        good = [Recorder() for _ in range(3)]
        broken = {identity: Recorder() for identity in FAULTS}
        greenlets = {identity: gevent.spawn(association(identity, rec).run) for identity, rec in broken.items()}
        keep = [gevent.spawn(association(f"good-{i}".encode(), rec).run) for i, rec in enumerate(good)]
        gevent.joinall(list(greenlets.values()), timeout=10)
        assert all(g.ready() for g in greenlets.values()), "a broken association did not end"
        before = _wait_for_more_pings(good)  # the loop goes on: the good ones keep pinging
        gevent.killall(keep, timeout=5)
    finally:
        server.stop()
        silent.close()
    assert all(engine.raised == 1 for engine in engines.values()), {k: e.raised for k, e in engines.items()}
    _assert_one_internal_error(broken[b"bad-handshake"], greenlets[b"bad-handshake"].get(), "handshake")
    _assert_one_internal_error(broken[b"bad-timer"], greenlets[b"bad-timer"].get(), "handshake")
    _assert_one_internal_error(broken[b"bad-ping"], greenlets[b"bad-ping"].get(), "ping")
    assert broken[b"bad-ping"].handshakes.completed == 1
    _good_ones_went_on(good, before)


@pytest.fixture
def tls_server() -> Iterator[TlsServer]:
    context = server_context(TlsOptions(), keys=KeyStore(shared=KEY), hint=b"loadgen")
    server = TlsServer(context, reply="echo").start()
    yield server
    server.stop()


def test_tls_engine_that_raises_ends_only_its_association(tls_server: TlsServer,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real_client = ssl_socket.TlsEngine.client
    faults = {"bad-handshake.test": ("receive_data", _always), "bad-ping.test": ("receive_data", _once_established)}

    class Engines(ssl_socket.TlsEngine):  # everything as the real class, but client() may break
        @classmethod
        def client(cls, context: Any, *, server_name: str | None = None, **kwargs: Any) -> Any:
            engine = real_client(context, server_name=server_name, **kwargs)
            return Breaking(engine, *faults[server_name]) if server_name in faults else engine

    monkeypatch.setattr(ssl_socket, "TlsEngine", Engines)
    context = client_context(TlsOptions(), psk_mode=True)

    def association(name: str, rec: Recorder) -> TlsAssociation:
        return TlsAssociation(name, "tls-local", tls_server.address, context, rec, identity=name.encode(), key=KEY,
                              server_name=f"{name}.test", ping=PING)

    good = [Recorder() for _ in range(3)]
    broken = {name: Recorder() for name in ("bad-handshake", "bad-ping")}
    greenlets = {name: gevent.spawn(association(name, rec).run) for name, rec in broken.items()}
    keep = [gevent.spawn(association(f"good-{i}", rec).run) for i, rec in enumerate(good)]
    gevent.joinall(list(greenlets.values()), timeout=10)
    assert all(g.ready() for g in greenlets.values()), "a broken association did not end"
    for name, greenlet in greenlets.items():
        assert greenlet.successful(), f"{name}: run() raised {greenlet.exception!r}"
    before = _wait_for_more_pings(good)
    gevent.killall(keep, timeout=5)
    _assert_one_internal_error(broken["bad-handshake"], greenlets["bad-handshake"].get(), "handshake")
    _assert_one_internal_error(broken["bad-ping"], greenlets["bad-ping"].get(), "ping")
    assert broken["bad-ping"].handshakes.completed == 1
    _good_ones_went_on(good, before)


# --- throttle keys ---------------------------------------------------------------------------


def test_reply_sizes_chosen_by_the_server_share_one_throttle_key(caplog: pytest.LogCaptureFixture) -> None:
    sink = LogSink()  # burst 10 per 5 s interval: the loop below takes far less than 5 s
    with caplog.at_level(logging.WARNING, logger="loadgen"):
        for size in range(10_000):
            name = f"device-{size % 7:05d}"
            sink.record(Message(logging.WARNING, name, f"{name}: unexpected or late reply of {size} bytes"))
    assert 1 <= len(caplog.records) <= 10, len(caplog.records)


def test_messages_that_differ_only_by_device_name_share_one_key(caplog: pytest.LogCaptureFixture) -> None:
    sink = LogSink()
    with caplog.at_level(logging.ERROR, logger="loadgen"):
        for i in range(3_000):  # the name is inside the error text too, not only in front of it
            name = f"gw-{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}{chr(97 + i // 676)}"
            text = f"{name}: handshake error - socket-error: {name}: cannot connect UDP socket to 127.0.0.1:{i}"
            sink.record(Message(logging.ERROR, name, text))
    assert 1 <= len(caplog.records) <= 10, len(caplog.records)


def test_different_kinds_of_messages_keep_their_own_keys(caplog: pytest.LogCaptureFixture) -> None:
    sink = LogSink()
    with caplog.at_level(logging.WARNING, logger="loadgen"):
        for i in range(100):
            sink.record(Message(logging.WARNING, "d", f"d: unexpected or late reply of {i} bytes"))
            sink.record(Message(logging.WARNING, "d", "d: zero-length datagram received?"))
    texts = [r.getMessage() for r in caplog.records]
    assert sum("zero-length" in t for t in texts) == 10 and sum("late reply" in t for t in texts) == 10


# --- memory per TLS association -----------------------------------------------------------------


def test_tls_reply_line_without_end_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that answers a ping with an endless line: the ping fails, the buffer stays bounded."""
    server_ctx = server_context(TlsOptions(), keys=KeyStore(shared=KEY), hint=b"loadgen")
    listener = socket.socket(stdsocket.AF_INET, stdsocket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    sent = [0]
    peak = [0]

    def hostile() -> None:
        conn, _ = listener.accept()
        sock = SslSocket(server_ctx, conn)
        if not sock.start_server_handshake(5.0):
            return
        if not sock.can_read_line():  # the first ping (it may have come with the client's Finished)
            sock.wait_for_ready_read(5.0)
        while sock.state is State.CONNECTED and sent[0] < 64 * MAX_REPLY_LINE:
            sock.write(b"x" * 16384)  # never a newline
            sent[0] += 16384
            sock.flush(5.0)
        sock.close()

    real_receive = SslSocket._receive

    def receive(self: SslSocket, timeout: float | None) -> bool:
        result = real_receive(self, timeout)
        peak[0] = max(peak[0], self.bytes_available)
        return result

    monkeypatch.setattr(SslSocket, "_receive", receive)
    real_take_lines = TlsAssociation._take_lines

    def take_lines(self: TlsAssociation, data: bytes) -> None:  # the client's own line buffer
        try:
            real_take_lines(self, data)
        finally:
            peak[0] = max(peak[0], len(self._in))

    monkeypatch.setattr(TlsAssociation, "_take_lines", take_lines)
    server = gevent.spawn(hostile)
    rec = Recorder()
    context = client_context(TlsOptions(), psk_mode=True)
    assoc = TlsAssociation("dev", "tls", listener.getsockname(), context, rec, identity=b"dev", key=KEY,
                           ping=traffic_plan(PingConfig(interval=30.0, jitter=0.0, timeout=30.0,
                                                        expect=Expect("echo"))))
    try:
        error = gevent.spawn(assoc.run).get(timeout=20)
    finally:
        server.kill()
        listener.close()
    assert error is not None and error.code == "protocol-violation", repr(error)
    assert dict(rec.pings.failures) == {"protocol-violation": 1}
    assert peak[0] <= MAX_REPLY_LINE + 128 * 1024, peak[0]
    assert sent[0] < 64 * MAX_REPLY_LINE  # it ended the association instead of reading on


def test_tls_server_that_never_answers_ends_the_association_after_max_missed() -> None:
    """As for DTLS: unanswered pings in a row end it (and what it queues for a server that never
    reads stays a few pings, instead of one more ping every interval for ever)."""
    server_ctx = server_context(TlsOptions(), keys=KeyStore(shared=KEY), hint=b"loadgen")
    listener = socket.socket(stdsocket.AF_INET, stdsocket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def silent() -> None:
        conn, _ = listener.accept()
        sock = SslSocket(server_ctx, conn)
        if sock.start_server_handshake(5.0):
            gevent.sleep(30)  # never reads, never answers
        sock.abort()

    server = gevent.spawn(silent)
    rec = Recorder()
    context = client_context(TlsOptions(), psk_mode=True)
    assoc = TlsAssociation("dev", "tls", listener.getsockname(), context, rec, identity=b"dev", key=KEY,
                           ping=traffic_plan(PingConfig(interval=0.1, jitter=0.0, timeout=0.1, expect=Expect("echo"),
                                                        max_missed=3)))
    try:
        error = gevent.spawn(assoc.run).get(timeout=10)
    finally:
        server.kill()
        listener.close()
    assert error is not None and error.code == "ping-timeout" and "3 pings in a row" in str(error), repr(error)
    assert dict(rec.pings.failures) == {"ping-timeout": 3} and rec.pings.in_flight == 0


def test_reading_the_queue_after_an_icmp_error_is_bounded() -> None:
    """After ICMP port unreachable the association reads what is queued, for a close_notify: a
    server that keeps the queue full must not keep it reading (nor queueing events) for ever."""

    class Flooded:
        recvs = 0

        def recv(self, size: int) -> bytes:
            Flooded.recvs += 1
            if Flooded.recvs > 100_000:
                raise AssertionError("still reading the queue after 100,000 datagrams")
            return b"\x17" * 40

        def close(self) -> None:
            pass

    class Engine:
        closed = False
        handshake_done = False
        events: list[object] = []

        def receive_datagram(self, data: bytes, now: float) -> None:
            self.events.append(object())  # what a real engine queues per datagram (DataReceived, ...)

        def next_event(self) -> object | None:
            return self.events.pop() if self.events else None

    assoc = DtlsAssociation("dev", "t", ("127.0.0.1", 9), dtls_contexts.client_context(), Recorder(), identity=b"dev",
                            key=KEY)
    assoc._sock, assoc._engine = Flooded(), Engine()  # type: ignore[assignment]
    error = assoc._refused()
    assert error.code == "connection-refused"
    assert Flooded.recvs <= 1000 and not Engine.events
