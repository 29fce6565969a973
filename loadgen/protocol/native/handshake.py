"""What loadgen's own DTLS 1.2 PSK handshakes (client and server) share.

Why our own handshake: through pyOpenSSL, each side of an OpenSSL DTLS handshake costs
about 200 us of CPU (``SSL_new``, several ``SSL_do_handshake`` calls, BIO copies, cffi
callbacks), which caps a client process near 3,000 handshakes per second and the
reference server below that. A plain-PSK handshake with an AEAD suite is four small
flights, a dozen HMACs and two AEAD operations per side; done here with hashlib and
``cryptography``'s AEADs it costs a fraction of that, and the association ends up on
:class:`~loadgen.protocol.native.record_layer.RecordLayer` directly. Other suites (CBC,
ECDHE-PSK, ...) keep going through OpenSSL (:class:`loadgen.protocol.openssl.dtls.DtlsEngine`);
both kinds of engine present the same interface (aioquic's shape).

The exchange (RFC 6347 4.2, RFC 4279 2)::

    ClientHello                 -->
                                <--  HelloVerifyRequest (cookie)
    ClientHello (cookie)        -->
                                <--  ServerHello, [ServerKeyExchange (hint)], ServerHelloDone
    ClientKeyExchange (identity),
    ChangeCipherSpec, Finished  -->
                                <--  ChangeCipherSpec, Finished

Shared here, in :class:`HandshakeEngine`: flights re-sent with fresh record numbers on
RFC 6347's doubling timer (RFC 6347 4.2.4), alerts, events, the transcript hash and the
record layer once established. The messages and their reassembly are
:mod:`.handshake_messages`'s, the suites and the key schedule :mod:`.handshake_keys`'s.
"""

from __future__ import annotations

from typing import Any

from loadgen.protocol.engine import CROSSING_WINDOW, INITIAL_TIMEOUT, EngineBase
from loadgen.protocol.errors import LoadgenError, LocalProtocolError, ProtocolViolation, error_from_openssl
from loadgen.protocol.events import ConnectionFailed, Event
from loadgen.protocol.native import records
from loadgen.protocol.native.keys import SUITE_NAMES, master_secret, suite
from loadgen.protocol.native.messages import (
    HS_HEADER_LEN,
    MAX_RECORDS_PER_DATAGRAM,
    READY,
    REFUSED,
    REPEATED,
    fragment_message,
)
from loadgen.protocol.native.record_layer import Prf, RecordLayer

#: UDP payload budget: fits IPv6's 1280-byte minimum path MTU (1280 - 40 - 8 = 1232).
DEFAULT_MTU = 1200
#: RFC 6347 4.2.4.1: the timer starts at 1 s (:data:`~loadgen.protocol.engine.INITIAL_TIMEOUT`)
#: and doubles up to 60 s.
MAX_TIMEOUT = 60.0


class HandshakeEngine(EngineBase):
    """Flights, timer, record numbering, alerts, events and established data for one side.

    Subclasses handle the peer's handshake messages (:meth:`_on_handshake_record`,
    :meth:`_advance`) and build flights with :meth:`_new_flight`.
    """

    is_client: bool

    # An engine has some 35 fields with its subclass: past the 30 keys a CPython instance dict
    # shares with its class, each engine's dict was a 1.5 KiB table of its own. Slots: ~0.3 KiB.
    __slots__ = ("_retransmit_cap", "_now", "_epoch0_seq", "_flight", "_interval", "_suite_code", "_records",
                 "_state", "_client_random", "_server_random", "_extended_master_secret", "_hash")

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
        record_layer = self._records
        if not self.handshake_done or self.closed or record_layer is None:
            raise LocalProtocolError("cannot send: association not established")
        # cleartext_mtu, inlined: once per request, and a property call costs more than the sum.
        if len(data) > self.mtu - records.HEADER_LEN - record_layer.overhead:
            raise LocalProtocolError(f"cannot send {len(data)} bytes: at most {self.cleartext_mtu} fit one datagram")
        self._outgoing += record_layer.seal(records.APPLICATION_DATA, data)

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
        # Counted only near the end of the numbers: a generator per flight was ~0.5 us of every handshake.
        if (self._epoch0_seq + len(self._flight) - 1 > records.MAX_SEQUENCE
                and self._epoch0_seq + sum(1 for _, epoch, _ in self._flight if epoch == 0) - 1 > records.MAX_SEQUENCE):
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
