"""What every DTLS engine shares, and the interface the transports drive (aioquic's shape).

An engine is bytes in, datagrams out, events out. It never reads a clock: every input
carries ``now`` (seconds on the transport's clock, any origin), and :meth:`get_timer`
answers with an absolute deadline on that same clock, as aioquic's ``QuicConnection``::

    engine.start(now)                     # client: queue the ClientHello
    engine.receive_datagram(data, now)    # one datagram from the peer
    engine.datagrams_to_send()            # what to put on the wire
    engine.get_timer()                    # when to call handle_timer (absolute), or None
    engine.handle_timer(now)              # retransmit what went unanswered
    engine.next_event()                   # HandshakeCompleted, DataReceived, ...

So tests wire a client and a server back to back in memory and move time by hand. Two
families implement it: loadgen's own PSK handshake (:mod:`.psk_client`, :mod:`.psk_server`)
and OpenSSL's (:class:`loadgen.protocol.openssl.dtls.DtlsEngine`). OpenSSL's own retransmission timer
is the one exception to "time passed in": it runs on OpenSSL's clock, which no binding lets us
drive, so that engine maps it onto the transport's clock at every input, and it retransmits
once both clocks agree the timer expired.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from loadgen.protocol.errors import HandshakeFailed, LoadgenError, error_from_openssl
from loadgen.protocol.events import ConnectionClosed, ConnectionFailed, DataReceived, Event
from loadgen.protocol.native import records

if TYPE_CHECKING:
    from loadgen.protocol.native.record_layer import RecordLayer

#: RFC 6347 4.2.4.1: a flight's retransmission timer starts at 1 s (OpenSSL's too).
INITIAL_TIMEOUT = 1.0
#: A repeat of the peer's flight that arrives this soon after we sent ours crossed it on the wire.
CROSSING_WINDOW = INITIAL_TIMEOUT / 2
#: The failure code of an alert whose description is not in :data:`records.ALERT_NAMES`.
UNKNOWN_ALERT_CODE = "tls-unknown-alert"


class DatagramEngine(Protocol):
    """One DTLS association (either side) as a transport drives it; ``now`` is the transport's clock."""

    mtu: int
    closed: bool
    error: LoadgenError | None
    handshake_done: bool
    retransmits: int

    def receive_datagram(self, datagram: bytes, now: float) -> None:
        """Feed one datagram from the peer; read events with :meth:`next_event`."""

    def datagrams_to_send(self) -> list[bytes]:
        """What to send now, in datagrams of at most ``mtu`` bytes."""

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is due, on the clock ``now`` comes from (absolute), or None."""

    def handle_timer(self, now: float) -> None:
        """Do what was due by ``now`` (retransmit an unanswered flight)."""

    def next_event(self) -> Event | None:
        """The next event, oldest first, or None."""

    def send(self, data: bytes) -> None:
        """Encrypt application data into one record (established associations only)."""

    def close(self) -> None:
        """Queue close_notify (when it can be sent) and stop."""

    @property
    def cipher(self) -> str | None:
        """The negotiated suite's OpenSSL name."""

    @property
    def cleartext_mtu(self) -> int:
        """The most application data one datagram carries."""

    @property
    def peer_identity(self) -> bytes | None:
        """Server side: the PSK identity the client presented."""

    @property
    def light(self) -> bool:
        """True once application data runs through loadgen's record layer."""


class DatagramClient(DatagramEngine, Protocol):
    """A client association: it starts the handshake and names the error of one that timed out."""

    def start(self, now: float) -> None:
        """Begin the handshake: queue the ClientHello."""

    def timeout_error(self) -> LoadgenError:
        """The error to report when the transport's handshake deadline passes."""

    def forget_chooser(self) -> None:
        """Drop the PSK chooser (the association's callback): called when the association ends,
        so that no cycle engine <-> association outlives it (a frozen heap never collects one)."""


class EngineBase:
    """What every DTLS engine shares: the events it reports upward, the records it queues
    for the transport, when its latest flight went out, and what the peer's alerts, data
    records and repeated flights become once the association runs on loadgen's record layer."""

    def __init__(self, mtu: int) -> None:
        self.mtu = mtu
        self.closed = False
        self.error: LoadgenError | None = None
        self.handshake_done = False
        self.retransmits = 0
        # A list, not a deque: it holds an event or two at a time, and an empty deque is a
        # 64-slot block (~600 B) per association for as long as it lives, an empty list 56 B.
        self._events: list[Event] = []
        self._outgoing = bytearray()  # records waiting to be sent
        self._sent_at = 0.0  # when our latest flight went out, on the transport's clock
        # Server: our final flight (ChangeCipherSpec + Finished, sealed), sent again when the
        # client repeats the flight it answers. Empty on a client: its last flight is answered.
        self._final_flight = b""

    def next_event(self) -> Event | None:
        """The next event, oldest first, or None."""
        return self._events.pop(0) if self._events else None

    def datagrams_to_send(self) -> list[bytes]:
        """Pending records packed into datagrams of at most ``mtu`` bytes."""
        if not self._outgoing:
            return []
        data = bytes(self._outgoing)
        self._outgoing.clear()
        if len(data) <= self.mtu:
            return [data]  # pack_datagrams's common case, without the call: one record (a request, a reply)
        return records.pack_datagrams(data, self.mtu)

    def _on_alert(self, alert: bytes) -> None:
        """The peer's alert (level, description) ends the association; a malformed one is ignored."""
        if len(alert) != 2:
            return
        self.closed = True
        event = alert_received(alert[1])
        if isinstance(event, ConnectionFailed):
            self.error = event.error
        self._events.append(event)

    def _deliver(self, record_layer: RecordLayer, datagram: bytes) -> None:
        """Data and alerts of an established association (anything else is dropped)."""
        for content_type, plaintext in record_layer.open_datagram(datagram):
            if content_type == records.ALERT:
                self._on_alert(plaintext)
                if self.closed:
                    return
            elif plaintext:
                self._events.append(DataReceived(plaintext))

    def _receive_established(self, record_layer: RecordLayer, datagram: bytes, now: float) -> None:
        """A datagram received at ``now`` once established: the peer repeating its last
        handshake flight (ours answering it was lost), or records for :meth:`_deliver`."""
        if self._final_flight and records.starts_plaintext_handshake(datagram):
            self._repeat_final_flight(now)
            return
        self._deliver(record_layer, datagram)

    def _repeat_final_flight(self, now: float) -> None:
        """The peer repeated the flight our final one answers: ours was lost, send it again.
        The peer's repeats come one retransmission timer (1 s or more) apart; more often is a
        flood or a crossing on the wire and gets no answer (each would cost a datagram back)."""
        if now - self._sent_at >= CROSSING_WINDOW:
            self._outgoing += self._final_flight
            self.retransmits += 1
            self._sent_at = now


def alert_received(description: int) -> ConnectionClosed | ConnectionFailed:
    """The event for an alert from the peer: close_notify, or a failure named like OpenSSL's."""
    if description == records.CLOSE_NOTIFY:
        return ConnectionClosed()
    name = records.ALERT_NAMES.get(description)
    if name is None:
        # One code for every number no registry names: a peer picks the number, and codes
        # (and the log throttle keys made of them) must not multiply with its choices.
        return ConnectionFailed(HandshakeFailed(f"tlsv1 alert {description} (unknown description) (peer)",
                                                code=UNKNOWN_ALERT_CODE))
    return ConnectionFailed(error_from_openssl(f"tlsv1 alert {name}", remote=True))
