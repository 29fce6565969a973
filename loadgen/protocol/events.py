"""Events an engine reports upward (small frozen dataclasses, h11 style)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import HandshakeFailed, LoadgenError, error_from_openssl
from . import records

if TYPE_CHECKING:
    from .record_layer import RecordLayer


@dataclass(frozen=True)
class HandshakeCompleted:
    cipher: str
    version: str
    psk_identity: bytes | None
    retransmits: int
    resumed: bool = False


@dataclass(frozen=True)
class DataReceived:
    data: bytes


@dataclass(frozen=True)
class PeerClosed:
    """The peer sent close_notify."""


@dataclass(frozen=True)
class ConnectionFailed:
    """A fatal error: an alert from the peer, or a local TLS error (alert sent)."""

    error: LoadgenError


Event = HandshakeCompleted | DataReceived | PeerClosed | ConnectionFailed


class EngineBase:
    """What every DTLS engine shares: the events it reports upward, the records it queues
    for the transport, and what the peer's alerts and data records become once the
    association runs on loadgen's record layer."""

    def __init__(self, mtu: int) -> None:
        self.mtu = mtu
        self.closed = False
        self.error: LoadgenError | None = None
        self._events: deque[Event] = deque()
        self._outgoing = bytearray()  # records waiting to be sent

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[bytes]:
        """Pending records packed into datagrams of at most ``mtu`` bytes."""
        if not self._outgoing:
            return []
        data = bytes(self._outgoing)
        self._outgoing.clear()
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


def alert_received(description: int) -> PeerClosed | ConnectionFailed:
    """The event for an alert from the peer: close_notify, or a failure named like OpenSSL's."""
    if description == records.CLOSE_NOTIFY:
        return PeerClosed()
    name = records.ALERT_NAMES.get(description)
    if name is None:
        # One code for every number no registry names: a peer picks the number, and codes
        # (and the log throttle keys made of them) must not multiply with its choices.
        return ConnectionFailed(HandshakeFailed(f"tlsv1 alert {description} (unknown description) (peer)",
                                                code=UNKNOWN_ALERT_CODE))
    return ConnectionFailed(error_from_openssl(f"tlsv1 alert {name}", remote=True))


#: The failure code of an alert whose description is not in :data:`records.ALERT_NAMES`.
UNKNOWN_ALERT_CODE = "tls-unknown-alert"
