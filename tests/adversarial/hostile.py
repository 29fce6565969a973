"""A scripted hostile DTLS client: real UDP sockets on loopback, hand-built records.

What an attacker can do without a key: the real cookie exchange from its own address
(:meth:`HostilePeer.cookie_exchange`), then a cookie'd ClientHello with any record and
message sequence number (:meth:`HostilePeer.send_hello`), which creates per-peer state
on the server, then raw handshake fragments (they reach the server's reassembly),
early epoch-1 records and plaintext alerts.

What an attacker with the key can do (a legitimate device gone bad): a full real
handshake (:class:`Session`, which drives loadgen's own client engine over the socket),
after which records are sealed with the session's real keys, so any plaintext, content
type or sequence number authenticates and reaches everything behind the record layer.

The per-process figures the tests bound come from /proc (:func:`rss_kib`,
:func:`hwm_kib`, :func:`cpu_seconds`).
"""

from __future__ import annotations

import os
import random
import socket as _stdsocket
import time
from collections.abc import Iterable
from pathlib import Path

from gevent import socket

from loadgen.protocol.credentials import Secret
from loadgen.protocol.native import records
from loadgen.protocol.native.client import PskClientEngine
from loadgen.protocol.native.keys import NATIVE_SUITES
from loadgen.protocol.native.messages import (
    CLIENT_HELLO,
    CLIENT_KEY_EXCHANGE,
    EXT_EXTENDED_MASTER_SECRET,
    HELLO_VERIFY_REQUEST,
    HS_HEADER_LEN,
    RENEGOTIATION_SCSV,
    VERSION,
    handshake_message,
)
from loadgen.protocol.native.record_layer import RecordLayer

#: What loadgen's server accepts by default (and what our hellos offer).
SUITES = (NATIVE_SUITES["PSK-AES128-GCM-SHA256"], NATIVE_SUITES["PSK-AES128-CCM8"])
MAX_RECORD_SEQ = (1 << 48) - 1
MAX_MESSAGE_SEQ = 0xFFFF
#: Longest a hostile peer waits for an answer it expects.
REPLY_TIMEOUT = 2.0


# -- /proc figures -------------------------------------------------------------


def _status_kib(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def rss_kib(pid: int | str = "self") -> int:
    """Resident memory of a process, KiB."""
    return _status_kib(pid, "VmRSS")


def hwm_kib(pid: int | str = "self") -> int:
    """Peak resident memory of a process (since start or :func:`reset_hwm`), KiB."""
    return _status_kib(pid, "VmHWM")


def reset_hwm(pid: int | str = "self") -> None:
    """Restart the peak-RSS count of a process of ours at its current RSS (Linux clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_seconds(pid: int | str = "self") -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- hand-built wire bytes -------------------------------------------------------


def record(content_type: int, payload: bytes, *, seq: int = 0, epoch: int = 0, version: int = records.DTLS_1_2,
           length: int | None = None) -> bytes:
    """One record; ``length`` may lie about the payload."""
    n = len(payload) if length is None else length
    return records.HEADER.pack(content_type, version, epoch, seq >> 16, seq & 0xFFFF, n) + payload


def fragment(msg_type: int, length: int, message_seq: int, offset: int, data: bytes) -> bytes:
    """One handshake fragment: header and ``data``, for a message of ``length`` bytes."""
    return (bytes((msg_type,)) + length.to_bytes(3, "big") + message_seq.to_bytes(2, "big")
            + offset.to_bytes(3, "big") + len(data).to_bytes(3, "big") + data)


def client_hello_body(cookie: bytes, *, client_random: bytes | None = None, suites: Iterable[int] = SUITES,
                      extensions: bytes | None = None) -> bytes:
    """A DTLS 1.2 PSK ClientHello body like loadgen's own client sends."""
    codes = b"".join(code.to_bytes(2, "big") for code in (*suites, RENEGOTIATION_SCSV))
    if extensions is None:
        extensions = EXT_EXTENDED_MASTER_SECRET.to_bytes(2, "big") + b"\x00\x00"
    return b"".join((
        VERSION, client_random or os.urandom(32), b"\x00", bytes((len(cookie),)), cookie,
        len(codes).to_bytes(2, "big"), codes, b"\x01\x00", len(extensions).to_bytes(2, "big"), extensions,
    ))


def client_hello(cookie: bytes = b"", *, record_seq: int = 0, message_seq: int = 0, body: bytes | None = None) -> bytes:
    """A whole ClientHello datagram with chosen record and message sequence numbers."""
    message = handshake_message(CLIENT_HELLO, message_seq, body if body is not None else client_hello_body(cookie))
    return record(records.HANDSHAKE, message, seq=record_seq)


def plaintext_alert(level: int, description: int, *, seq: int = 1) -> bytes:
    """An epoch-0 alert record: unauthenticated, anyone can send it."""
    return record(records.ALERT, bytes((level, description)), seq=seq)


def cookie_of(datagram: bytes) -> bytes | None:
    """The cookie of a HelloVerifyRequest datagram, or None if it is not one."""
    if len(datagram) < records.HEADER_LEN + HS_HEADER_LEN + 3 or datagram[0] != records.HANDSHAKE:
        return None
    body = datagram[records.HEADER_LEN + HS_HEADER_LEN :]
    if datagram[records.HEADER_LEN] != HELLO_VERIFY_REQUEST or len(body) < 3 + body[2]:
        return None
    return body[3 : 3 + body[2]]


def handshake_types(datagram: bytes) -> list[int]:
    """The handshake message type of each epoch-0 handshake record in a datagram."""
    return [raw[records.HEADER_LEN] for content_type, epoch, raw in records.split(datagram)
            if content_type == records.HANDSHAKE and epoch == 0 and len(raw) > records.HEADER_LEN]


def one_byte_fragments(next_seq: int, rng: random.Random) -> list[bytes]:
    """Datagrams (~64 KB) of 1-byte fragments of one 16 KiB message whose last byte never
    comes, in records of at most 2^14 bytes: the first datagram also fills the rest of it,
    so a missing-byte mask scanned from the start costs 16 KiB per fragment."""
    total = 16384
    head = [record(records.HANDSHAKE, fragment(CLIENT_KEY_EXCHANGE, total, next_seq, 0, b"\x00" * 15000), seq=2),
            record(records.HANDSHAKE, fragment(CLIENT_KEY_EXCHANGE, total, next_seq, 15000, b"\x00" * 1383), seq=3)]
    per_record = 16000 // 13
    datagrams = []
    seq = 4
    for first in (True, False, False, False, False, False, False, False):
        out = list(head) if first else []
        while sum(map(len, out)) + 16000 <= 65000:
            payload = b"".join(fragment(CLIENT_KEY_EXCHANGE, total, next_seq, rng.randrange(total - 1), b"\x00")
                               for _ in range(per_record))
            out.append(record(records.HANDSHAKE, payload, seq=seq))
            seq += 1
        datagrams.append(b"".join(out))
    return datagrams



def small_fragment_datagrams(next_seq: int, rng: random.Random, *, length: int = 4000, count: int = 8) -> list[bytes]:
    """Datagrams (~3.7 KB) of 32 records of 8 one-byte fragments each, of a message of
    ``length`` bytes (a size any cap on message length admits) whose last byte never
    comes; the first datagram also fills the rest. The shape a server that caps records
    per datagram and fragments per record still has to reassemble in full."""
    head = record(records.HANDSHAKE, fragment(CLIENT_KEY_EXCHANGE, length, next_seq, 0, b"\x00" * (length - 1)),
                  seq=2)
    datagrams = []
    seq = 3
    for n in range(count):
        out = [head] if n == 0 else []
        while len(out) < 32:
            payload = b"".join(fragment(CLIENT_KEY_EXCHANGE, length, next_seq, rng.randrange(length - 1), b"\x00")
                               for _ in range(8))
            out.append(record(records.HANDSHAKE, payload, seq=seq))
            seq += 1
        datagrams.append(b"".join(out))
    return datagrams

# -- a hostile peer: one source address ----------------------------------------------


class Ports:
    """Source addresses that are never used twice: many hostile peers close their socket
    after the cookie'd ClientHello while the server keeps their state, and a port the
    kernel hands out again would be a peer the server already knows (no cookie exchange).
    Walks the ports of 127.0.0.2 and up, from a random start, skipping ports in use."""

    def __init__(self, first_host: int = 2, hosts: int = 8, low: int = 1024, high: int = 65535) -> None:
        self._hosts = [f"127.0.0.{first_host + i}" for i in range(hosts)]
        self._low, self._high = low, high
        self._next = random.randrange(low, high)
        self._host = 0
        self._left = (high - low) * hosts

    def bind(self, sock: socket.socket) -> None:
        """Bind ``sock`` to a source address not used before by this instance."""
        while self._left > 0:
            self._left -= 1
            port = self._next
            host = self._hosts[self._host]
            self._next += 1
            if self._next > self._high:
                self._next = self._low
                self._host = (self._host + 1) % len(self._hosts)
            try:
                sock.bind((host, port))
                return
            except OSError:
                continue  # taken by someone else
        raise AssertionError("out of hostile source addresses")


class HostilePeer:
    """One UDP socket (one source address and port) aimed at a server."""

    def __init__(self, address: tuple[str, int], *, source: str = "127.0.0.1", ports: Ports | None = None) -> None:
        self.address = address
        self.sock = socket.socket(_stdsocket.AF_INET, _stdsocket.SOCK_DGRAM)
        if ports is not None:
            ports.bind(self.sock)
        else:
            self.sock.bind((source, 0))
        self.sock.connect(address)
        self.sent = 0

    def __enter__(self) -> HostilePeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, datagram: bytes) -> None:
        try:
            self.sock.send(datagram)
            self.sent += 1
        except OSError:
            pass  # e.g. ICMP port unreachable from an earlier datagram: the server is checked elsewhere

    def recv(self, timeout: float = REPLY_TIMEOUT) -> bytes | None:
        """The next datagram from the server, or None after ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except (TimeoutError, OSError):
            return None

    def drain(self, timeout: float = 0.0) -> list[bytes]:
        """Every datagram already queued (waiting up to ``timeout`` for the first)."""
        found = []
        while (data := self.recv(timeout)) is not None:
            found.append(data)
            timeout = 0.0
        return found

    def cookie_exchange(self, *, record_seq: int = 0, attempts: int = 3) -> bytes:
        """Send a cookieless ClientHello, return the cookie of the HelloVerifyRequest."""
        for _ in range(attempts):
            self.send(client_hello(record_seq=record_seq))
            deadline = time.monotonic() + REPLY_TIMEOUT
            while (left := deadline - time.monotonic()) > 0:
                reply = self.recv(left)
                if reply is None:
                    break
                if (cookie := cookie_of(reply)) is not None:
                    return cookie
        raise AssertionError(f"no HelloVerifyRequest from {self.address}")

    def send_hello(self, cookie: bytes, *, record_seq: int = 1, message_seq: int = 1,
                   wait: float | None = REPLY_TIMEOUT) -> list[bytes]:
        """Send a ClientHello with ``cookie``; the server's answers (its ServerHello flight)
        within ``wait`` seconds (None: do not wait)."""
        self.send(client_hello(cookie, record_seq=record_seq, message_seq=message_seq))
        if wait is None:
            return []
        return self.drain(wait)

    def half_open(self, *, record_seq: int = 1, message_seq: int = 1, wait: float | None = REPLY_TIMEOUT
                  ) -> list[bytes]:
        """Cookie exchange, then the cookie'd ClientHello: the server now holds state for us.
        Returns the server's answers ([] also when the cookie exchange went unanswered:
        an attack on a server that stopped answering goes on; the tests check the server)."""
        try:
            cookie = self.cookie_exchange(attempts=1)
        except AssertionError:
            return []
        return self.send_hello(cookie, record_seq=record_seq, message_seq=message_seq, wait=wait)


def got_server_hello(replies: list[bytes]) -> bool:
    """True when the replies hold a ServerHello: the cookie checked out and the server keeps state."""
    return any(2 in handshake_types(d) for d in replies)


# -- a session with the real key ---------------------------------------------------


class ChosenHelloEngine(PskClientEngine):
    """loadgen's own client engine, except that its cookie'd ClientHello carries chosen
    message and record sequence numbers (the rest of the handshake follows them)."""

    def __init__(self, suites: tuple[int, ...], identity: bytes, key: Secret, *, hello_seq: int | None = None,
                 record_seq: int | None = None) -> None:
        super().__init__(suites, lambda hint: (identity, key))
        self.chosen_hello_seq = hello_seq
        self.chosen_record_seq = record_seq

    def _send_hello(self) -> None:
        super()._send_hello()
        if not self._cookie or (self.chosen_hello_seq is None and self.chosen_record_seq is None):
            return
        # Replace the ClientHello just queued (the cookieless one went out already).
        self._outgoing.clear()
        if self.chosen_record_seq is not None:
            self._epoch0_seq = self.chosen_record_seq
        if self.chosen_hello_seq is not None:
            self._hello_seq = self.chosen_hello_seq
            self._hello = handshake_message(CLIENT_HELLO, self._hello_seq, self._hello[HS_HEADER_LEN:])
        self._new_flight([(records.HANDSHAKE, 0, self._hello)])


class Session:
    """A real handshake with the real key over a :class:`HostilePeer`'s socket; afterwards
    records sealed with the session's keys carry whatever plaintext we choose."""

    def __init__(self, peer: HostilePeer, key: Secret, *, identity: bytes = b"hostile",
                 suites: tuple[int, ...] = SUITES, hello_seq: int | None = None, record_seq: int | None = None
                 ) -> None:
        self.peer = peer
        self.engine = ChosenHelloEngine(suites, identity, key, hello_seq=hello_seq, record_seq=record_seq)
        self.received: list[bytes] = []  # plaintext of authentic application data from the server

    def handshake(self, *, timeout: float = 5.0, after_server_hello: Iterable[bytes] = ()) -> bool:
        """Run the handshake; ``after_server_hello`` datagrams are sent once the ServerHello
        flight arrived, before our answer. True when it completed."""
        engine = self.engine
        engine.start(time.monotonic())
        extra = list(after_server_hello)
        deadline = time.monotonic() + timeout
        self._flush()
        while not engine.handshake_done and not engine.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            timer = engine.get_timer()  # absolute, on the clock we give the engine
            wait = left if timer is None else max(timer - time.monotonic(), 0.0)
            data = self.peer.recv(min(left, wait, 0.5))
            if data is None:
                engine.handle_timer(time.monotonic())
                self._flush()
                continue
            if extra and got_server_hello([data]):
                for datagram in extra:
                    self.peer.send(datagram)
                extra = []
            engine.receive_datagram(data, time.monotonic())
            self._flush()
            while engine.next_event() is not None:
                pass
        return engine.handshake_done

    def _flush(self) -> None:
        for datagram in self.engine.datagrams_to_send():
            self.peer.send(datagram)

    @property
    def layer(self) -> RecordLayer:
        layer = self.engine._records
        assert layer is not None, "no keys yet: handshake first"
        return layer

    def seal(self, plaintext: bytes, *, content_type: int = records.APPLICATION_DATA, seq: int | None = None
             ) -> bytes:
        """One authentic record; ``seq`` sets its sequence number (later records count on from it)."""
        if seq is not None:
            self.layer._write_seq = seq
        return self.layer.seal(content_type, plaintext)

    @property
    def write_seq(self) -> int:
        return self.layer._write_seq

    def send(self, plaintext: bytes, **kwargs: object) -> None:
        self.peer.send(self.seal(plaintext, **kwargs))  # type: ignore[arg-type]

    def receive(self, timeout: float = REPLY_TIMEOUT) -> list[bytes]:
        """Authentic application data from the server within ``timeout`` (all queued datagrams)."""
        found = []
        for datagram in self.peer.drain(timeout):
            for content_type, plaintext in self.layer.open_datagram(datagram):
                if content_type == records.APPLICATION_DATA:
                    found.append(plaintext)
        self.received += found
        return found

    def ping(self, payload: bytes, timeout: float = REPLY_TIMEOUT) -> bool:
        """Send ``payload`` sealed; True when the server echoed it."""
        self.send(payload)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if payload in self.receive(min(left, 0.2)):
                return True
        return False


def established(address: tuple[str, int], key: Secret, *, identity: bytes = b"hostile", source: str = "127.0.0.1",
                **kwargs: int) -> Session:
    """A session with the real key after a completed handshake (fails the test otherwise)."""
    session = Session(HostilePeer(address, source=source), key, identity=identity, **kwargs)  # type: ignore[arg-type]
    if not session.handshake():
        session.peer.close()
        raise AssertionError(f"hostile session: no handshake with {address} ({session.engine.error})")
    return session
