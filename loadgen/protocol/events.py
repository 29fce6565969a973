"""Events an engine reports upward (small dataclasses, h11 style: frozen, but for the one made per
datagram, see :class:`DataReceived`)."""

from __future__ import annotations

from dataclasses import dataclass

from loadgen.protocol.errors import LoadgenError


@dataclass(frozen=True)
class HandshakeCompleted:
    cipher: str
    version: str
    psk_identity: bytes | None
    retransmits: int
    resumed: bool = False


# Made once per datagram on both sides' hot path: a frozen dataclass's __init__ sets its field
# through object.__setattr__ (3.1k instructions a construction by callgrind, against 1.6k with
# slots, not frozen: 1% of a client ping), so it is not frozen, as stats.facts.Finished is not.
# No code changes an event once made.
@dataclass(slots=True)
class DataReceived:
    """Application data from the peer (one record's plaintext)."""

    data: bytes


@dataclass(frozen=True)
class ConnectionClosed:
    """The peer closed the connection: close_notify (for TLS also the end of the stream after
    the handshake). An event, not an error: the error a transport ends with for it is
    :class:`loadgen.protocol.errors.PeerClosed`."""


@dataclass(frozen=True)
class ConnectionFailed:
    """A fatal error: an alert from the peer, or a local TLS error (alert sent)."""

    error: LoadgenError


@dataclass(frozen=True)
class CertCheckFailed:
    """TLS: the peer's certificate failed verification (QtSSLSocket's certCheckFailed).

    ``code`` is OpenSSL's X509 verify result, ``description`` its text. A
    :class:`ConnectionFailed` with the coded ``cert-*`` error follows.
    """

    code: int
    description: str
    depth: int


Event = HandshakeCompleted | DataReceived | ConnectionClosed | ConnectionFailed
#: What a TLS engine reports: an :data:`Event`, or a failed certificate check before its failure.
TlsEvent = Event | CertCheckFailed
