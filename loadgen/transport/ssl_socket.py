"""SslSocket: QtSSLSocket's feature set on a gevent TCP socket and a :class:`~loadgen.protocol.openssl.tls.TlsEngine`.

Client or server mode (from the context); :meth:`SslSocket.connect_to_host` resolves,
connects and handshakes, or an already connected socket is wrapped and the handshake
started explicitly (:meth:`~SslSocket.start_client_handshake`, Qt's sslConnect;
:meth:`~SslSocket.start_server_handshake`, Qt's sslAccept). Reads are line or block
oriented over a read buffer; writes never block the caller (what the kernel does not
take at once is written by a helper greenlet), so :meth:`~SslSocket.close` can be a
delayed close that flushes pending data first, as Qt's is.

Qt's signals are :class:`Signal` attributes (``connected``, ``accepted``, ``ready_read``,
``connection_closed``, ``delayed_close_finished``, ``error_occurred``,
``cert_check_failed``, ``state_changed``). Blocking calls (``connect_to_host``,
``wait_for_ready_read``, ...) block only the calling greenlet and return ``False`` on
failure, leaving the reason in :attr:`~SslSocket.error` / :attr:`~SslSocket.error_string`.

This module is the API; the state machine under it (engine events, the write queue, the
delayed close, failing) is :class:`~loadgen.transport.ssl_link.TlsLink`, and resolving,
connecting and socket errors are :mod:`loadgen.transport.tcp`'s.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
from gevent import socket

from loadgen.protocol.credentials import PskChooser
from loadgen.protocol.errors import HandshakeTimeout, LoadgenError, LocalProtocolError
from loadgen.protocol.openssl.tls import TlsEngine
from loadgen.protocol.openssl.tls_certificates import CertificateInfo
from loadgen.protocol.openssl.tls_contexts import TlsContext
from loadgen.transport.ssl_link import Mode, State, TlsLink
from loadgen.transport.tcp import connect, resolve


class SslSocket(TlsLink):
    """A TLS socket in client or server mode (see the module docstring)."""

    def __init__(
        self,
        context: TlsContext,
        sock: socket.socket | None = None,
        *,
        server_name: str | None = None,
        session: Any = None,
        choose: PskChooser | None = None,
        close_timeout: float = 30.0,
        light: bool = False,
    ) -> None:
        """``sock``: an already connected gevent TCP socket to wrap (then call a
        ``start_*_handshake``). ``server_name``: SNI and the name to verify (client; default:
        the host given to :meth:`connect_to_host`). ``session``: a session to resume.
        ``choose``: the identity/key chooser of a client with a PSK context. ``light``: a
        TLS 1.2 AEAD connection's records go through loadgen's record layer after the handshake
        (:class:`~loadgen.protocol.openssl.tls.TlsEngine`: cheaper per record, but the local
        certificate, a client's peer certificate and the cipher list are then unknown).
        """
        super().__init__(context, sock, close_timeout)
        self._server_name = server_name
        self._session = session
        self._choose = choose
        self._light = light

    # -- connecting -----------------------------------------------------------

    def connect_to_host(self, host: str, port: int, *, timeout: float = 30.0,
                        source_address: str | None = None) -> bool:
        """Resolve ``host``, connect and handshake within ``timeout`` seconds (client mode)."""
        if self.mode is not Mode.CLIENT or self._sock is not None or self._state is not State.UNCONNECTED:
            raise LocalProtocolError("connect_to_host needs an unconnected client socket")
        deadline = time.monotonic() + timeout
        self._error = None
        self._set_state(State.HOST_LOOKUP)
        try:
            infos = resolve(host, port, timeout)
        except LoadgenError as exc:
            return self._failed(exc)
        self._set_state(State.CONNECTING)
        try:
            self._sock = connect(infos, host, port, deadline, source_address)
        except LoadgenError as exc:
            return self._failed(exc)
        return self._handshake(deadline, self._server_name or host)

    def start_client_handshake(self, timeout: float = 30.0) -> bool:
        """Handshake as a client over the wrapped, already connected socket (Qt: sslConnect)."""
        if self.mode is not Mode.CLIENT:
            raise LocalProtocolError("start_client_handshake needs a client context")
        return self._handshake(time.monotonic() + timeout, self._server_name)

    def start_server_handshake(self, timeout: float = 30.0) -> bool:
        """Wait for and answer the client's handshake on the wrapped socket (Qt: sslAccept)."""
        if self.mode is not Mode.SERVER:
            raise LocalProtocolError("start_server_handshake needs a server context")
        return self._handshake(time.monotonic() + timeout, None)

    def _handshake(self, deadline: float, name: str | None) -> bool:
        if self._sock is None or self._engine is not None:
            raise LocalProtocolError("a handshake needs a connected socket that has not handshaken yet")
        if self.mode is Mode.CLIENT:
            engine = TlsEngine.client(self.context, server_name=name, session=self._session, choose=self._choose,
                                      light=self._light)
        else:
            engine = TlsEngine.server(self.context, light=self._light)
        self._engine = engine
        self._set_state(State.HANDSHAKING)
        engine.start()
        self._pump_out()
        while self._state is State.HANDSHAKING:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (not self._receive(remaining) and self._state is State.HANDSHAKING):
                return self._failed(HandshakeTimeout("no TLS handshake in time"))
        # Done, unless it failed. The peer may have closed right after it (a client that
        # only handshakes): then the state is already UNCONNECTED, but it did complete.
        if not engine.handshake_done or self._error is not None:
            return False
        if self._read_buffer:
            self.ready_read.emit()
        return True

    # -- reading ------------------------------------------------------------

    def wait_for_ready_read(self, timeout: float | None = None) -> bool:
        """Block until new application data arrived (True), or timeout / close / error (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._state is State.CONNECTED:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            before = len(self._read_buffer)
            received = self._receive(remaining)
            if len(self._read_buffer) > before:  # even if the peer closed right after it
                self.ready_read.emit()
                return True
            if not received:
                return False
        return False

    def wait_for_input(self, timeout: float | None = None) -> bool:
        """Wait for one chunk of TLS input of any kind (e.g. TLS 1.3 session tickets) and
        process it; False on timeout or when the link ended."""
        if self._state is not State.CONNECTED:
            return False
        before = len(self._read_buffer)
        received = self._receive(timeout)
        if len(self._read_buffer) > before:
            self.ready_read.emit()
        return received

    @property
    def bytes_available(self) -> int:
        return len(self._read_buffer)

    def can_read_line(self) -> bool:
        return b"\n" in self._read_buffer

    def read_line(self) -> bytes:
        """One line including its ``\\n``, or ``b""`` when :meth:`can_read_line` is False."""
        end = self._read_buffer.find(b"\n")
        if end < 0:
            return b""
        line = bytes(self._read_buffer[: end + 1])
        del self._read_buffer[: end + 1]
        return line

    def read(self, maxlen: int) -> bytes:
        data = bytes(self._read_buffer[:maxlen])
        del self._read_buffer[:maxlen]
        return data

    def read_all(self) -> bytes:
        data = bytes(self._read_buffer)
        self._read_buffer.clear()
        return data

    # -- writing and closing ----------------------------------------------------

    def write(self, data: bytes) -> int:
        """Encrypt and queue ``data``; returns ``len(data)``. Raises when not connected."""
        if self._state is not State.CONNECTED or self._engine is None:
            raise LocalProtocolError(f"cannot write: the socket is {self._state.value}")
        self._engine.send(data)
        self._pump_out()
        return len(data)

    @property
    def bytes_to_write(self) -> int:
        """Encrypted bytes queued but not yet taken by the kernel."""
        return len(self._out)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued has gone to the kernel (Qt: waitForBytesWritten)."""
        writer = self._writer
        if writer is not None:
            writer.join(timeout)
        return not self._out

    def close(self) -> None:
        """Close with close_notify. With data still pending, the close is delayed: the state is
        CLOSING until it has been written, then ``delayed_close_finished`` fires. Unread data is dropped."""
        self._read_buffer.clear()
        if self._state is State.CLOSING or self._sock is None:
            return
        pending = bool(self._out)
        if self._engine is not None:
            self._engine.close()
        self._pump_out()
        if pending and self._sock is not None:
            self._set_state(State.CLOSING)
            gevent.spawn(self._delayed_close)
            return
        self._teardown()

    def abort(self) -> None:
        """Drop the connection at once: no close_notify, pending data discarded."""
        self._out.clear()
        self._teardown()

    # -- state and properties ------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def error(self) -> str | None:
        """Stable code of the most recent error (e.g. ``connection-refused``, ``cert-expired``)."""
        return self._error.code if self._error is not None else None

    @property
    def error_string(self) -> str:
        """A human description of the most recent error ("" when none)."""
        return str(self._error) if self._error is not None else ""

    @property
    def last_error(self) -> LoadgenError | None:
        return self._error

    @property
    def engine(self) -> TlsEngine | None:
        return self._engine

    @property
    def socket(self) -> socket.socket | None:
        return self._sock

    def peer_certificate(self) -> CertificateInfo | None:
        cert = self._engine.peer_certificate if self._engine is not None else None
        return CertificateInfo.from_x509(cert) if cert is not None else None

    def local_certificate(self) -> CertificateInfo | None:
        cert = self._engine.local_certificate if self._engine is not None else None
        return CertificateInfo.from_x509(cert) if cert is not None else None

    def ciphers(self) -> list[str]:
        """TLS 1.2 ciphers this socket may negotiate (Qt: ciphers())."""
        return self._engine.available_ciphers if self._engine is not None else []

    @property
    def cipher(self) -> str | None:
        return self._engine.cipher if self._engine is not None else None

    @property
    def protocol_version(self) -> str | None:
        return self._engine.version if self._engine is not None and self._engine.handshake_done else None

    @property
    def session_reused(self) -> bool:
        return self._engine is not None and self._engine.resumed

    @property
    def session(self) -> Any:
        """The TLS session to pass to a later socket's ``session=`` for resumption."""
        return self._engine.session if self._engine is not None else None
