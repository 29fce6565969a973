"""What loadgen's own DTLS 1.2 PSK handshakes (client and server) share.

Why our own handshake: through pyOpenSSL, each side of an OpenSSL DTLS handshake costs
about 200 us of CPU (``SSL_new``, several ``SSL_do_handshake`` calls, BIO copies, cffi
callbacks), which caps a client process near 3,000 handshakes per second and the
reference server below that. A plain-PSK handshake with an AEAD suite is four small
flights, a dozen HMACs and two AEAD operations per side; done here with hashlib and
``cryptography``'s AEADs it costs a fraction of that, and the association ends up on
:class:`~loadgen.protocol.record_layer.RecordLayer` directly. Other suites (CBC,
ECDHE-PSK, ...) keep going through OpenSSL (:class:`loadgen.protocol.dtls.DtlsEngine`);
both kinds of engine present the same interface (aioquic's shape).

The exchange (RFC 6347 4.2, RFC 4279 2)::

    ClientHello                 -->
                                <--  HelloVerifyRequest (cookie)
    ClientHello (cookie)        -->
                                <--  ServerHello, [ServerKeyExchange (hint)], ServerHelloDone
    ClientKeyExchange (identity),
    ChangeCipherSpec, Finished  -->
                                <--  ChangeCipherSpec, Finished

Shared here: message framing and reassembly (fragmented, reordered, repeated), flights
re-sent with fresh record numbers on RFC 6347's doubling timer (RFC 6347 4.2.4),
the key schedule (RFC 4279 2, RFC 7627 extended master secret), alerts, and the
record layer once established.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from typing import Any

from ..errors import LoadgenError, LocalProtocolError, ProtocolViolation, error_from_openssl
from . import records
from .engine import CROSSING_WINDOW, INITIAL_TIMEOUT, EngineBase
from .events import ConnectionFailed, Event
from .record_layer import SUITES, Prf, RecordLayer, Suite, prf

#: UDP payload budget: fits IPv6's 1280-byte minimum path MTU (1280 - 40 - 8 = 1232).
DEFAULT_MTU = 1200
#: RFC 6347 4.2.4.1: the timer starts at 1 s (:data:`~loadgen.protocol.engine.INITIAL_TIMEOUT`)
#: and doubles up to 60 s.
MAX_TIMEOUT = 60.0

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
SUITE_NAMES = {code: name for name, code in NATIVE_SUITES.items()}

# Handshake message types (RFC 5246 7.4, RFC 6347 4.3.2).
CLIENT_HELLO, SERVER_HELLO, HELLO_VERIFY_REQUEST = 1, 2, 3
SERVER_KEY_EXCHANGE, SERVER_HELLO_DONE, CLIENT_KEY_EXCHANGE, FINISHED = 12, 14, 16, 20
HS_HEADER_LEN = 12  # type, length (3), message_seq (2), fragment_offset (3), fragment_length (3)
EXT_EXTENDED_MASTER_SECRET = 0x0017
EXT_RENEGOTIATION_INFO = 0xFF01
RENEGOTIATION_SCSV = 0x00FF
VERSION = records.DTLS_1_2.to_bytes(2, "big")
VERIFY_DATA_LEN = 12

# -- limits: what a peer, hostile or broken, can make one association hold or spend ------------
#: RFC 6347 4.2.2: message_seq is a 16-bit field; a peer whose numbering would pass it is refused.
MAX_MESSAGE_SEQ = 0xFFFF
#: The longest handshake message body accepted, fragmented or not. PSK handshake messages are
#: small: the longest carry an identity (ClientKeyExchange) or a hint (ServerKeyExchange), which
#: OpenSSL caps at 128 and 256 bytes; 4 KiB leaves room for far longer ones (RFC 4279 allows
#: 64 KiB, nobody uses that) while bounding what one message can make us buffer.
MAX_MESSAGE_LEN = 4096
#: Handshake messages buffered per association, partial or complete: a flight has at most three
#: (ServerHello, ServerKeyExchange, ServerHelloDone), the rest is room for reordering.
MAX_BUFFERED_MESSAGES = 8
#: Message bytes buffered per association; a partial message counts its whole length from its
#: first fragment on. Four messages of the longest length fit (a real flight holds a few hundred
#: bytes); anything past it is dropped (the peer retransmits), so a hostile peer cannot make us
#: hold more.
MAX_REASSEMBLY_BYTES = 16 * 1024
#: Disjoint received byte ranges kept per partial message. Real fragmentation arrives in order or
#: a few pieces reordered (a handful of ranges); a fragment that would make more is dropped (the
#: peer's retransmission brings it again), which keeps the cost of a fragment independent of the
#: message length.
MAX_FRAGMENT_RANGES = 16
#: Handshake records read from one datagram, and fragments from one record: a flight is a handful
#: of records of one message each, while a hostile 64 KB datagram can hold 4,600 tiny records or
#: 5,000 one-byte fragments; the rest of such a datagram is ignored.
MAX_RECORDS_PER_DATAGRAM = 32
MAX_FRAGMENTS_PER_RECORD = 8


def native_suites(ciphers: str) -> tuple[int, ...] | None:
    """The suites of an OpenSSL cipher list when loadgen handles every one, else None."""
    names = [n.strip() for n in ciphers.split(":") if n.strip() and not n.strip().startswith("@")]
    if not names or any(n.upper() not in NATIVE_SUITES for n in names):
        return None
    return tuple(dict.fromkeys(NATIVE_SUITES[n.upper()] for n in names))


def suite(code: int) -> Suite:
    return SUITES[SUITE_NAMES[code]]


def handshake_message(msg_type: int, seq: int, body: bytes) -> bytes:
    """One unfragmented DTLS handshake message (also its form in the transcript hash)."""
    n = len(body).to_bytes(3, "big")
    return bytes((msg_type,)) + n + seq.to_bytes(2, "big") + b"\x00\x00\x00" + n + body


def fragment_message(message: bytes, room: int) -> list[bytes]:
    """``message`` (one whole handshake message) as fragments of at most ``room`` body bytes."""
    header, body = message[:HS_HEADER_LEN], message[HS_HEADER_LEN:]
    if len(body) <= room:
        return [message]
    return [header[:6] + offset.to_bytes(3, "big") + len(chunk).to_bytes(3, "big") + chunk
            for offset in range(0, len(body), room) for chunk in (body[offset : offset + room],)]


def premaster_secret(psk: bytes) -> bytes:
    """RFC 4279 2: with plain PSK the "other secret" is as many zero bytes as the key."""
    n = len(psk).to_bytes(2, "big")
    return n + bytes(len(psk)) + n + psk


def master_secret(psk: bytes, hash_fn: Any, *, session_hash: bytes | None, randoms: bytes) -> bytes:
    """RFC 7627 4 when both sides agreed to the extended master secret, else RFC 5246 8.1."""
    if session_hash is not None:
        return prf(premaster_secret(psk), b"extended master secret", session_hash, 48, hash_fn)
    return prf(premaster_secret(psk), b"master secret", randoms, 48, hash_fn)


def parse_extensions(data: bytes) -> set[int]:
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


#: A handshake fragment's header, 24-bit fields split in 8 + 16 bits (RFC 6347 4.2.2).
_FRAGMENT_HEADER = struct.Struct("!BBHHBHBH")

#: ``(msg_type, length of the whole message, message_seq, fragment_offset, fragment bytes)``
Fragment = tuple[int, int, int, int, bytes]


def fragments(data: bytes, limit: int = MAX_FRAGMENTS_PER_RECORD) -> list[Fragment]:
    """The handshake fragments in one record's payload (at most ``limit``); stops quietly at a
    malformed one, or one of a message longer than :data:`MAX_MESSAGE_LEN`.

    Plain tuples and one struct call per fragment: this runs for every handshake record.
    """
    found: list[Fragment] = []
    offset = 0
    end = len(data)
    while offset + HS_HEADER_LEN <= end and len(found) < limit:
        msg_type, len_hi, len_lo, seq, off_hi, off_lo, frag_hi, frag_lo = _FRAGMENT_HEADER.unpack_from(data, offset)
        length, frag_offset, frag_len = len_hi << 16 | len_lo, off_hi << 16 | off_lo, frag_hi << 16 | frag_lo
        start = offset + HS_HEADER_LEN
        if start + frag_len > end or frag_offset + frag_len > length or length > MAX_MESSAGE_LEN:
            break
        found.append((msg_type, length, seq, frag_offset, data[start : start + frag_len]))
        offset = start + frag_len
    return found


#: What filing a record's fragments reports (:meth:`Reassembler.add_record`), as bits: a fragment
#: of a message already handed out (the peer repeated a flight), a message became whole (there
#: may be one to hand out), a cap refused a fragment (the rest of the datagram is not read).
REPEATED, READY, REFUSED = 1, 2, 4


class _Partial:
    """A message whose fragments are still coming: its bytes and the disjoint byte ranges
    received so far (``starts[i]:ends[i]``, sorted, never touching: neighbours merge)."""

    __slots__ = ("msg_type", "body", "starts", "ends")

    def __init__(self, msg_type: int, length: int) -> None:
        self.msg_type = msg_type
        self.body = bytearray(length)
        self.starts: list[int] = []
        self.ends: list[int] = []

    def receive(self, offset: int, source: bytes, start: int, size: int) -> bool | None:
        """File ``source[start : start + size]`` at ``offset``: True once the message is whole,
        None when the fragment was dropped because it would make more than
        :data:`MAX_FRAGMENT_RANGES` ranges. A fragment whose bytes are all here already costs
        two comparisons (no copy, no merge): hostile floods are mostly that."""
        low, high = offset, offset + size
        starts, ends = self.starts, self.ends
        first = bisect_left(ends, low)  # the first range that ends at or after our start
        if first < len(starts) and starts[first] <= low and high <= ends[first]:
            return False  # a duplicate
        stop = bisect_right(starts, high)  # past the last range that starts at or before our end
        if len(starts) - (stop - first) + 1 > MAX_FRAGMENT_RANGES:
            return None
        if first < stop:  # overlapping or touching ranges merge with ours
            low, high = min(low, starts[first]), max(high, ends[stop - 1])
        starts[first:stop] = [low]
        ends[first:stop] = [high]
        self.body[offset : offset + size] = source[start : start + size]
        return high - low == len(self.body)


class Reassembler:
    """The peer's handshake fragments in, whole messages out in message_seq order.

    ``next_seq`` is the message to hand out next; a side that does not know it yet
    (the client before the ServerHello) leaves it None and calls :meth:`start_at`.
    Bounded whatever the peer sends: :data:`MAX_BUFFERED_MESSAGES` messages,
    :data:`MAX_REASSEMBLY_BYTES` bytes, :data:`MAX_FRAGMENT_RANGES` ranges per message,
    so memory and the cost of a fragment do not grow with what the peer claims.
    """

    def __init__(self, next_seq: int | None = None) -> None:
        self.next_seq = next_seq
        self._complete: dict[int, tuple[int, bytes]] = {}
        self._partial: dict[int, _Partial] = {}

    @property
    def buffered(self) -> int:
        """Message bytes held, partial (their whole length) and complete: at most
        :data:`MAX_BUFFERED_MESSAGES` to add up, so summed when asked rather than kept."""
        return sum(len(m) for _, m in self._complete.values()) + sum(len(p.body) for p in self._partial.values())

    def add(self, fragment: Fragment) -> bool:
        """File one fragment; True when it belongs to a message already handed out."""
        msg_type, length, seq, offset, data = fragment
        return bool(self._file(msg_type, length, seq, offset, data, 0, len(data)) & REPEATED)

    def add_record(self, payload: bytes, start: int = 0) -> int:
        """File the handshake fragments of one record's payload (``payload[start:]``), as
        :func:`fragments` finds them; returns :data:`REPEATED`, :data:`READY` and
        :data:`REFUSED` bits. Stops at the first fragment a cap refused.

        The server's hot path for hostile input (a datagram of tiny fragments): fragments are
        filed as they are parsed, and a duplicate's bytes are never copied.
        """
        flags = 0
        offset = start
        end = len(payload)
        count = 0
        partials = self._partial
        unpack = _FRAGMENT_HEADER.unpack_from
        while offset + HS_HEADER_LEN <= end and count < MAX_FRAGMENTS_PER_RECORD:
            msg_type, len_hi, len_lo, seq, off_hi, off_lo, frag_hi, frag_lo = unpack(payload, offset)
            length, frag_offset, frag_len = len_hi << 16 | len_lo, off_hi << 16 | off_lo, frag_hi << 16 | frag_lo
            body = offset + HS_HEADER_LEN
            offset = body + frag_len
            count += 1
            if offset > end or frag_offset + frag_len > length or length > MAX_MESSAGE_LEN:
                break
            # Inline, the case a flood is made of: bytes of a partial message already here.
            # (A partial message is always inside the window of message numbers.)
            partial = partials.get(seq)
            if partial is not None and frag_len and partial.msg_type == msg_type and len(partial.body) == length:
                ends = partial.ends
                i = bisect_left(ends, frag_offset)
                if i < len(ends) and partial.starts[i] <= frag_offset and frag_offset + frag_len <= ends[i]:
                    continue
            flags |= self._file(msg_type, length, seq, frag_offset, payload, body, frag_len)
            if flags & REFUSED:
                break
        return flags

    def _file(self, msg_type: int, length: int, seq: int, offset: int, source: bytes, start: int, size: int) -> int:
        """File the fragment ``source[start : start + size]`` (bytes copied only if kept)."""
        if self.next_seq is not None:
            if seq < self.next_seq:
                return REPEATED
            if seq >= self.next_seq + MAX_BUFFERED_MESSAGES:
                return REFUSED  # far ahead of anything a flight holds
        partial = self._partial.get(seq)
        if partial is None:
            if seq in self._complete or length > MAX_MESSAGE_LEN:
                return 0
            if (len(self._complete) + len(self._partial) >= MAX_BUFFERED_MESSAGES
                    or self.buffered + length > MAX_REASSEMBLY_BYTES):
                return REFUSED
            if offset == 0 and size == length:  # the common case: not fragmented
                self._complete[seq] = (msg_type, source[start : start + size] if start or size != len(source)
                                       else source)
                return READY
            if not size:
                return 0
            partial = self._partial[seq] = _Partial(msg_type, length)
        elif partial.msg_type != msg_type or len(partial.body) != length or not size:
            return 0
        whole = partial.receive(offset, source, start, size)
        if whole is None:
            return REFUSED
        if whole:
            self._complete[seq] = (msg_type, bytes(partial.body))
            del self._partial[seq]
            return READY
        return 0

    def start_at(self, msg_type: int) -> bool:
        """Start handing out at the buffered message of ``msg_type``; False if none is complete."""
        seq = next((s for s, (t, _) in self._complete.items() if t == msg_type), None)
        if seq is None:
            return False
        self.next_seq = seq
        for early in [s for s in self._complete if s < seq]:
            del self._complete[early]
        for early in [s for s in self._partial if s < seq]:
            del self._partial[early]
        return True

    def pop(self) -> tuple[int, int, bytes] | None:
        """``(type, message_seq, body)`` of the next message once it is complete."""
        if self.next_seq is None or (message := self._complete.pop(self.next_seq, None)) is None:
            return None
        self.next_seq += 1
        return message[0], self.next_seq - 1, message[1]


class HandshakeEngine(EngineBase):
    """Flights, timer, record numbering, alerts, events and established data for one side.

    Subclasses handle the peer's handshake messages (:meth:`_on_handshake_record`,
    :meth:`_advance`) and build flights with :meth:`_new_flight`.
    """

    is_client: bool

    def __init__(self, *, mtu: int, retransmit_cap: float | None) -> None:
        super().__init__(mtu)
        self._retransmit_cap = retransmit_cap
        self._now = 0.0  # the transport's clock at the input being handled (engines never read one)
        self._epoch0_seq = 0  # next record sequence number in epoch 0
        self._flight: list[tuple[int, int, bytes]] = []  # (content type, epoch, payload)
        self._interval = INITIAL_TIMEOUT
        self._suite_code = 0
        self._records: RecordLayer | None = None  # epoch 1, once keys are known
        self._state = 0  # the subclass's handshake state: a repeat that moved nothing is a repeat
        # What the key schedule needs; each side fills it in as the hellos go by.
        self._client_random = b""
        self._server_random = b""
        self._extended_master_secret = False
        self._hash: Any = None  # the running transcript hash, from the ServerHello on

    # -- inputs -------------------------------------------------------------

    def receive_datagram(self, datagram: bytes, now: float) -> None:
        """Feed one datagram from the peer, received at ``now`` (the transport's clock);
        read events with :meth:`next_event`."""
        if self.closed:
            return
        self._now = now
        if self.handshake_done:
            assert self._records is not None  # the handshake made it
            self._receive_established(self._records, datagram, now)
            return
        state = self._state
        repeated = 0
        for content_type, epoch, raw in records.split(datagram, MAX_RECORDS_PER_DATAGRAM):
            flags = 0
            if epoch == 0:
                if content_type == records.HANDSHAKE and len(raw) - records.HEADER_LEN <= records.MAX_PLAINTEXT:
                    flags = self._on_handshake_record(raw, records.HEADER_LEN, encrypted=False)
                elif content_type == records.ALERT:
                    self._on_plaintext_alert(raw[records.HEADER_LEN :])
                # ChangeCipherSpec needs no action: the epoch-1 Finished authenticates itself.
            elif epoch == 1 and content_type in (records.HANDSHAKE, records.ALERT):
                opened = self._records.open(raw) if self._records is not None else None
                if opened is None:
                    self._on_undecryptable(raw)
                elif opened[0] == records.ALERT:
                    self._on_alert(opened[1])
                else:
                    flags = self._on_handshake_record(opened[1], encrypted=True)
            repeated |= flags & REPEATED
            if flags & READY:
                self._advance()  # before the next record: it may need the keys this one brings
            if self.closed or self.handshake_done:
                return
            if flags & REFUSED:
                break  # a cap refused a fragment: a flood (or a peer far out of step), not a flight
        if (repeated and self._state == state and self._flight
                and now - self._sent_at >= CROSSING_WINDOW):
            # The peer repeated a flight we already answered: our answer was lost
            # (RFC 6347 4.2.4). A repeat that arrives right after we sent ours
            # crossed it on the wire and needs no answer.
            self._transmit_flight(retransmission=True)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is due (flight retransmission), on the transport's clock, or None."""
        # Derived, not stored: one attribute less keeps a server engine's instance dict shared
        # (CPython's key-sharing dicts hold at most 30 keys), ~1.3 KiB per association.
        if not self._flight or self.closed or self.handshake_done:
            return None  # no flight waits for an answer
        return self._sent_at + self._interval

    def handle_timer(self, now: float) -> None:
        """Send the unanswered flight again if its timer has expired by ``now``."""
        due = self.get_timer()
        if due is None or now < due:
            return
        self._now = now
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
        if self.handshake_done and self._records is not None and self._records.can_seal:
            self._outgoing += self._records.seal(records.ALERT, bytes((records.ALERT_WARNING, records.CLOSE_NOTIFY)))

    # -- outputs ------------------------------------------------------------

    @property
    def cipher(self) -> str | None:
        return SUITE_NAMES.get(self._suite_code)

    @property
    def cleartext_mtu(self) -> int:
        overhead = self._records.overhead if self._records is not None else 0
        return self.mtu - records.HEADER_LEN - overhead

    @property
    def light(self) -> bool:
        """True once application data runs through loadgen's record layer (always, after the handshake)."""
        return self.handshake_done

    # -- for subclasses -----------------------------------------------------

    def _on_handshake_record(self, payload: bytes, start: int = 0, *, encrypted: bool) -> int:
        """File the handshake fragments of one record (``payload[start:]``); returns
        :data:`REPEATED` (one repeats a processed message), :data:`READY` (:meth:`_advance`
        may have work) and :data:`REFUSED` (a cap refused one: skip the rest of the datagram)."""
        raise NotImplementedError

    def _advance(self) -> None:
        """Process whatever complete messages are ready (called when a record reported :data:`READY`)."""
        raise NotImplementedError

    def _on_plaintext_alert(self, alert: bytes) -> None:
        """An epoch-0 alert: unauthenticated, anyone on the path can forge one. A warning
        ends nothing (RFC 5246 7.2.2 lets it be ignored); a fatal one still ends the
        handshake: it is how a peer without our keys says why it refuses us."""
        if len(alert) == 2 and alert[0] == records.ALERT_FATAL:
            self._on_alert(alert)

    def _on_undecryptable(self, record: bytes) -> None:
        """An epoch-1 handshake or alert record that did not decrypt (or came before the keys)."""

    def _new_flight(self, flight: list[tuple[int, int, bytes]]) -> None:
        # A handshake message whose record would not fit the MTU goes out in fragments,
        # each in a record of its own (RFC 6347 4.2.3): long identities or hints, small MTUs.
        room = self.mtu - records.HEADER_LEN - HS_HEADER_LEN
        self._flight = [(content_type, epoch, piece) for content_type, epoch, payload in flight
                        for piece in (fragment_message(payload, room)
                                      if content_type == records.HANDSHAKE and epoch == 0 else [payload])]
        self._interval = INITIAL_TIMEOUT
        self._transmit_flight(retransmission=False)

    def _transmit_flight(self, *, retransmission: bool) -> None:
        """Queue the current flight with fresh record sequence numbers (RFC 6347 4.2.4)."""
        plaintext = sum(1 for _, epoch, _ in self._flight if epoch == 0)
        if self._epoch0_seq + plaintext - 1 > records.MAX_SEQUENCE:
            # Only a peer that started us near 2^48 gets here (the server continues the
            # client's numbering): the flight cannot be numbered, the association is over.
            self._fail(ProtocolViolation("record sequence numbers exhausted (48 bits)"), records.ILLEGAL_PARAMETER)
            return
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
        self._sent_at = self._now  # the flight's timer runs from here (get_timer)

    def _established(self, completed: Event) -> None:
        self.handshake_done = True
        self._flight = []
        self._forget_handshake()
        self._events.append(completed)

    def _forget_handshake(self) -> None:
        """Drop what only the handshake needed: per-association memory is what limits
        how many associations one process holds."""
        self._hash = None
        self._client_random = self._server_random = b""

    def _start_transcript(self, *messages: bytes) -> None:
        """The transcript hash (the suite's PRF hash) over the ClientHello it starts with and what follows."""
        self._hash = suite(self._suite_code).prf_hash()
        for message in messages:
            self._hash.update(message)

    def _derive_keys(self, client_key_exchange: bytes, psk: bytes) -> tuple[Prf, bytes]:
        """Hash the ClientKeyExchange, derive the master secret and the epoch-1 record layer.

        Returns the master secret keyed as a PRF and the session hash the client's
        Finished covers (RFC 5246 8.1 and 7.4.9, RFC 7627 4).
        """
        self._hash.update(client_key_exchange)
        session_hash = self._hash.copy().digest()
        params = suite(self._suite_code)
        master = Prf(master_secret(psk, params.prf_hash, randoms=self._client_random + self._server_random,
                                   session_hash=session_hash if self._extended_master_secret else None),
                     params.prf_hash)
        self._records = RecordLayer(params, master_key=master, client_random=self._client_random,
                                    server_random=self._server_random, is_client=self.is_client, write_seq=0,
                                    read_seq=-1)
        return master, session_hash

    def _fail(self, error: LoadgenError, alert: int) -> None:
        """A fatal error: tell the peer with a plaintext alert (it may lack our keys), then stop.
        (No alert when the record numbers ran out: :func:`records.plaintext_alert` is empty then.)"""
        seq = self._epoch0_seq
        self._epoch0_seq += 1
        self._outgoing += records.plaintext_alert(alert, seq)
        self._flight = []
        self.closed = True
        self.error = error
        self._events.append(ConnectionFailed(error))

    def _fail_local(self, reason: str, alert: int) -> None:
        self._fail(error_from_openssl(reason, remote=False), alert)
