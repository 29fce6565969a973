"""The DTLS 1.2 PSK client handshake in Python, for the AEAD suites our record layer speaks.

Why: through pyOpenSSL, OpenSSL's client handshake costs about 180 us of CPU per
association (``SSL_new``, four ``SSL_do_handshake`` calls, BIO copies, cffi callbacks),
which caps one client process near 3,000 handshakes per second. A plain-PSK handshake
with an AEAD suite is four small flights, a dozen HMACs and two AEAD operations; done
here with :mod:`hmac` and ``cryptography``'s AEADs it costs a fraction of that, and the
association ends up on :class:`~loadgen.protocol.record_layer.RecordLayer` directly.
Other suites (CBC, ECDHE-PSK, ...) keep going through OpenSSL
(:class:`loadgen.protocol.dtls.DtlsEngine`); both engines present the same interface.

The exchange (RFC 6347 4.2, RFC 4279 2)::

    ClientHello                 -->
                                <--  HelloVerifyRequest (cookie)
    ClientHello (cookie)        -->
                                <--  ServerHello, [ServerKeyExchange (hint)], ServerHelloDone
    ClientKeyExchange (identity),
    ChangeCipherSpec, Finished  -->
                                <--  ChangeCipherSpec, Finished

Also implemented: extended master secret (RFC 7627) when the server agrees, the
renegotiation SCSV (RFC 5746), reassembly of fragmented and reordered server
messages, retransmission with fresh record numbers on RFC 6347's doubling timer
(capped at ``retransmit_cap``), and an immediate re-send when the server repeats a
flight we already answered (our answer was lost).
"""

from __future__ import annotations

import functools
import hmac
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..credentials import Secret
from ..errors import HandshakeTimeout, LoadgenError, LocalProtocolError, PskKeyMismatch, error_from_openssl
from . import records
from .events import ConnectionFailed, DataReceived, Event, HandshakeCompleted, alert_received
from .record_layer import SUITES, RecordLayer, prf

#: ``choose(hint) -> (identity, key)`` for one client connection.
PskChooser = Callable[["bytes | None"], "tuple[bytes, Secret]"]

#: UDP payload budget: fits IPv6's 1280-byte minimum path MTU (1280 - 40 - 8 = 1232).
DEFAULT_MTU = 1200
#: Client: the longest an unanswered handshake flight waits before it is sent again.
DEFAULT_RETRANSMIT_CAP = 2.0
#: A client that sent its Finished this many times without an answer probably has the wrong key.
UNANSWERED_FINISHED_LIMIT = 3
#: RFC 6347 4.2.4.1: the timer starts at 1 s and doubles up to 60 s.
INITIAL_TIMEOUT = 1.0
MAX_TIMEOUT = 60.0
#: A server repeat that arrives this soon after we sent our flight crossed it on the wire.
CROSSING_WINDOW = INITIAL_TIMEOUT / 2

#: IANA numbers of the PSK AEAD suites handled natively, by OpenSSL name.
NATIVE_SUITES = {
    "PSK-AES128-GCM-SHA256": 0x00A8,
    "PSK-AES256-GCM-SHA384": 0x00A9,
    "PSK-CHACHA20-POLY1305": 0xCCAB,
    "PSK-AES128-CCM": 0xC0A4,
    "PSK-AES256-CCM": 0xC0A5,
    "PSK-AES128-CCM8": 0xC0A8,
    "PSK-AES256-CCM8": 0xC0A9,
}
_SUITE_NAMES = {code: name for name, code in NATIVE_SUITES.items()}

# Handshake message types (RFC 5246 7.4, RFC 6347 4.3.2).
CLIENT_HELLO, SERVER_HELLO, HELLO_VERIFY_REQUEST = 1, 2, 3
SERVER_KEY_EXCHANGE, SERVER_HELLO_DONE, CLIENT_KEY_EXCHANGE, FINISHED = 12, 14, 16, 20
_HS_HEADER_LEN = 12  # type, length (3), message_seq (2), fragment_offset (3), fragment_length (3)
_EXT_EXTENDED_MASTER_SECRET = 0x0017
_RENEGOTIATION_SCSV = 0x00FF
_VERSION = records.DTLS_1_2.to_bytes(2, "big")
#: Server handshake messages are small with PSK; refuse to buffer anything larger.
_MAX_MESSAGE = 16384
_MAX_BUFFERED = 16

# Alert descriptions we send.
_HANDSHAKE_FAILURE, _DECODE_ERROR, _ILLEGAL_PARAMETER, _UNEXPECTED_MESSAGE, _DECRYPT_ERROR = 40, 50, 47, 10, 51


def native_suites(ciphers: str) -> tuple[int, ...] | None:
    """The suites of an OpenSSL cipher list when this module handles every one, else None."""
    names = [n.strip() for n in ciphers.split(":") if n.strip() and not n.strip().startswith("@")]
    if not names or any(n.upper() not in NATIVE_SUITES for n in names):
        return None
    return tuple(dict.fromkeys(NATIVE_SUITES[n.upper()] for n in names))


def handshake_message(msg_type: int, seq: int, body: bytes) -> bytes:
    """One unfragmented DTLS handshake message (also its form in the transcript hash)."""
    n = len(body).to_bytes(3, "big")
    return bytes((msg_type,)) + n + seq.to_bytes(2, "big") + b"\x00\x00\x00" + n + body


def timeout_error(retransmits: int, finished_sent: int, retransmits_before_finished: int) -> LoadgenError:
    """The error for a handshake that ran out of time.

    DTLS drops records it cannot decrypt, so a wrong key looks like silence after our
    Finished; say so once it is the likely cause: the Finished went out several times
    while every earlier flight was answered at once (after loss on the way, an
    unanswered Finished is more likely loss than a wrong key).
    """
    if finished_sent >= UNANSWERED_FINISHED_LIMIT and retransmits_before_finished == 0:
        return PskKeyMismatch(
            f"peer never answered our Finished ({finished_sent} transmissions): "
            "the pre-shared key is probably wrong"
        )
    return HandshakeTimeout(f"no handshake after {retransmits} retransmissions")


class _Partial:
    """A fragmented handshake message being reassembled."""

    __slots__ = ("msg_type", "body", "missing")

    def __init__(self, msg_type: int, length: int) -> None:
        self.msg_type = msg_type
        self.body = bytearray(length)
        self.missing = bytearray(b"\x01" * length)  # 1 = byte not received yet

    def add(self, offset: int, fragment: bytes) -> bool:
        """Store a fragment; True once the whole message is here."""
        self.body[offset : offset + len(fragment)] = fragment
        self.missing[offset : offset + len(fragment)] = bytes(len(fragment))
        return not any(self.missing)


# Client states.
_HELLO, _SERVER_FLIGHT, _FINISHED, _DONE = range(4)


class PskClientEngine:
    """One client association: the handshake here, then :class:`RecordLayer` for data.

    The same interface as :class:`loadgen.protocol.dtls.DtlsEngine` (aioquic's shape):
    :meth:`start`, :meth:`receive_datagram`, :meth:`datagrams_to_send`,
    :meth:`get_timer` / :meth:`handle_timer`, :meth:`send`, :meth:`close` and
    :meth:`next_event`.
    """

    is_client = True

    def __init__(self, suites: tuple[int, ...], choose: PskChooser, *, mtu: int = DEFAULT_MTU,
                 retransmit_cap: float | None = DEFAULT_RETRANSMIT_CAP) -> None:
        if not suites:
            raise LocalProtocolError("no cipher suite to offer")
        self._suites = suites
        self._choose = choose
        self.mtu = mtu
        self._retransmit_cap = retransmit_cap
        self._events: deque[Event] = deque()
        self._outgoing = bytearray()
        self.handshake_done = False
        self.closed = False
        self.retransmits = 0
        self.error: LoadgenError | None = None
        self._state = _HELLO
        self._client_random = os.urandom(32)
        self._cookie = b""
        self._hello = b""  # our latest ClientHello message: the transcript starts with it
        self._hello_seq = 0  # its message_seq; our later messages follow it
        self._epoch0_seq = 0  # next record sequence number in epoch 0
        self._flight: list[tuple[int, int, bytes]] = []  # (content type, epoch, payload)
        self._interval = INITIAL_TIMEOUT
        self._due: float | None = None
        self._sent_at = 0.0  # when the current flight last went out
        # Server messages by message_seq, complete or being reassembled.
        self._inbox: dict[int, tuple[int, bytes]] = {}
        self._partial: dict[int, _Partial] = {}
        self._next_seq: int | None = None  # the server message we process next (known from ServerHello)
        self._suite_code = 0
        self._hash: Any = None  # running transcript hash, from the ServerHello on
        self._server_random = b""
        self._extended_master_secret = False
        self._hint: bytes | None = None
        self._records: RecordLayer | None = None
        self._expected_server_finished = b""
        self._finished_sent = 0
        self._retransmits_before_finished = 0

    # -- inputs -------------------------------------------------------------

    def start(self) -> None:
        """Begin the handshake: queues the ClientHello."""
        self._send_hello()

    def receive_datagram(self, datagram: bytes) -> None:
        """Feed one datagram from the server; read events with :meth:`next_event`."""
        if self.closed:
            return
        if self.handshake_done:
            self._receive_established(datagram)
            return
        repeated = False
        for rec, raw in records.record_slices(datagram):
            if rec.epoch == 0 and rec.content_type == records.HANDSHAKE:
                repeated |= self._take_fragments(raw[records.HEADER_LEN :])
            elif rec.epoch == 0 and rec.content_type == records.ALERT:
                self._on_alert(raw[records.HEADER_LEN :])
            elif rec.epoch == 1 and self._records is not None and rec.content_type != records.APPLICATION_DATA:
                opened = self._records.open(raw)
                if opened is None:
                    continue  # corrupted or forged: dropped silently, as DTLS does
                if opened[0] == records.ALERT:
                    self._on_alert(opened[1])
                elif opened[0] == records.HANDSHAKE:
                    self._on_server_finished(opened[1])
            # ChangeCipherSpec needs no action: the epoch-1 Finished authenticates itself.
            if self.closed or self.handshake_done:
                return
        state = self._state
        self._advance()
        if (repeated and self._state == state and not self.closed and self._flight
                and time.monotonic() - self._sent_at >= CROSSING_WINDOW):
            # The server repeated a flight we already answered: our answer was lost
            # (RFC 6347 4.2.4). A repeat that arrives right after we sent it again
            # crossed our copy on the wire and needs no answer.
            self._transmit_flight(retransmission=True)

    def get_timer(self) -> float | None:
        """Seconds until :meth:`handle_timer` is due (flight retransmission), or None."""
        if self._due is None or self.closed or self.handshake_done:
            return None
        return max(self._due - time.monotonic(), 0.0)

    def handle_timer(self) -> None:
        """Send the unanswered flight again if its timer has expired."""
        if self._due is None or self.closed or self.handshake_done or time.monotonic() < self._due:
            return
        self._interval = min(self._interval * 2, MAX_TIMEOUT, self._retransmit_cap or MAX_TIMEOUT)
        self._transmit_flight(retransmission=True)

    def send(self, data: bytes) -> None:
        """Encrypt application data into one record (must fit the MTU)."""
        if not self.handshake_done or self.closed or self._records is None:
            raise LocalProtocolError("cannot send: association not established")
        if len(data) > self.cleartext_mtu:
            raise LocalProtocolError(f"cannot send {len(data)} bytes: at most {self.cleartext_mtu} fit one datagram")
        self._outgoing += self._records.seal(records.APPLICATION_DATA, data)

    def close(self) -> None:
        """Send close_notify if established, and stop."""
        if self.closed:
            return
        self.closed = True
        self._due = None
        if self.handshake_done and self._records is not None:
            self._outgoing += self._records.seal(records.ALERT, bytes((records.ALERT_WARNING, records.CLOSE_NOTIFY)))

    # -- outputs ------------------------------------------------------------

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[bytes]:
        """Pending records packed into datagrams of at most ``mtu`` bytes."""
        if not self._outgoing:
            return []
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return records.pack_datagrams(data, self.mtu)

    @property
    def cipher(self) -> str | None:
        return _SUITE_NAMES.get(self._suite_code)

    @property
    def peer_identity(self) -> bytes | None:
        return None  # a server-side notion

    @property
    def cleartext_mtu(self) -> int:
        overhead = self._records.overhead if self._records is not None else 0
        return self.mtu - records.HEADER_LEN - overhead

    @property
    def light(self) -> bool:
        """True once application data runs through loadgen's record layer (always, after the handshake)."""
        return self.handshake_done

    def timeout_error(self) -> LoadgenError:
        """The error to report when the transport's handshake deadline passes."""
        return timeout_error(self.retransmits, self._finished_sent, self._retransmits_before_finished)

    # -- flights ------------------------------------------------------------

    def _send_hello(self) -> None:
        body = b"".join((
            _VERSION, self._client_random, b"\x00",  # no session id: loadgen does not resume DTLS
            bytes((len(self._cookie),)), self._cookie, _hello_tail(self._suites),
        ))
        # The ClientHello that answers a HelloVerifyRequest is message 1 (RFC 6347 4.2.2).
        self._hello_seq = 1 if self._cookie else 0
        self._hello = handshake_message(CLIENT_HELLO, self._hello_seq, body)
        self._new_flight([(records.HANDSHAKE, 0, self._hello)])

    def _new_flight(self, flight: list[tuple[int, int, bytes]]) -> None:
        self._flight = flight
        self._interval = INITIAL_TIMEOUT
        self._transmit_flight(retransmission=False)

    def _transmit_flight(self, *, retransmission: bool) -> None:
        """Queue the current flight with fresh record sequence numbers (RFC 6347 4.2.4)."""
        if retransmission:
            self.retransmits += 1
        out = self._outgoing
        for content_type, epoch, payload in self._flight:
            if epoch == 0:
                seq = self._epoch0_seq
                self._epoch0_seq += 1
                out += records.HEADER.pack(content_type, records.DTLS_1_2, 0, seq >> 16, seq & 0xFFFF, len(payload))
                out += payload
            else:
                assert self._records is not None
                out += self._records.seal(content_type, payload)
        if self._state == _FINISHED:
            if self._finished_sent == 0:
                self._retransmits_before_finished = self.retransmits
            self._finished_sent += 1
        self._sent_at = time.monotonic()
        self._due = self._sent_at + self._interval

    # -- server messages ----------------------------------------------------

    def _take_fragments(self, body: bytes) -> bool:
        """File the handshake fragments of one record; True if one repeats a processed message."""
        repeated = False
        offset = 0
        while offset + _HS_HEADER_LEN <= len(body):
            msg_type = body[offset]
            length = int.from_bytes(body[offset + 1 : offset + 4], "big")
            seq = int.from_bytes(body[offset + 4 : offset + 6], "big")
            frag_offset = int.from_bytes(body[offset + 6 : offset + 9], "big")
            frag_len = int.from_bytes(body[offset + 9 : offset + 12], "big")
            start = offset + _HS_HEADER_LEN
            fragment = body[start : start + frag_len]
            offset = start + frag_len
            if len(fragment) < frag_len or frag_offset + frag_len > length or length > _MAX_MESSAGE:
                return repeated  # malformed: ignore the rest of the record
            if msg_type == HELLO_VERIFY_REQUEST:
                repeated |= self._on_hello_verify_request(fragment if frag_len == length else b"")
                continue
            if self._next_seq is not None and seq < self._next_seq:
                repeated = True
                continue
            if seq in self._inbox or len(self._inbox) + len(self._partial) >= _MAX_BUFFERED:
                continue
            if frag_len == length:
                self._inbox[seq] = (msg_type, fragment)
                self._partial.pop(seq, None)
                continue
            partial = self._partial.setdefault(seq, _Partial(msg_type, length))
            if partial.msg_type == msg_type and len(partial.body) == length and partial.add(frag_offset, fragment):
                self._inbox[seq] = (msg_type, bytes(partial.body))
                del self._partial[seq]
        return repeated

    def _on_hello_verify_request(self, body: bytes) -> bool:
        """Answer a HelloVerifyRequest; True when it repeats one already answered."""
        if self._state != _HELLO or len(body) < 3 or len(body) < 3 + body[2]:
            return False
        cookie = body[3 : 3 + body[2]]
        if cookie == self._cookie:
            return True
        self._cookie = cookie
        self._send_hello()
        return False

    def _advance(self) -> None:
        """Process buffered server messages in message_seq order."""
        if self._next_seq is None:
            hello = next((seq for seq, (t, _) in self._inbox.items() if t == SERVER_HELLO), None)
            if hello is None:
                return
            self._next_seq = hello
            for seq in [s for s in self._inbox if s < hello]:
                del self._inbox[seq]
        while not self.closed and (message := self._inbox.pop(self._next_seq, None)) is not None:
            msg_type, body = message
            if self._hash is not None:
                self._hash.update(handshake_message(msg_type, self._next_seq, body))
            self._next_seq += 1
            if self._state == _HELLO and msg_type == SERVER_HELLO:
                self._on_server_hello(handshake_message(msg_type, self._next_seq - 1, body), body)
            elif self._state == _SERVER_FLIGHT and msg_type == SERVER_KEY_EXCHANGE:
                self._on_server_key_exchange(body)
            elif self._state == _SERVER_FLIGHT and msg_type == SERVER_HELLO_DONE:
                self._on_server_hello_done()
            else:
                self._fail_local("unexpected message", _UNEXPECTED_MESSAGE)

    def _on_server_hello(self, message: bytes, body: bytes) -> None:
        try:
            version, server_random = body[0:2], body[2:34]
            sid_end = 35 + body[34]
            suite = int.from_bytes(body[sid_end : sid_end + 2], "big")
            compression = body[sid_end + 2]
            extensions = _parse_extensions(body[sid_end + 3 :])
        except (IndexError, ValueError):
            self._fail_local("decode error", _DECODE_ERROR)
            return
        if len(server_random) != 32 or version != _VERSION:
            self._fail_local("unsupported protocol", _ILLEGAL_PARAMETER)
            return
        if suite not in self._suites or compression != 0:
            self._fail_local("wrong cipher returned", _ILLEGAL_PARAMETER)
            return
        self._suite_code = suite
        self._server_random = server_random
        self._extended_master_secret = _EXT_EXTENDED_MASTER_SECRET in extensions
        self._hash = SUITES[_SUITE_NAMES[suite]].prf_hash()
        self._hash.update(self._hello)
        self._hash.update(message)
        self._state = _SERVER_FLIGHT
        self._flight = []  # the ClientHello is answered
        self._due = None

    def _on_server_key_exchange(self, body: bytes) -> None:
        n = int.from_bytes(body[:2], "big")
        if len(body) != 2 + n:
            self._fail_local("decode error", _DECODE_ERROR)
            return
        self._hint = body[2:] or None

    def _on_server_hello_done(self) -> None:
        try:
            identity, key = self._choose(self._hint)
        except Exception:  # noqa: BLE001 - the user's key lookup failed: as OpenSSL does, no PSK
            self._fail_local("psk identity not found", _HANDSHAKE_FAILURE)
            return
        psk = key.value
        cke = handshake_message(CLIENT_KEY_EXCHANGE, self._hello_seq + 1, len(identity).to_bytes(2, "big") + identity)
        self._hash.update(cke)
        session_hash = self._hash.copy().digest()
        # RFC 4279 2: with plain PSK the "other secret" is as many zero bytes as the key.
        n = len(psk).to_bytes(2, "big")
        premaster = n + bytes(len(psk)) + n + psk
        suite = SUITES[_SUITE_NAMES[self._suite_code]]
        randoms = self._client_random + self._server_random
        if self._extended_master_secret:
            master = prf(premaster, b"extended master secret", session_hash, 48, suite.prf_hash)
        else:
            master = prf(premaster, b"master secret", randoms, 48, suite.prf_hash)
        self._records = RecordLayer(suite, master_key=master, client_random=self._client_random,
                                    server_random=self._server_random, is_client=True, write_seq=0, read_seq=-1)
        verify_data = prf(master, b"client finished", session_hash, 12, suite.prf_hash)
        finished = handshake_message(FINISHED, self._hello_seq + 2, verify_data)
        self._hash.update(finished)
        self._expected_server_finished = prf(master, b"server finished", self._hash.digest(), 12, suite.prf_hash)
        self._state = _FINISHED
        self._new_flight([(records.HANDSHAKE, 0, cke), (records.CHANGE_CIPHER_SPEC, 0, b"\x01"),
                          (records.HANDSHAKE, 1, finished)])

    def _on_server_finished(self, message: bytes) -> None:
        if self._state != _FINISHED:
            return
        if (len(message) != _HS_HEADER_LEN + 12 or message[0] != FINISHED
                or not hmac.compare_digest(message[_HS_HEADER_LEN:], self._expected_server_finished)):
            self._fail_local("digest check failed", _DECRYPT_ERROR)
            return
        self._state = _DONE
        self.handshake_done = True
        self._flight = []
        self._due = None
        self._events.append(HandshakeCompleted(cipher=self.cipher or "", version="DTLSv1.2", psk_identity=None,
                                               retransmits=self.retransmits))

    def _on_alert(self, alert: bytes) -> None:
        if len(alert) != 2:
            return
        self.closed = True
        self._due = None
        event = alert_received(alert[1])
        if isinstance(event, ConnectionFailed):
            self.error = event.error
        self._events.append(event)

    def _fail_local(self, reason: str, alert: int) -> None:
        """A fatal local error: tell the server with a plaintext alert, then stop."""
        seq = self._epoch0_seq
        self._epoch0_seq += 1
        self._outgoing += records.plaintext_alert(alert, seq)
        self.closed = True
        self._due = None
        self.error = error_from_openssl(reason, remote=False)
        self._events.append(ConnectionFailed(self.error))

    # -- established --------------------------------------------------------

    def _receive_established(self, datagram: bytes) -> None:
        assert self._records is not None
        for content_type, plaintext in self._records.open_datagram(datagram):
            if content_type == records.ALERT:
                self._on_alert(plaintext)
                return
            if plaintext:
                self._events.append(DataReceived(plaintext))


@functools.lru_cache(maxsize=64)
def _hello_tail(suites: tuple[int, ...]) -> bytes:
    """The part of our ClientHello after the cookie: the same for every association."""
    codes = b"".join(code.to_bytes(2, "big") for code in (*suites, _RENEGOTIATION_SCSV))
    extensions = _EXT_EXTENDED_MASTER_SECRET.to_bytes(2, "big") + b"\x00\x00"
    return b"".join((
        len(codes).to_bytes(2, "big"), codes,
        b"\x01\x00",  # compression: null only
        len(extensions).to_bytes(2, "big"), extensions,
    ))


def _parse_extensions(data: bytes) -> set[int]:
    """Extension types in a hello's extension block (which may be absent)."""
    if not data:
        return set()
    total = int.from_bytes(data[:2], "big")
    if total != len(data) - 2:
        raise ValueError("extension block length")
    found = set()
    offset = 2
    while offset < len(data):
        ext_type = int.from_bytes(data[offset : offset + 2], "big")
        size = int.from_bytes(data[offset + 2 : offset + 4], "big")
        offset += 4 + size
        if offset > len(data):
            raise ValueError("extension length")
        found.add(ext_type)
    return found
