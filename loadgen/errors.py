"""One error hierarchy; every error carries a stable short ``code``.

The code is what Locust shows as the failure name and what reports group by, so
it must never contain a peer-specific detail (the message may).
"""

from __future__ import annotations


class LoadgenError(Exception):
    """Base class. ``code`` is stable across releases; ``str(err)`` is for humans."""

    code = "error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.code)
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.args[0]}" if self.args[0] != self.code else self.code


class LocalProtocolError(LoadgenError):
    """We did something wrong (bad configuration, misuse of the API)."""

    code = "local-error"


class RemoteProtocolError(LoadgenError):
    """The peer did something wrong or refused us."""

    code = "remote-error"


class HandshakeTimeout(LoadgenError):
    code = "handshake-timeout"


class HandshakeFailed(RemoteProtocolError):
    """The handshake ended with an alert or a local TLS error; ``code`` says which."""

    code = "handshake-failed"


class PskUnknownIdentity(HandshakeFailed):
    code = "psk-unknown-identity"


class PskKeyMismatch(HandshakeFailed):
    code = "psk-key-mismatch"


class PeerClosed(RemoteProtocolError):
    """The peer sent close_notify (Qt: "shutdown alert received")."""

    code = "peer-closed"


class ConnectionRefused(RemoteProtocolError):
    """ICMP port unreachable on the connected socket (nothing listens there)."""

    code = "connection-refused"


class PingTimeout(LoadgenError):
    code = "ping-timeout"


class BadReply(RemoteProtocolError):
    code = "bad-reply"


class ConfigError(LocalProtocolError):
    """Invalid user input; the message names the place (file, line, key)."""

    code = "config-error"


# Alert descriptions (RFC 5246 / 4279) that map to their own codes. Anything else
# becomes "tls-<description with dashes>" so new alerts still get a stable code.
_ALERT_CODES = {
    "unknown psk identity": PskUnknownIdentity,
    "psk identity not found": PskUnknownIdentity,
    "decrypt error": PskKeyMismatch,
    "bad record mac": PskKeyMismatch,
}


def error_from_openssl(reason: str, *, remote: bool) -> HandshakeFailed:
    """Turn an OpenSSL reason string into a coded handshake error.

    ``reason`` is the text pyOpenSSL gives, e.g. ``"tlsv1 alert unknown psk identity"``
    (alert received from the peer) or ``"psk identity not found"`` (our own check).
    """
    text = reason.lower()
    # OpenSSL 3.2+ names SSLv3-era alerts "ssl/tls alert ..." (4.x: "tls alert ...").
    for prefix in ("tlsv1 alert ", "sslv3 alert ", "tlsv13 alert ", "ssl/tls alert ", "tls alert "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    who = "peer" if remote else "local"
    cls = _ALERT_CODES.get(text)
    if cls is not None:
        return cls(f"{reason} ({who})")
    return HandshakeFailed(f"{reason} ({who})", code="tls-" + text.replace(" ", "-"))
