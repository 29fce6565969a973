"""Events an engine reports upward (small frozen dataclasses, h11 style)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LoadgenError, error_from_openssl
from . import records


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


def alert_received(description: int) -> PeerClosed | ConnectionFailed:
    """The event for an alert from the peer: close_notify, or a failure named like OpenSSL's."""
    if description == records.CLOSE_NOTIFY:
        return PeerClosed()
    name = records.ALERT_NAMES.get(description, f"alert {description}")
    return ConnectionFailed(error_from_openssl(f"tlsv1 alert {name}", remote=True))
