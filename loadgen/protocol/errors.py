"""One error hierarchy; every error carries a stable short ``code``.

The code is what Locust shows as the failure name and what reports group by, so
it must never contain a peer-specific detail (the message may).
"""

from __future__ import annotations

import errno
import re


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


class PskModeMismatch(HandshakeFailed):
    """TLS 1.3: the peers share no PSK key-exchange mode (psk_dhe_ke, psk_ke) they can use."""

    code = "psk-mode-mismatch"


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


class InternalError(LoadgenError):
    """A bug in loadgen met while serving one peer or running one association.

    Only that peer or association ends; the loop that serves the others goes on.
    The message names the exception type (never its arguments, which may hold bytes
    chosen by the peer)."""

    code = "internal-error"


class ProtocolViolation(RemoteProtocolError):
    """The peer broke a rule of the protocol that leaves no way to go on: a field that
    would overflow its width (message or record sequence numbers), a message or record
    over its limit, a flood of HelloVerifyRequests."""

    code = "protocol-violation"


class CoapReset(RemoteProtocolError):
    """The CoAP server answered a request with a Reset (RST): it rejected the message."""

    code = "coap-reset"


class CoapTimeout(LoadgenError):
    """A CoAP request went unanswered: no ACK after MAX_RETRANSMIT retransmissions, or no
    response by its deadline."""

    code = "coap-timeout"


class CoapFormatError(RemoteProtocolError):
    """The CoAP peer sent bytes that are no CoAP message (RFC 7252 3), or a response this
    client must reject (an unknown critical option); the message says what is wrong."""

    code = "coap-format"


class HelloVerifyLoop(RemoteProtocolError):
    """The server answered every ClientHello with another HelloVerifyRequest (a new
    cookie each time): a broken or hostile server; the handshake stops there."""

    code = "hello-verify-loop"


class ServerFull(LoadgenError):
    """The reference server is at one of its limits (peers, half-open handshakes,
    connections) and dropped a newcomer; counted, never logged per peer."""

    code = "server-full"


class ConfigError(LocalProtocolError):
    """Invalid user input; the message names the place (file, line, key)."""

    code = "config-error"


class RunNotStarted(ConfigError):
    """A run that could not start (its workers never connected): exit 2 with the reason, as bad input."""

    code = "run-not-started"


class HostNotFound(LocalProtocolError):
    """The target's host name did not resolve."""

    code = "host-not-found"


class ConnectTimeout(LoadgenError):
    """TCP connect did not complete in time."""

    code = "connect-timeout"


class ConnectionReset(RemoteProtocolError):
    """The peer reset the TCP connection (or it broke) without a TLS close_notify."""

    code = "connection-reset"


class SocketError(LoadgenError):
    """Any other socket-level failure; the message carries the OS error."""

    code = "socket-error"


#: OS errors from socket(), bind() or connect() that mean this process or machine has no socket
#: to give (not that the peer failed), and what ran out.
_EXHAUSTED = {
    errno.EMFILE: "EMFILE (this process's open-file limit)",
    errno.ENFILE: "ENFILE (the system's open-file limit)",
    errno.EADDRNOTAVAIL: "EADDRNOTAVAIL (no free local port)",
    errno.EADDRINUSE: "EADDRINUSE (no free local port)",
    errno.EAGAIN: "EAGAIN (no free local UDP port)",
}


class SocketsExhausted(SocketError):
    """No socket for this attempt: out of file descriptors or local ports (``reason`` says which).

    Same code as :class:`SocketError`; a separate class so that thousands of clients left
    without a socket make one summary line with counts, not one line each."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def socket_error(exc: OSError, message: str) -> SocketError:
    """The error for ``exc`` met while opening, binding or connecting a socket."""
    reason = _EXHAUSTED.get(exc.errno or 0)
    if reason is not None:
        return SocketsExhausted(f"{message}: {exc.strerror or exc}", reason=reason)
    return SocketError(f"{message}: {exc}")


class ClientCertRequired(HandshakeFailed):
    """The server requires a client certificate and we sent none (or the client sent none)."""

    code = "cert-required"


class CertificateCheckFailed(HandshakeFailed):
    """Peer certificate verification failed (QtSSLSocket's certCheckFailed).

    ``verify_code`` is OpenSSL's X509 verify result (e.g. 10 = expired), ``description``
    OpenSSL's text for it, ``depth`` the position in the chain (0 = the peer's own).
    ``code`` is one of the stable ``cert-*`` codes from :func:`cert_error`.
    """

    code = "cert-invalid"

    def __init__(self, message: str = "", *, code: str | None = None, verify_code: int = 0,
                 description: str = "", depth: int = 0) -> None:
        super().__init__(message, code=code)
        self.verify_code = verify_code
        self.description = description
        self.depth = depth


# Alert descriptions (RFC 5246 / 4279) that map to their own codes. Anything else
# becomes "tls-<description with dashes>" so new alerts still get a stable code.
_ALERT_CODES = {
    "unknown psk identity": PskUnknownIdentity,
    "psk identity not found": PskUnknownIdentity,
    "decrypt error": PskKeyMismatch,
    "bad record mac": PskKeyMismatch,
    "decryption failed or bad record mac": PskKeyMismatch,
    "binder does not verify": PskKeyMismatch,  # TLS 1.3 external PSK with the wrong key
    "certificate required": ClientCertRequired,  # TLS 1.3 alert 116
    "peer did not return a certificate": ClientCertRequired,
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
    if not _REASON_NAME.fullmatch(text):
        # Not one of OpenSSL's reason names (a tuple's repr, "reason(1234)", a number): as a
        # code it would vary with what the peer sent. The message keeps the text.
        return HandshakeFailed(f"{reason} ({who})")
    return HandshakeFailed(f"{reason} ({who})", code="tls-" + text.replace(" ", "-"))


#: What OpenSSL's reason names look like ("wrong version number", "x509 lib", "unknown ca"):
#: lowercase words, none of them a bare number. Only such a text becomes part of a code.
_REASON_NAME = re.compile(r"[a-z][a-z0-9]*(?: [a-z][a-z0-9]*)*")


# X509 verify result codes (OpenSSL's X509_V_ERR_*) with a stable code of their own.
# Anything else is "cert-invalid"; the verify code and OpenSSL's description travel along.
_VERIFY_CODES = {
    2: "cert-untrusted",  # unable to get issuer certificate
    7: "cert-signature-invalid",
    9: "cert-not-yet-valid",
    10: "cert-expired",
    18: "cert-self-signed",  # depth zero self-signed certificate
    19: "cert-untrusted",  # self-signed certificate in chain (a root we do not trust)
    20: "cert-untrusted",  # unable to get local issuer certificate (unknown CA)
    21: "cert-untrusted",  # unable to verify the first certificate
    23: "cert-revoked",
    24: "cert-invalid-ca",
    26: "cert-invalid-purpose",
    27: "cert-untrusted",
    28: "cert-rejected",
    62: "cert-hostname-mismatch",
    64: "cert-hostname-mismatch",  # IP address mismatch
}


def cert_error(verify_code: int, description: str, depth: int = 0) -> CertificateCheckFailed:
    """The coded error for an X509 verify result of our check of the peer's certificate."""
    return CertificateCheckFailed(
        f"certificate check failed at depth {depth}: {description} (verify code {verify_code})",
        code=_VERIFY_CODES.get(verify_code, CertificateCheckFailed.code),
        verify_code=verify_code, description=description, depth=depth,
    )
